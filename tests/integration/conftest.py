"""Fixtures: each test gets its own aesdsocket servers (server_harness.py),
stopped cleanly at teardown, and the fault-injection shim (faultshim.py)."""
import os
import re
import signal
import subprocess

import pytest

import faultshim as shim
from server_harness import (UNDER_VALGRIND, Server, pid_alive, scaled,
                            valgrind_log_dir, wait_until)


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


@pytest.fixture(scope="session")
def faultshim_library(tmp_path_factory):
    return shim.build(str(tmp_path_factory.mktemp("faultshim")))


@pytest.fixture
def faultshim(faultshim_library, tmp_path):
    """A FaultShim with files of this test's own.  Request it after
    make_server: its teardown clears the faults before the servers stop."""
    (tmp_path / "shim").mkdir()
    fs = shim.FaultShim(faultshim_library, str(tmp_path / "shim"))
    fs.clear()
    yield fs
    fs.clear()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "filter_kills: the test makes the system call filter "
                   "kill workers on purpose")


@pytest.fixture(autouse=True)
def no_filter_kills(request, tmp_path):
    """Fails a test in which the system call filter killed a worker (the
    parent logs each, even while stopping), unless the test does that on
    purpose: every workload of the suite must stay within the allow-list.
    Autouse, so it checks after make_server has stopped every server."""
    yield
    if request.node.get_closest_marker("filter_kills"):
        return
    kills = []
    for log in sorted(tmp_path.glob("server-*.log")):
        kills += re.findall(r"^.*killed by the system call filter.*$",
                            log.read_text(errors="replace"), re.M)
    assert not kills, "workers killed by the filter:\n" + "\n".join(kills)


SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "ERROR: UndefinedBehaviorSanitizer")


@pytest.fixture(autouse=True)
def no_memory_errors(tmp_path):
    """Fails the test if a server process (a worker, whose exit status
    nobody checks, included) reported a sanitizer or valgrind error.
    Autouse, so it checks after make_server has stopped every server."""
    vg_dir = valgrind_log_dir() if UNDER_VALGRIND else None
    before = set(os.listdir(vg_dir)) if vg_dir and os.path.isdir(vg_dir) else set()
    yield
    problems = []
    for log in sorted(tmp_path.glob("server-*.log")):
        text = log.read_text(errors="replace")
        problems += [f"{log}: {r}" for r in SANITIZER_REPORTS if r in text]
    if vg_dir and os.path.isdir(vg_dir):
        for name in sorted(set(os.listdir(vg_dir)) - before):
            path = os.path.join(vg_dir, name)
            with open(path, errors="replace") as f:
                text = f.read()
            found = re.search(r"ERROR SUMMARY: (\d+) errors", text)
            if found and int(found.group(1)) > 0:
                problems.append(f"{path}: {found.group(0)}")
    assert not problems, "memory errors reported:\n" + "\n".join(problems)
