"""/etc/init.d/S99aesdsocket, run for real in a target-like chroot with
BusyBox's ash and start-stop-daemon (the target's) and with Debian's dash
and start-stop-daemon.

Every test runs once per flavour (the `target` fixture)."""

import os
import signal
import socket
import subprocess

import pytest

from lifecycle_helpers import (alive, children, exchange, port_accepts, uids,
                               wait_until)

STOP_TIMEOUT = 15.0


def start(t):
    r = t.initscript("start")
    assert r.returncode == 0, r.stdout
    assert r.stdout == "Starting aesdsocket: OK\n"
    return t.pid()


def stop(t):
    r = t.initscript("stop")
    assert r.returncode == 0, r.stdout
    assert r.stdout == "Stopping aesdsocket: OK\n"


def assert_stopped(t, pid):
    # Checked right after the script returns, not eventually: stop promises
    # the process is gone (a zombie has closed its sockets and counts).
    assert not alive(pid), f"pid {pid} still running after stop"
    assert not t.pidfile.exists()
    assert not t.datafile.exists()
    assert not port_accepts(t.port)
    r = t.initscript("status")
    assert r.returncode == 3, r.stdout
    assert r.stdout == "aesdsocket is not running\n"


def test_uses_the_intended_shell_and_start_stop_daemon(target):
    # As the script runs it: BusyBox ash prefers its own applets to $PATH.
    ssd = target.chroot(target.shell, "-c", "start-stop-daemon --version")
    shell = target.chroot(target.shell, "-c", "readlink /proc/$$/exe")
    if target.flavour == "debian":
        assert ssd.returncode == 0 and "for Debian" in ssd.stdout, ssd.stdout
        assert shell.stdout == "/bin/dash\n"
    else:
        assert "BusyBox" in ssd.stdout, ssd.stdout
        assert shell.stdout == "/bin/busybox\n"


def test_start_serves_the_port_and_writes_the_pidfile(target):
    pid = start(target)
    # The daemon returns only once it listens: no wait needed here.
    assert exchange(target.port, b"first\n") == b"first\n"
    assert target.is_ours(pid)
    assert target.servers() == [pid]
    assert target.datafile.read_bytes() == b"first\n"
    r = target.initscript("status")
    assert r.returncode == 0, r.stdout
    assert r.stdout == f"aesdsocket is running (pid {pid})\n"


def test_stop_ends_the_process_and_removes_files(target):
    pid = start(target)
    assert exchange(target.port, b"data\n") == b"data\n"
    stop(target)
    assert_stopped(target, pid)


def test_stop_with_an_idle_client_connected(target):
    pid = start(target)
    with socket.create_connection(("127.0.0.1", target.port),
                                  timeout=10) as client:
        # Served once, so a worker owns the connection; then left idle in
        # the middle of a packet.
        client.sendall(b"served\n")
        assert client.recv(100) == b"served\n"
        client.sendall(b"incomplete")
        stop(target)
        assert_stopped(target, pid)
        assert client.recv(100) == b"", "connection left open after stop"


def test_stop_when_not_running_fails_and_changes_nothing(target):
    r = target.initscript("stop")
    assert r.returncode != 0
    assert r.stdout.endswith("FAIL\n"), r.stdout
    assert not target.pidfile.exists()


def test_restart_repeatedly_never_races_the_port(target):
    pids = [start(target)]
    assert exchange(target.port, b"before\n") == b"before\n"
    for i in range(8):
        r = target.initscript("restart")
        assert r.returncode == 0, r.stdout
        assert r.stdout == ("Stopping aesdsocket: OK\n"
                            "Starting aesdsocket: OK\n"), r.stdout
        pid = target.pid()
        assert pid not in pids
        assert not alive(pids[-1])
        pids.append(pid)
        assert target.servers() == [pid]
        # Each instance starts from an empty data file.
        packet = b"run %d\n" % i
        assert exchange(target.port, packet) == packet
    stop(target)
    assert_stopped(target, pids[-1])


def test_reload_restarts(target):
    old = start(target)
    r = target.initscript("reload")
    assert r.returncode == 0, r.stdout
    new = target.pid()
    assert new != old and not alive(old)
    assert exchange(target.port, b"reloaded\n") == b"reloaded\n"
    stop(target)


def test_start_when_running_keeps_the_first_instance(target):
    pid = start(target)
    assert exchange(target.port, b"keep me\n") == b"keep me\n"
    r = target.initscript("start")
    assert r.returncode != 0, r.stdout
    assert r.stdout.endswith("FAIL\n"), r.stdout
    assert target.pid() == pid
    assert target.servers() == [pid]
    # The running instance's data is untouched and it still serves.
    assert exchange(target.port, b"more\n") == b"keep me\nmore\n"
    stop(target)
    assert_stopped(target, pid)


def dead_pid(reaper):
    """A pid that belonged to a process that has exited."""
    r = reaper.run(["/bin/sh", "-c", "echo $$"], {})
    pid = int(r.stdout)
    assert not alive(pid)
    return pid


def test_stale_pidfile_of_a_dead_process_does_not_block_start(target):
    target.pidfile.write_text(f"{dead_pid(target.reaper)}\n")
    r = target.initscript("status")
    assert r.returncode == 3, r.stdout
    pid = start(target)
    assert target.is_ours(pid)
    assert exchange(target.port, b"fresh\n") == b"fresh\n"
    stop(target)
    assert_stopped(target, pid)


def test_pidfile_naming_another_program_is_neither_ours_nor_killed(target):
    other = subprocess.Popen(["sleep", "120"])
    try:
        target.pidfile.write_text(f"{other.pid}\n")
        assert target.initscript("status").returncode == 3
        r = target.initscript("stop")
        assert r.returncode != 0, r.stdout
        pid = start(target)
        assert pid != other.pid
        stop(target)
        assert_stopped(target, pid)
        assert other.poll() is None, "stop signalled a process not its own"
    finally:
        other.kill()
        other.wait(timeout=10)


def test_instance_killed_with_sigkill_does_not_block_start(target):
    pid = start(target)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), 10, "the killed server to go")
    # Its workers follow it; until then they still hold the port.
    wait_until(lambda: not port_accepts(target.port), 10,
               "the killed server's workers to go")
    assert target.pidfile.read_text().strip() == str(pid)
    assert target.initscript("status").returncode == 3
    new = start(target)
    assert new != pid
    assert exchange(target.port, b"again\n") == b"again\n"
    stop(target)
    assert_stopped(target, new)


def test_user_option_serves_clients_unprivileged(target):
    target.set_args(f"-p {target.port} --user aesd")
    pid = start(target)
    assert exchange(target.port, b"unprivileged\n") == b"unprivileged\n"
    assert children(pid)
    # A worker forked a moment ago (a replacement) is still root until it
    # has dropped privileges, before it reports ready: give it that time.
    wait_until(lambda: all(uids(w) == [1000] * 4 for w in children(pid)), 10,
               "every worker to run as aesd")
    stop(target)
    assert_stopped(target, pid)


def test_unknown_action_prints_usage(target):
    r = target.initscript("frobnicate")
    assert r.returncode == 1
    assert r.stdout.startswith("Usage: ")
    assert "{start|stop|restart|reload|status}" in r.stdout


def test_bad_arguments_make_start_fail(target):
    target.set_args(f"-p {target.port} --max-connections 0")
    r = target.initscript("start")
    assert r.returncode != 0, r.stdout
    assert r.stdout.startswith("Starting aesdsocket: ")
    assert r.stdout.endswith("FAIL\n")
    assert not target.pidfile.exists()
    assert target.servers() == []


def test_stop_gives_up_on_a_process_that_ignores_term(target):
    """The wait in stop is bounded (100 tries 0.1 s apart): a server that
    does not exit is reported as a failure instead of hanging the shutdown."""
    if target.flavour != "busybox":
        pytest.skip("shell logic, no start-stop-daemon involved: checked once")
    pid = start(target)
    # Stopped, the process cannot act on SIGTERM until it is continued.
    os.kill(pid, signal.SIGSTOP)
    try:
        r = target.initscript("stop")
        assert r.returncode != 0, r.stdout
        assert r.stdout == "Stopping aesdsocket: FAIL\n", r.stdout
        assert alive(pid)
        assert target.pidfile.exists()
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: not alive(pid), STOP_TIMEOUT, "the TERM to take effect")
