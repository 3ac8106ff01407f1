"""Process hygiene a daemon must have (issues 9 and 14): signals, closed
stdio, relative paths with -d, exactly the descriptors each process
needs, and _exit() in children."""
import os
import resource
import signal
import socket
import subprocess
import uuid

import pytest

import faultshim as shim
from server_harness import (BINARY, FILTER_ARGS, UNDER_VALGRIND, WRAPPER,
                            assert_served, connect_on, fd_targets, free_port,
                            grow_file, live_children, pid_alive, port_accepts,
                            read_bytes, recv_exactly, recv_until_suffix,
                            scaled, socket_inode, tcp_socket_states,
                            unix_socket_types, wait_server_read_everything,
                            wait_serving, wait_until, wait_workers,
                            worker_count)

LISTEN = 0x0A
CLOSE_STDIO = ["sh", "-c", 'exec "$@" <&- >&- 2>&-', "sh"]


def no_core_dumps():
    """preexec_fn: a signal that dumps core leaves no core file behind."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def start_daemon(args, cwd=None, prefix=()):
    """Runs aesdsocket -d; returns the CompletedProcess of the foreground
    part (which exits once the daemon is ready, or has failed)."""
    return subprocess.run(list(prefix) + WRAPPER + [BINARY, "-d"] +
                          FILTER_ARGS + args,
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
    if UNDER_VALGRIND:
        # valgrind catches every signal itself: /proc cannot tell
        ignored = None
    else:
        ignored = disposition(server.proc.pid, signo)
        assert ignored in ("ignored", "caught"), \
            f"{signal_name(signo)} has its default action"
        ignored = ignored == "ignored"
    server.proc.send_signal(signo)
    if ignored is None:
        # A stop shows within moments as its first log line, even when
        # the exit itself is slow; so an ignored signal costs half a
        # second, not a scaled timeout.
        try:
            wait_until(lambda: "Caught signal" in server.log()
                       or server.proc.poll() is not None, 0.5)
            ignored = False
        except AssertionError:
            ignored = True
    if ignored:
        # still serving, and SIGTERM still stops it cleanly
        assert_served(server, expected)
        assert server.stop(signal.SIGTERM) == 0
    else:
        status = server.proc.wait(timeout=scaled(10))
        server.stderr_file.close()
        assert status == 0, \
            f"{signal_name(signo)} ended the server with status {status}"
    assert "Caught signal, exiting" in server.log()
    assert not os.path.exists(server.data_file)
    assert not pidfile.exists()


def disposition(pid, signo):
    """"ignored", "caught" or "default", from /proc/pid/status."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    bit = 1 << (signo - 1)
    if int(fields["SigIgn"], 16) & bit:
        return "ignored"
    if int(fields["SigCgt"], 16) & bit:
        return "caught"
    return "default"


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
        # ignored, not handled: the kernel discards it at once, so no
        # wait can miss a stop it would have started
        for process in [pid] + live_children(pid):
            assert disposition(process, signal.SIGHUP) == "ignored", process
        os.kill(pid, signal.SIGHUP)
        assert exchange_on(port, b"after\n", 13) == b"before\nafter\n"
        assert pid_alive(pid), "SIGHUP stopped the daemon"
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

UNIX_DGRAM = 2


def fd_kinds(pid, data_file):
    """{fd: kind} of a process: "stdio", "listener", "connection",
    "epoll", "pipe:INODE", "data file", "lock" (the appenders' memfd),
    "eventfd", "inotify", "syslog" (an AF_UNIX datagram socket), or the
    target of anything else."""
    kinds = {}
    targets = fd_targets(pid)
    unix, states = unix_socket_types(), tcp_socket_states()
    for fd, target in sorted(targets.items()):
        inode = socket_inode(target)
        if inode is not None and inode not in unix and inode not in states:
            unix, states = unix_socket_types(), tcp_socket_states()  # new
        if fd <= 2:
            kinds[fd] = "stdio"
        elif target == data_file:
            kinds[fd] = "data file"
        elif target == "anon_inode:[eventpoll]":
            kinds[fd] = "epoll"
        elif target.startswith("/memfd:aesdsocket-lock"):
            kinds[fd] = "lock"
        elif target == "anon_inode:[eventfd]":
            kinds[fd] = "eventfd"
        elif target == "anon_inode:inotify":
            kinds[fd] = "inotify"
        elif target.startswith("pipe:"):
            kinds[fd] = target
        elif inode in states:
            kinds[fd] = "listener" if states[inode] == LISTEN else "connection"
        elif unix.get(inode) == UNIX_DGRAM:
            kinds[fd] = "syslog"
        else:
            kinds[fd] = target
    return kinds


def tally(kinds):
    counts = {}
    for kind in kinds.values():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def opened_read_only(pid, fd):
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8) & os.O_ACCMODE == os.O_RDONLY
    return False


def check_descriptors(server_pid, workers, data_file, connections):
    """Every descriptor of the parent and of each worker, exactly: the
    parent holds stdio, the listening socket, both ends of the lifeline
    pipe, the data file, the appenders' lock, one eventfd per worker (to
    hand on to each), the watch on the data file's path and its syslog
    socket, and nothing per connection; a worker holds stdio, the
    listener, its epoll instance, the lifeline's read end, its own open
    data file and lock, every worker's eventfd, its syslog socket, and one
    socket per connection it serves (connections[worker]).  The syslog
    socket is there whether /dev/log exists or not: it is never
    connected, each line is addressed to /dev/log (log.h)."""
    parent = fd_kinds(server_pid, data_file)
    pipes = [k for k in parent.values() if k.startswith("pipe:")]
    assert len(pipes) == 2 and len(set(pipes)) == 1, parent
    lifeline = pipes[0]
    expected = {"stdio": 3, "listener": 1, lifeline: 2, "data file": 1,
                "lock": 1, "eventfd": len(workers), "inotify": 1,
                "syslog": 1}
    assert tally(parent) == expected, parent
    for worker in workers:
        kinds = fd_kinds(worker, data_file)
        expected = {"stdio": 3, "listener": 1, "epoll": 1, lifeline: 1,
                    "data file": 1, "lock": 1, "eventfd": len(workers),
                    "syslog": 1}
        if connections.get(worker):
            expected["connection"] = connections[worker]
        assert tally(kinds) == expected, (worker, kinds)
        (end,) = [fd for fd, kind in kinds.items() if kind == lifeline]
        assert opened_read_only(worker, end), "the lifeline's write end"


def hold_connections(server, workers):
    """On each worker: a silent connection, one idle after an exchange,
    one with a partial packet and one that has not read its response (a
    file of 5 MB: more than the socket buffers take, so the response is
    under way; start the server with -t 0).  Returns the sockets."""
    grow_file(server, 5)
    socks = []
    for i, worker in enumerate(workers):
        silent = connect_on(server, worker)
        idle = connect_on(server, worker)
        idle.sendall(b"idle %d\n" % i)
        recv_until_suffix(idle, b"idle %d\n" % i)
        partial = connect_on(server, worker)
        partial.sendall(b"in flight")
        unread = connect_on(server, worker)
        unread.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        unread.sendall(b"unread\n")
        socks += [silent, idle, partial, unread]
    for sock in socks:
        wait_server_read_everything(server, sock, timeout=20)
    return socks


@pytest.mark.skipif(UNDER_VALGRIND,
                    reason="valgrind holds descriptors of its own (its log "
                           "file) in every process")
def test_every_process_holds_only_its_own_descriptors(make_server):
    """No slack: each descriptor of the parent and of each worker is
    accounted for, with connections in every state, again once they are
    all closed, and in a worker forked after start-up."""
    server = make_server("--workers", "2", "--send-timeout", "0")
    workers = wait_workers(server, 2)
    check_descriptors(server.proc.pid, workers, server.data_file, {})
    socks = hold_connections(server, workers)
    try:
        check_descriptors(server.proc.pid, workers, server.data_file,
                          {w: 4 for w in workers})
    finally:
        for sock in socks:
            sock.close()
    idle = lambda: all(not any(k == "connection" for k in
                               fd_kinds(w, server.data_file).values())
                       for w in workers)
    wait_until(idle, scaled(10), what="the workers to close every connection")
    check_descriptors(server.proc.pid, workers, server.data_file, {})
    os.kill(workers[0], signal.SIGKILL)
    workers = wait_workers(server, 2, exclude=workers[:1])
    check_descriptors(server.proc.pid, workers, server.data_file, {})


def test_inherited_descriptor_is_closed_everywhere(make_server, tmp_path):
    """A descriptor the caller leaves open (not a systemd LISTEN_FDS
    socket) is in neither the parent nor any worker."""
    marker = tmp_path / "inherited-marker"
    fd = os.open(marker, os.O_RDWR | os.O_CREAT)
    try:
        server = make_server("--send-timeout", "0", pass_fds=[fd])
    finally:
        os.close(fd)
    workers = wait_workers(server, worker_count(server))
    socks = hold_connections(server, workers[:1])
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
def test_daemon_holds_no_readiness_pipe(tmp_path):
    """-d: once it has returned, the daemon and its workers hold no end of
    a readiness pipe (the first workers close theirs once ready, the
    daemon once it has told the foreground process); only the lifeline
    pipe is left, and a worker forked later never gets one either."""
    port = free_port()
    data = tmp_path / "data"
    pidfile = tmp_path / "aesdsocket.pid"
    started = start_daemon(["-w", "2", "-p", str(port), "-f", str(data),
                            "-P", str(pidfile)])
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        assert exchange_on(port, b"daemon\n", 7) == b"daemon\n"

        workers = wait_serving(pid, 2)
        check_descriptors(pid, workers, str(data), {})
        os.kill(workers[0], signal.SIGKILL)
        workers = wait_serving(pid, 2, exclude=workers[:1])
        check_descriptors(pid, workers, str(data), {})
    finally:
        stop_daemon(pid)


# ------------------------------------------------- _exit() in forked children

@shim.needs_shim
def test_forked_children_end_with_exit(make_server, faultshim):
    """Workers end with _exit(): the atexit() handlers they inherited (here
    the shim's, registered before main) run in the main process only, for
    the first workers and for one forked later alike."""
    server = make_server("--workers", "2", "--send-timeout", "0",
                         env=faultshim.env(record_atexit=True))
    pid = server.proc.pid
    workers = wait_workers(server, 2)
    socks = hold_connections(server, workers[1:])
    try:
        os.kill(workers[0], signal.SIGKILL)
        wait_workers(server, 2, exclude=workers[:1])
    finally:
        for sock in socks:
            sock.close()
    assert server.stop() == 0
    assert faultshim.exited_through_atexit() == [pid]
