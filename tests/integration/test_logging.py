"""What the server logs where (issue 14, "small things"): a client's
reset is its own business, not an error in the server's log, and without
-s no worker copies warnings to stderr once serving.

syslog is read for real: the server runs in a private mount namespace
whose /dev is a small tmpfs (the real /dev/null, /dev/zero, /dev/urandom
... bound in) with /dev/log bound to a datagram socket of the test's own,
so every line arrives with its priority.  Needs root (mounts) and
unshare(1).
"""
import os
import re
import shutil
import socket
import threading

import pytest

from server_harness import (IS_ROOT, connect_on, recv_exactly, rst_close,
                            scaled, wait_server_read_everything, wait_until,
                            wait_workers)

LOG_ERR, LOG_WARNING, LOG_INFO = 3, 4, 6

PRIVATE_DEV = r'''
set -e
sock=$1 old=$2
shift 2
mount --rbind /dev "$old"
mount -t tmpfs -o mode=0755,size=1m aesd-dev /dev
for node in null zero full random urandom; do
	: > "/dev/$node"
	mount --bind "$old/$node" "/dev/$node"
done
ln -s /proc/self/fd /dev/fd
for n in 0 1 2; do ln -s "/proc/self/fd/$n" "/dev/$(echo stdin stdout stderr | cut -d' ' -f$((n + 1)))"; done
mkdir /dev/shm /dev/pts
: > /dev/log
mount --bind "$sock" /dev/log
umount -l "$old"
exec "$@"
'''


class Syslog:
    """A datagram socket standing in for /dev/log, read by a thread (a
    full socket would block the server's syslog() calls)."""

    def __init__(self, directory):
        self.path = str(directory / "log")
        self.old_dev = directory / "old-dev"
        self.old_dev.mkdir()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.sock.settimeout(0.1)
        self.lines = []         # (severity, message)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            found = re.match(rb"<(\d+)>(.*)", data, re.S)
            if found:
                self.lines.append((int(found.group(1)) & 7,
                                   found.group(2).decode(errors="replace")))

    def prefix(self):
        return ["unshare", "--mount", "--propagation", "private",
                "sh", "-c", PRIVATE_DEV, "sh", self.path, str(self.old_dev)]

    def wait(self, pattern, count=1, timeout=5.0):
        wait_until(lambda: len(self.matching(pattern)) >= count,
                   scaled(timeout), what=f"syslog line {pattern!r} x{count}")

    def matching(self, pattern):
        return [(sev, text) for sev, text in list(self.lines)
                if re.search(pattern, text)]

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def syslog(tmp_path):
    if not IS_ROOT or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /dev/log")
    log = Syslog(tmp_path)
    yield log
    log.close()


def start_with_syslog(make_server, syslog, *args, log_stderr=True):
    server = make_server(*args, prefix=syslog.prefix(),
                         log_stderr=log_stderr, start=False)
    server.start(wait=False)
    syslog.wait(r"Serving on port", timeout=10)
    return server


def test_syslog_through_a_private_dev_log(make_server, syslog):
    """The harness itself: the server's lines reach the test's socket,
    with their priorities (LOG_INFO for a connection)."""
    server = start_with_syslog(make_server, syslog)
    with server.connect() as sock:
        sock.sendall(b"hello\n")
        assert recv_exactly(sock, 6) == b"hello\n"
    syslog.wait(r"Closed connection from 127\.0\.0\.1")
    assert syslog.matching(r"Accepted connection from")[0][0] == LOG_INFO


def test_client_reset_is_not_logged_as_an_error(make_server, syslog):
    """Clients that reset their connection, in the middle of a packet or
    while their response is sent: the server logs it below LOG_ERR (any
    client could fill the error log otherwise), and logs nothing at
    LOG_ERR or worse.

    Fails on the issue-9 server: "Cannot receive from ...: Connection
    reset by peer" at LOG_ERR."""
    server = start_with_syslog(make_server, syslog, "-w", "2",
                               "--send-timeout", "0")
    # a file big enough that a response is still being sent when the
    # client resets
    with server.connect() as sock:
        for i in range(4):
            sock.sendall(b"%d" % i * 999999 + b"\n")
            recv_exactly(sock, 1000000 * (i + 1), timeout=30)
    for i in range(10):
        mid_packet = server.connect()
        mid_packet.sendall(b"part of a packet")
        wait_server_read_everything(server, mid_packet)
        rst_close(mid_packet)
        mid_response = socket.socket()
        mid_response.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        mid_response.connect(("127.0.0.1", server.port))
        mid_response.sendall(b"reset while answered\n")
        mid_response.recv(4096)     # the response has begun
        rst_close(mid_response)
    syslog.wait(r"Cannot (receive from|send the response to) 127\.0\.0\.1: "
                r"(recv|sendfile): "
                r"(Connection reset by peer|Broken pipe)", timeout=10)
    with server.connect() as sock:      # the last lines are logged
        pass
    syslog.wait(r"Closed connection from", count=22)
    resets = syslog.matching(r"reset by peer|Broken pipe")
    assert resets
    assert all(sev == LOG_INFO for sev, _ in resets), resets
    errors = [(sev, text) for sev, text in syslog.lines if sev <= LOG_ERR]
    assert not errors, errors


def test_no_warnings_on_stderr_without_log_stderr(make_server, syslog):
    """Without -s, log lines go to syslog only once the server serves:
    warnings from the first workers (an over-long packet, an idle
    timeout) on each worker and from a worker forked later reach syslog
    and not stderr.

    Fails on the issue-9 server: its first workers inherit the start-up
    flag that copies warnings to stderr (before the per-worker part,
    which needs the v3 model)."""
    server = start_with_syslog(make_server, syslog, "-w", "2",
                               "--max-packet", "1024", "--idle-timeout", "1",
                               log_stderr=False)
    too_long = b"x" * 2000 + b"\n"

    def provoke(sockets, count):
        for sock in sockets:
            sock.sendall(too_long)
        syslog.wait(r"packet longer than 1024 bytes", count=count)
        syslog.wait(r"no complete packet for 1 s", count=count)

    # wherever the kernel puts them: several of each
    idle = [server.connect() for _ in range(4)]
    provoke([server.connect() for _ in range(4)], 4)
    for sock in idle:
        sock.close()
    assert stderr_lines(server) == []

    # on each first worker, and on one forked after start-up
    workers = wait_workers(server, 2)
    idle = [connect_on(server, w) for w in workers]
    provoke([connect_on(server, w) for w in workers], 6)
    os.kill(workers[0], 9)
    (later,) = set(wait_workers(server, 2, exclude=workers[:1])) - \
        set(workers)
    idle += [connect_on(server, later)]
    provoke([connect_on(server, later)], 7)
    for sock in idle:
        sock.close()
    warnings = [t for sev, t in syslog.lines if sev == LOG_WARNING]
    assert len(warnings) >= 14
    assert stderr_lines(server) == []


def stderr_lines(server):
    return [line for line in server.log().splitlines()
            if "aesdsocket[" in line]
