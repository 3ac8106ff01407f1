"""Start-up, signals, daemon mode, pidfile and errors of the real binary."""
import os
import signal
import socket
import subprocess
import time

import pytest

from server_harness import (BINARY, FILTER_ARGS, WRAPPER, assert_served,
                            children_of, connect_on, exchange, free_port,
                            pid_alive, port_accepts, recv_until_suffix, scaled,
                            wait_until, wait_workers)


def run(args, timeout=10):
    return subprocess.run(WRAPPER + [BINARY] + FILTER_ARGS + args,
                          capture_output=True,
                          timeout=scaled(timeout), stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_cleanly_and_deletes_file(server, signo):
    with server.connect() as s:
        exchange(s, b"data\n", 5)
    workers = server.workers()
    assert workers, "the server serves from worker processes"
    assert server.stop(signo) == 0
    assert not os.path.exists(server.data_file)
    assert "Caught signal, exiting" in server.log()
    assert not any(pid_alive(w) for w in workers)


def test_signal_with_busy_clients_connected(make_server):
    server = make_server()
    clients = [server.connect() for _ in range(16)]
    for i, s in enumerate(clients):
        s.sendall(b"client %d\n" % i)
    for s in clients:
        s.recv(1)              # each has been served at least once
    clients[0].sendall(b"unfinished")   # in flight, never a packet
    workers = server.workers()
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < scaled(1)
    assert not os.path.exists(server.data_file)
    assert not any(pid_alive(w) for w in workers)
    for s in clients:
        s.close()


def test_stale_data_file_is_removed_after_bind(make_server, tmp_path):
    data = tmp_path / "aesdsocketdata"
    data.write_bytes(b"stale from a crash\n")
    server = make_server(data_file=data)
    with server.connect() as s:
        assert exchange(s, b"fresh\n", 6) == b"fresh\n"
    assert "Removed stale data file" in server.log()


def test_second_instance_fails_and_leaves_first_data_alone(server):
    with server.connect() as s:
        exchange(s, b"precious\n", 9)
    for extra in ([], ["-d"]):
        second = run(["-p", str(server.port), "-f", server.data_file] + extra)
        assert second.returncode != 0
        assert b"Address already in use" in second.stderr
    with open(server.data_file, "rb") as f:
        assert f.read() == b"precious\n"
    with server.connect() as s:
        assert exchange(s, b"more\n", 14) == b"precious\nmore\n"


def test_restart_rebinds_at_once_after_connections(make_server, tmp_path):
    port = free_port()
    first = make_server(port=port)
    with first.connect() as s:
        exchange(s, b"x\n", 2)     # leaves TIME_WAIT sockets behind
    assert first.stop() == 0
    second = make_server(port=port)
    assert port_accepts(port)
    assert second.proc.poll() is None


def test_daemon_returns_only_once_listening(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    pidfile = tmp_path / "aesdsocket.pid"
    result = run(["-d", "-p", str(port), "-f", str(data), "-P", str(pidfile)])
    assert result.returncode == 0, result.stderr
    try:
        # no retry: the port must accept right now
        assert port_accepts(port)
        pid = int(pidfile.read_text())
        assert pid_alive(pid)
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        assert int(fields[3]) == pid, "daemon leads its own session"
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid), scaled(5), what="daemon exit")
    assert not data.exists()
    assert not pidfile.exists()


def test_daemon_bind_failure_is_reported(server):
    result = run(["-d", "-p", str(server.port), "-f", "/nonexistent/x"])
    assert result.returncode == 1
    assert b"Cannot bind" in result.stderr


def test_foreground_pidfile_is_written_and_removed(make_server, tmp_path):
    pidfile = tmp_path / "fg.pid"
    server = make_server("-P", str(pidfile))
    assert int(pidfile.read_text()) == server.proc.pid
    assert server.stop() == 0
    assert not pidfile.exists()


@pytest.mark.parametrize("args,message", [
    (["-p", "0"], b"invalid --port"),
    (["-p", "70000"], b"invalid --port"),
    (["-p", "12ab"], b"invalid --port"),
    (["-p"], b"needs a value"),
    (["--no-such-option"], b"unknown option"),
    (["--max-connections", "0"], b"invalid --max-connections"),
    (["--workers", "0"], b"invalid --workers"),
    (["--max-workers", "0"], b"invalid --workers"),
    (["--buffer-budget", "100"], b"invalid --buffer-budget"),
    (["--workers", "257"], b"invalid --workers"),
])
def test_bad_options_are_usage_errors(args, message):
    result = run(args)
    assert result.returncode == 2
    assert message in result.stderr
    assert b"--help" in result.stderr


def test_help_and_version():
    help_ = run(["--help"])
    assert help_.returncode == 0
    for option in (b"--daemon", b"--port", b"--data-file", b"--pidfile",
                   b"--log-stderr", b"--max-connections", b"--workers",
                   b"--max-workers", b"--buffer-budget", b"--max-packet", b"--idle-timeout", b"--send-timeout",
                   b"--user", b"--bind"):
        assert option in help_.stdout
    version = run(["--version"])
    assert version.returncode == 0 and version.stdout.startswith(b"aesdsocket ")


def test_bind_address_limits_the_listener(make_server):
    server = make_server("-b", "127.0.0.1")
    with server.connect() as s:
        assert exchange(s, b"lo\n", 3) == b"lo\n"
    assert "Cannot bind" in run(["-b", "192.0.2.1", "-p", str(free_port()),
                                  "-f", "/tmp/unused"]).stderr.decode()


def test_exited_workers_are_reaped(make_server):
    """Workers that exit (two of three killed at once) are reaped: none
    stays a zombie child of the server, and both are replaced."""
    server = make_server("--workers", "3")
    pid = server.proc.pid
    workers = wait_workers(server, 3)
    killed = workers[:2]
    for worker in killed:
        os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not any(os.path.exists(f"/proc/{w}") for w in killed),
               scaled(5), what=f"killed workers {killed} to be reaped")
    wait_workers(server, 3, exclude=killed)
    zombies = [c for c in children_of(pid) if not pid_alive(c)]
    assert not zombies, f"zombie children {zombies}"
    assert_served(server, b"")


def test_socket_activation(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    log = open(tmp_path / "act.log", "wb")
    # systemd's protocol: fd 3 is the listener, LISTEN_PID names the process
    listener = socket.create_server(("127.0.0.1", port))
    code = ("import os,sys; os.dup2(int(sys.argv[1]), 3); "
            "os.environ['LISTEN_PID']=str(os.getpid()); os.environ['LISTEN_FDS']='1'; "
            "os.execvp(sys.argv[2], sys.argv[2:])")
    proc = subprocess.Popen(["/usr/bin/python3", "-c", code, str(listener.fileno())]
                            + WRAPPER + [BINARY, *FILTER_ARGS, "-s", "-p", "1",
                                         "-f", str(data)],
                            pass_fds=[listener.fileno()], stderr=log)
    listener.close()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
        with s:
            assert exchange(s, b"activated\n", 10) == b"activated\n"
        # the inherited socket's port, not the -p value it ignores
        wait_until(lambda: f"Serving on port {port} ".encode()
                   in (tmp_path / "act.log").read_bytes(),
                   scaled(5), what="the start-up log line")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=scaled(5)) == 0
        log.close()
    assert not data.exists()


def test_deleted_data_file_does_not_stop_the_service(make_server):
    """Someone deletes the data file: the workers keep appending to the
    file they hold, and so does a worker forked after the deletion (it
    reopens the file its parent holds, not the path)."""
    server = make_server("--workers", "2")
    workers = wait_workers(server, 2)
    with server.connect() as s:
        exchange(s, b"before\n", 7)
    os.unlink(server.data_file)
    os.kill(workers[0], signal.SIGKILL)
    workers = wait_workers(server, 2, exclude=workers[:1])
    expected = b"before\n"
    for worker in workers:
        with connect_on(server, worker) as s:
            packet = b"after on %d\n" % worker
            s.sendall(packet)
            expected += packet
            assert recv_until_suffix(s, packet) == expected
    assert server.proc.poll() is None
    assert not os.path.exists(server.data_file)
