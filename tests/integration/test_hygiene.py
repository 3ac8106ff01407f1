"""Process hygiene a daemon must have (issue 9, item 4): signals, closed
stdio, relative paths with -d, descriptors, and _exit() in children."""
import os
import resource
import signal
import socket
import subprocess
import time
import uuid

import pytest

import faultshim as shim
from server_harness import (BINARY, UNDER_VALGRIND, WRAPPER, assert_served,
                            fd_targets, free_port, live_children,
                            open_after_one_exchange, pid_alive,
                            port_accepts, read_bytes, recv_exactly, scaled,
                            socket_inode, tcp_socket_states, unix_socket_types,
                            wait_server_read_everything, wait_until)

LISTEN = 0x0A
CLOSE_STDIO = ["sh", "-c", 'exec "$@" <&- >&- 2>&-', "sh"]


def no_core_dumps():
    """preexec_fn: a signal that dumps core leaves no core file behind."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def start_daemon(args, cwd=None, prefix=()):
    """Runs aesdsocket -d; returns the CompletedProcess of the foreground
    part (which exits once the daemon is ready, or has failed)."""
    return subprocess.run(list(prefix) + WRAPPER + [BINARY, "-d"] + args,
                          capture_output=True, stdin=subprocess.DEVNULL,
                          timeout=scaled(20), cwd=cwd,
                          preexec_fn=no_core_dumps)


def stop_daemon(pid):
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid), scaled(10), what="the daemon to exit")


def exchange_on(port, packet, expected_len):
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)) as s:
        s.sendall(packet)
        return recv_exactly(s, expected_len)


# ---------------------------------------------------------------- signals

SIGNALS = [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM,
           signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGPWR,
           signal.SIGQUIT, signal.SIGXCPU, signal.SIGRTMIN + 4,
           pytest.param(signal.SIGRTMAX, marks=pytest.mark.skipif(
               UNDER_VALGRIND, reason="valgrind keeps SIGRTMAX for itself")),
           signal.SIGSEGV, signal.SIGBUS]


def signal_name(signo):
    if signo == signal.SIGRTMAX:
        return "SIGRTMAX"
    if signo > signal.SIGRTMIN:
        return f"SIGRTMIN+{signo - signal.SIGRTMIN}"
    return signal.Signals(signo).name


@pytest.mark.parametrize("signo", SIGNALS, ids=signal_name)
def test_signal_stops_cleanly_or_is_ignored(make_server, tmp_path, signo):
    """Every signal whose default action ends the process, sent by kill():
    either a clean stop (exit 0, "Caught signal, exiting", data file and
    pidfile removed) or ignored (the server keeps serving); never the data
    file or the pidfile left behind."""
    pidfile = tmp_path / "aesdsocket.pid"
    server = make_server("--pidfile", str(pidfile), preexec_fn=no_core_dumps)
    expected = assert_served(server, b"")
    server.proc.send_signal(signo)
    # A stop shows within moments as its first log line, even when the
    # exit itself is slow (sanitizers, valgrind); so an ignored signal
    # costs half a second, not a scaled timeout.
    stopping = False
    try:
        wait_until(lambda: "Caught signal" in server.log()
                   or server.proc.poll() is not None, 0.5)
        stopping = True
    except AssertionError:
        pass
    status = server.proc.wait(timeout=scaled(10)) if stopping else None
    if status is None:
        # ignored: still serving, and SIGTERM still stops it cleanly
        assert_served(server, expected)
        assert server.stop(signal.SIGTERM) == 0
    else:
        server.stderr_file.close()
        assert status == 0, \
            f"{signal_name(signo)} ended the server with status {status}"
    assert "Caught signal, exiting" in server.log()
    assert not os.path.exists(server.data_file)
    assert not pidfile.exists()


def test_daemon_ignores_sighup(tmp_path):
    """With -d there is no terminal whose hang-up SIGHUP would mean."""
    port = free_port()
    data = tmp_path / "data"
    pidfile = tmp_path / "aesdsocket.pid"
    started = start_daemon(["-p", str(port), "-f", str(data),
                            "-P", str(pidfile)])
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        assert exchange_on(port, b"before\n", 7) == b"before\n"
        os.kill(pid, signal.SIGHUP)
        time.sleep(scaled(0.5))
        assert pid_alive(pid), "SIGHUP stopped the daemon"
        assert exchange_on(port, b"after\n", 13) == b"before\nafter\n"
    finally:
        if pid_alive(pid):
            stop_daemon(pid)
    assert not data.exists()
    assert not pidfile.exists()


# ------------------------------------------------------------ closed stdio

def test_foreground_with_stdio_closed(make_server):
    """Started with fds 0, 1 and 2 closed: no log line lands in the data
    file or in a response (fd 2 is /dev/null, not the data file)."""
    server = make_server(prefix=CLOSE_STDIO, start=False)
    server.start(wait=False)
    wait_until(lambda: server.proc.poll() is not None or
               port_accepts(server.port), scaled(10), what="the port")
    assert server.proc.poll() is None, "the server exited"
    sent = b""
    for i in range(5):
        packet = b"packet %d\n" % i
        sent += packet
        with server.connect() as sock:
            sock.sendall(packet)
            assert recv_exactly(sock, len(sent)) == sent
            sock.settimeout(0.2)
            try:
                extra = sock.recv(4096)
            except socket.timeout:
                extra = b""
            assert extra == b"", f"more than the file in a response: {extra!r}"
    assert read_bytes(server.data_file) == sent
    if not UNDER_VALGRIND:      # valgrind's own log may take a free fd 2
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{server.proc.pid}/fd/{fd}") == \
                "/dev/null"


def test_daemon_with_stdio_closed_serves(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    pidfile = tmp_path / "aesdsocket.pid"
    started = start_daemon(["-p", str(port), "-f", str(data), "-P",
                            str(pidfile)], prefix=CLOSE_STDIO)
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        assert exchange_on(port, b"closed stdio\n", 13) == b"closed stdio\n"
        assert read_bytes(data) == b"closed stdio\n"
    finally:
        stop_daemon(pid)
    assert not data.exists()
    assert not pidfile.exists()


# ----------------------------------------------------- relative paths with -d

def test_daemon_resolves_relative_paths_before_chdir(tmp_path):
    """-d with relative -f and -P from a working directory: the pidfile
    lands there, and the data file there is deleted at exit (the daemon
    itself works in /)."""
    port = free_port()
    name = f"aesd-{uuid.uuid4().hex}"
    started = start_daemon(["-p", str(port), "-f", name + ".data",
                            "-P", name + ".pid"], cwd=tmp_path)
    wrong_pidfile = os.path.join("/", name + ".pid")
    pid = None
    try:
        assert started.returncode == 0, started.stderr
        for path in (tmp_path / (name + ".pid"), wrong_pidfile):
            if os.path.exists(path):
                with open(path) as f:
                    pid = int(f.read())
        assert (tmp_path / (name + ".pid")).exists(), \
            "the pidfile is not in the working directory -d was started from"
        assert exchange_on(port, b"relative\n", 9) == b"relative\n"
        assert read_bytes(tmp_path / (name + ".data")) == b"relative\n"
    finally:
        if pid and pid_alive(pid):
            stop_daemon(pid)
        if os.path.exists(wrong_pidfile):
            os.unlink(wrong_pidfile)
    assert not (tmp_path / (name + ".data")).exists()
    assert not (tmp_path / (name + ".pid")).exists()


# ------------------------------------------------------------- descriptors

def unexpected_worker_fds(worker, data_file):
    """What a worker holds beyond 0-2, unix sockets, the data file and one
    TCP connection (not listening): a list of descriptions."""
    found, tcp = [], 0
    unix, states = unix_socket_types(), tcp_socket_states()
    for fd, target in sorted(fd_targets(worker).items()):
        if fd <= 2 or target.startswith(data_file):
            continue
        inode = socket_inode(target)
        if inode is not None and (inode not in unix and inode not in states):
            unix, states = unix_socket_types(), tcp_socket_states()  # new
        if inode in unix:
            continue
        if inode in states:
            tcp += 1
            if states[inode] == LISTEN:
                found.append(f"fd {fd}: the listening socket")
            elif tcp > 1:
                found.append(f"fd {fd}: a second TCP connection")
            continue
        found.append(f"fd {fd} -> {target}")
    return found


def hold_connections(server):
    """Connections in every state: silent, idle after an exchange, and one
    with a packet in flight (so one worker holds a TCP socket)."""
    socks = [server.connect() for _ in range(3)]
    idle, expected = open_after_one_exchange(server, 3, b"idle after")
    socks += idle
    busy = server.connect()
    busy.sendall(b"in flight")
    wait_server_read_everything(server, busy)
    return socks + [busy]


@pytest.mark.skipif(UNDER_VALGRIND,
                    reason="valgrind holds descriptors of its own (its log "
                           "file) in every process")
def test_workers_hold_only_their_own_descriptors(make_server):
    server = make_server()
    socks = hold_connections(server)
    try:
        workers = live_children(server.proc.pid)
        assert workers
        problems = {w: unexpected_worker_fds(w, server.data_file)
                    for w in workers}
        assert not any(problems.values()), problems
    finally:
        for sock in socks:
            sock.close()


def test_inherited_descriptor_is_closed_everywhere(make_server, tmp_path):
    """A descriptor the caller leaves open (not a systemd LISTEN_FDS
    socket) is in neither the parent nor any worker."""
    marker = tmp_path / "inherited-marker"
    fd = os.open(marker, os.O_RDWR | os.O_CREAT)
    try:
        server = make_server(pass_fds=[fd])
    finally:
        os.close(fd)
    socks = hold_connections(server)
    try:
        for pid in [server.proc.pid] + live_children(server.proc.pid):
            holding = [f for f, target in fd_targets(pid).items()
                       if target == str(marker)]
            assert not holding, f"process {pid} still holds fd {holding}"
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.skipif(UNDER_VALGRIND,
                    reason="valgrind holds descriptors of its own (its log "
                           "file) in every process")
def test_daemon_workers_hold_no_readiness_pipe(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    pidfile = tmp_path / "aesdsocket.pid"
    started = start_daemon(["-p", str(port), "-f", str(data), "-P",
                            str(pidfile)])
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        assert exchange_on(port, b"daemon\n", 7) == b"daemon\n"
        workers = live_children(pid)
        assert workers
        pipes = {w: [t for t in fd_targets(w).values() if t.startswith("pipe:")]
                 for w in workers}
        assert not any(pipes.values()), pipes
        problems = {w: unexpected_worker_fds(w, str(data)) for w in workers}
        assert not any(problems.values()), problems
    finally:
        stop_daemon(pid)


# ------------------------------------------------- _exit() in forked children

@shim.needs_shim
def test_forked_children_end_with_exit(make_server, faultshim):
    """Workers end with _exit(): the atexit() handlers they inherited (here
    the shim's, registered before main) run in the main process only."""
    server = make_server(env=faultshim.env(record_atexit=True))
    pid = server.proc.pid
    socks = hold_connections(server)
    for sock in socks:
        sock.close()
    # a burst of workers, so that some retire on their own before the stop
    busy = []
    try:
        for i in range(12):
            sock = server.connect()
            sock.sendall(b"burst %d" % i)
            busy.append(sock)
        for sock in busy:
            wait_server_read_everything(server, sock, timeout=10)
    finally:
        for sock in busy:
            sock.close()
    deadline = time.monotonic() + scaled(5)
    while time.monotonic() < deadline and len(live_children(pid)) > 8:
        time.sleep(0.1)
    assert server.stop() == 0
    assert faultshim.exited_through_atexit() == [pid]
