"""Socket activation as aesdsocket.socket / aesdsocket.service set it up,
driven by Debian's systemd-socket-activate (no running systemd needed): it
listens, and on the first connection execs the service's ExecStart with the
listening socket as fd 3 (LISTEN_FDS=1, LISTEN_PID=its own pid)."""

import os
import pathlib
import select
import shlex
import shutil
import signal
import socket
import subprocess

import pytest

from lifecycle_helpers import exchange, free_port, port_accepts, wait_until

SERVER = pathlib.Path(__file__).resolve().parent.parent.parent / "server"
ACTIVATE = shutil.which("systemd-socket-activate")
EXIT_TIMEOUT = 15.0


def exec_start():
    """The service's ExecStart as an argv."""
    lines = (SERVER / "aesdsocket.service").read_text().splitlines()
    [line] = [ln for ln in lines if ln.startswith("ExecStart=")]
    return shlex.split(line[len("ExecStart="):])


def read_line(stream, timeout):
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no output in {timeout:.0f} s"
    return stream.readline()


@pytest.fixture
def activated(static_server, tmp_path):
    """systemd-socket-activate listening on a free port, ready to exec the
    service's command line; yields (process, port, other_port, data_file)."""
    if ACTIVATE is None:
        pytest.skip("systemd-socket-activate (Debian package systemd) missing")
    argv = exec_start()
    assert argv[0] == "/usr/bin/aesdsocket"
    assert argv[1:] == ["$AESDSOCKET_ARGS"]
    port, other_port = free_port(), free_port()
    data = tmp_path / "aesdsocketdata"
    # --port names a port of its own: an inherited socket must win over it.
    args = ["-s", "-f", str(data), "-p", str(other_port)]
    proc = subprocess.Popen(
        [ACTIVATE, "-l", f"127.0.0.1:{port}",
         str(static_server / "aesdsocket"), *args],
        stderr=subprocess.PIPE, text=True)
    try:
        line = read_line(proc.stderr, 10)
        assert line.startswith(f"Listening on 127.0.0.1:{port} as 3"), line
        yield proc, port, other_port, data
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()


def exe(pid):
    return os.readlink(f"/proc/{pid}/exe")


def test_first_connection_starts_and_is_served(activated, static_server):
    proc, port, other_port, data = activated
    # Nothing is started before a client comes.
    assert exe(proc.pid) == ACTIVATE
    assert not data.exists()
    assert exchange(port, b"first\n") == b"first\n"
    # Same pid (LISTEN_PID), now running the server.
    assert exe(proc.pid) == str(static_server / "aesdsocket")
    assert exchange(port, b"second\n") == b"first\nsecond\n"
    assert data.read_bytes() == b"first\nsecond\n"
    assert not port_accepts(other_port), "bound --port despite LISTEN_FDS"


def test_sigterm_exits_0_and_removes_the_data_file(activated):
    proc, port, _, data = activated
    assert exchange(port, b"packet\n") == b"packet\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
        idle.sendall(b"half a pack")
        # As systemd does with KillMode=mixed: TERM to the main process.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=EXIT_TIMEOUT) == 0
    assert not data.exists()
    log = proc.stderr.read()
    assert "Caught signal, exiting" in log, log


def test_listen_fds_for_another_pid_is_ignored(static_server, tmp_path):
    """LISTEN_FDS is only for the process LISTEN_PID names: anyone else
    (a child that inherited the environment) binds its own socket."""
    port = free_port()
    data = tmp_path / "aesdsocketdata"
    env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID="1")
    proc = subprocess.Popen(
        [str(static_server / "aesdsocket"), "-s", "-f", str(data),
         "-p", str(port)],
        env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: port_accepts(port) or proc.poll() is not None, 10,
                   "the server to listen")
        assert proc.poll() is None, proc.stderr.read()
        assert exchange(port, b"own socket\n") == b"own socket\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=EXIT_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()
    assert not data.exists()
