"""Fixtures: each test gets its own aesdsocket servers (server_harness.py),
stopped cleanly at teardown."""
import signal
import subprocess

import pytest

from server_harness import Server, pid_alive, scaled, wait_until


@pytest.fixture
def make_server(tmp_path):
    """Factory: make_server(args...) -> started Server; all killed at teardown."""
    servers = []

    def make(*args, start=True, **kwargs):
        server = Server(tmp_path, args=args, **kwargs)
        servers.append(server)
        return server.start() if start else server

    yield make
    # Stop every server the way an operator would, so each run also checks
    # a clean exit (and, under valgrind, gets every process's leak report).
    unclean = []
    for server in servers:
        if server.proc is None or server.proc.poll() is not None:
            continue
        workers = server.workers()
        try:
            status = server.stop(signal.SIGTERM, timeout=10)
        except subprocess.TimeoutExpired:
            status = "hung"
        server.kill()
        if status != 0:
            unclean.append(f"port {server.port}: exit {status}\n{server.log()}")
        wait_until(lambda: not any(pid_alive(w) for w in workers), scaled(5),
                   what="workers to exit")
    assert not unclean, unclean


@pytest.fixture
def server(make_server):
    return make_server()
