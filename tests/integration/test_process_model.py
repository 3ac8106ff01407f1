"""The process model of issue 9, black-box against the real binary.

The parent owns every connection and holds those with no work in flight
(nothing received yet, or idle at a packet boundary) without a worker; a
worker is taken only while a connection has work in flight, and handed
back afterwards.  So idle clients cost no process, "Accepted"/"Closed" are
logged once per connection whichever workers served it, the number of
workers follows the demand, a slow reader cannot keep its worker, and a
worker that cannot start does not stop the service.
"""
import os
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import faultshim as shim
from server_harness import (BINARY, IS_ROOT, WRAPPER, assert_served,
                            expect_start_failure, free_port, grow_file,
                            live_children, open_after_one_exchange,
                            pid_alive, port_accepts, read_bytes, recv_exactly,
                            recv_until_suffix, scaled, shared_tmp_dir,
                            wait_server_read_everything, wait_until)

MAX_SPARE = 8           # idle workers above this retire after 1 s idle
DEFAULT_MAX_WORKERS = 32
ESTABLISHED = 0x01

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


def raise_nofile(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def settle(predicate, timeout, interval=0.05):
    """Waits until predicate() holds, for at most timeout; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def log_count(server, pattern):
    return server.log().count(pattern)


class WorkerSampler:
    """Counts the server's live workers every few ms, in a thread."""

    def __init__(self, server):
        self.pid = server.proc.pid
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self):
        while not self._stop.is_set():
            self.most = max(self.most, len(live_children(self.pid)))
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def exchange_and_stay(server, n, packet_of):
    """n clients at once: each sends one packet, reads its response and
    keeps the connection open.  Returns the sockets."""
    socks = [None] * n
    errors = []
    start = threading.Barrier(n)

    def client(i):
        try:
            start.wait(timeout=scaled(10))
            sock = server.connect(timeout=30)
            packet = packet_of(i)
            sock.sendall(packet)
            recv_until_suffix(sock, packet, timeout=30)
            socks[i] = sock
        except Exception as e:      # reported by the caller
            errors.append(f"client {i}: {e!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(60))
    assert not errors, errors
    return socks


def close_all(socks):
    for sock in socks:
        if sock is not None:
            sock.close()


# ---------------------------------------------------------- availability

def test_idle_clients_do_not_keep_a_new_client_waiting(make_server):
    """Default options: 300 idle clients (200 that never send, 100 idle
    after one exchange) hold no worker, so a new client is answered at
    once, and each of the 300 is still served afterwards."""
    raise_nofile(2048)
    server = make_server()
    after_one, silent = [], []
    try:
        after_one, expected = open_after_one_exchange(server, 100,
                                                      b"first exchange")
        for _ in range(200):
            silent.append(server.connect())
        # give them time to be accepted; with a worker per connection
        # not all ever are
        settle(lambda: log_count(server, "Accepted connection from") >= 301,
               scaled(5))

        with server.connect() as new:
            new.sendall(b"newcomer\n")
            expected += b"newcomer\n"
            try:
                answer = recv_until_suffix(new, b"newcomer\n", timeout=3)
            except socket.timeout:
                pytest.fail("a new client waited more than 3 s for its answer "
                            "while 300 idle clients were connected")
            assert answer == expected

        for i, sock in enumerate(after_one + silent):
            packet = b"afterwards %03d\n" % i
            expected += packet
            sock.sendall(packet)
            assert recv_until_suffix(sock, packet, timeout=10) == expected
        assert read_bytes(server.data_file) == expected
    finally:
        close_all(after_one + silent)


# ------------------------------------------ logged once per connection

def test_turns_on_one_connection_are_logged_once(make_server):
    """One worker, two connections taking turns with idle pauses: each
    turn may be served after the connection was handed back, yet each
    connection is "Accepted" and "Closed" exactly once."""
    server = make_server("--max-workers", "1")
    accepted = log_count(server, "Accepted connection from")
    closed = log_count(server, "Closed connection from")
    a, b = server.connect(), server.connect()
    expected = b""
    with WorkerSampler(server) as workers:
        for turn in range(3):
            for name, sock in ((b"a", a), (b"b", b)):
                packet = b"%s turn %d\n" % (name, turn)
                expected += packet
                sock.sendall(packet)
                # with one worker, b is served while a is still open only
                # if a's connection was handed back to the parent
                assert recv_exactly(sock, len(expected)) == expected
            time.sleep(0.3)     # idle: both are held by the parent now
        a.close()
        b.close()
        server.wait_log("Closed connection from", count=closed + 2)
    assert workers.most <= 1
    time.sleep(0.5)             # a duplicate line would have come by now
    assert log_count(server, "Accepted connection from") == accepted + 2
    assert log_count(server, "Closed connection from") == closed + 2


def test_silent_connections_are_logged_once(make_server):
    """Connections that never send hold no worker (one is enough for a
    client meanwhile), and are logged once each when they close."""
    server = make_server("--max-workers", "1")
    accepted = log_count(server, "Accepted connection from")
    closed = log_count(server, "Closed connection from")
    silent = [server.connect() for _ in range(5)]
    try:
        # all five held by the parent before the client comes
        server.wait_log(r"Accepted connection from", count=accepted + 5)
        with server.connect() as busy:
            busy.sendall(b"served meanwhile\n")
            assert recv_until_suffix(busy, b"served meanwhile\n",
                                     timeout=3) == b"served meanwhile\n"
    finally:
        close_all(silent)
    server.wait_log("Closed connection from", count=closed + 6)
    time.sleep(0.5)
    assert log_count(server, "Accepted connection from") == accepted + 6
    assert log_count(server, "Closed connection from") == closed + 6


def test_idle_timeout_closes_held_connections_once(make_server):
    """-i 1: connections held by the parent (never sent, or idle after
    one exchange) are closed by the idle timeout, each logged once."""
    server = make_server("--idle-timeout", "1", "--max-workers", "1")
    accepted = log_count(server, "Accepted connection from")
    closed = log_count(server, "Closed connection from")
    socks = [server.connect() for _ in range(3)]
    # the one worker is free for a client meanwhile: it is answered
    # before any held connection's idle second is over
    expected = b"meanwhile\n"
    with server.connect() as meanwhile:
        meanwhile.sendall(expected)
        assert recv_exactly(meanwhile, len(expected)) == expected
    assert "Disconnecting" not in server.log(), \
        "the client was served only after a held connection timed out"
    idle, expected = open_after_one_exchange(server, 2, b"one exchange",
                                             expected)
    socks += idle
    try:
        # each has 1 s to complete a packet, then is disconnected
        for sock in socks:
            sock.settimeout(scaled(6))
            try:
                assert sock.recv(100) == b"", "no data was due"
            except ConnectionResetError:
                pass
    finally:
        close_all(socks)
    server.wait_log(r"Closed connection from", count=closed + 6)
    time.sleep(0.5)
    log = server.log()
    assert log.count("Disconnecting 127.0.0.1: no complete packet for 1 s") == 5
    assert log.count("Accepted connection from") == accepted + 6
    assert log.count("Closed connection from") == closed + 6
    assert_served(server, expected)


# ------------------------------------------------ workers follow demand

def test_workers_never_outnumber_demand(make_server):
    """60 clients send a packet each and stay connected: never more than
    60 + 2 workers (and never above --max-workers, 32 by default); once
    they are idle, the workers above MAX_SPARE retire."""
    raise_nofile(1024)
    server = make_server()
    with WorkerSampler(server) as workers:
        socks = exchange_and_stay(server, 60, lambda i: b"demand %02d\n" % i)
        try:
            time.sleep(0.5)
            assert workers.most <= 60 + 2
            assert workers.most <= DEFAULT_MAX_WORKERS, \
                f"{workers.most} workers for at most 32 (--max-workers)"
            wait_until(lambda: len(live_children(server.proc.pid)) <= MAX_SPARE,
                       scaled(10), what="idle workers above 8 to retire")
        finally:
            close_all(socks)
    assert workers.most <= DEFAULT_MAX_WORKERS


def test_surplus_idle_workers_retire_even_unused(make_server):
    """-w 20: a burst forks workers of which some never serve anyone;
    busy clients then use all 20.  Once idle, every worker above
    MAX_SPARE retires, whether it served a client or not."""
    server = make_server("--max-workers", "20")
    pid = server.proc.pid
    with WorkerSampler(server) as workers:
        # a burst: more connections at once than idle workers
        close_all(exchange_and_stay(server, 20, lambda i: b"burst %02d\n" % i))
        wait_until(lambda: len(live_children(pid)) <= MAX_SPARE, scaled(10),
                   what="the burst's surplus workers to retire")
        # 20 connections with work in flight: 20 workers
        busy = []
        try:
            for i in range(20):
                sock = server.connect()
                sock.sendall(b"in flight %02d" % i)     # no newline yet
                busy.append(sock)
            for sock in busy:
                wait_server_read_everything(server, sock, timeout=10)
            assert len(live_children(pid)) == 20
            for sock in busy:
                sock.sendall(b"\n")
            for i, sock in enumerate(busy):
                recv_until_suffix(sock, b"in flight %02d\n" % i)
            # all idle, held by the parent: back to MAX_SPARE at most
            wait_until(lambda: len(live_children(pid)) <= MAX_SPARE,
                       scaled(10), what="idle workers above 8 to retire")
        finally:
            close_all(busy)
    assert workers.most <= 20


# ----------------------------------------------------------- slow reader

def test_slow_reader_cannot_keep_its_worker(make_server):
    """A response must progress at 64 KiB/s on average after the send
    timeout: a client that reads its multi-MiB response at about half
    that rate is disconnected (today only each wait for the socket is
    bounded, so such a reader keeps its worker for as long as it likes),
    and the one worker (-w 1) serves the next client."""
    send_timeout = 5
    server = make_server("--send-timeout", str(send_timeout),
                         "--max-workers", "1")
    expected = grow_file(server, 6)

    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # small buffers on the client's side and a small MSS, so that the
    # server's send buffer stays small too (on loopback it autotunes to
    # megabytes otherwise, and the bound would be that much longer)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    slow.connect(("127.0.0.1", server.port))
    stop_reading = threading.Event()
    received = [0]

    def read_slowly():
        # 4 KiB every 1/8 s: about 32 KiB/s at most, enough to wake the
        # server's every wait for the socket well within 5 s
        slow.settimeout(scaled(10))
        try:
            while not stop_reading.is_set():
                chunk = slow.recv(4096)
                if not chunk:
                    return
                received[0] += len(chunk)
                time.sleep(0.125)
        except OSError:
            return

    reader = threading.Thread(target=read_slowly)
    try:
        slow.sendall(b"slow reader\n")
        expected += b"slow reader\n"
        started = time.monotonic()
        reader.start()

        def server_closed_it():
            # the client sees EOF only once it has read what the server's
            # send buffer still holds; the server's end shows it at once
            return ESTABLISHED not in server_tcp_states(server, slow)
        wait_until(server_closed_it, scaled(30), interval=0.1,
                   what="the server to disconnect a client reading at "
                        "~32 KiB/s")
        took = time.monotonic() - started
        assert received[0] < len(expected), "the whole response was read"
        server.wait_log(r"Disconnecting 127\.0\.0\.1")
        # its worker is free again
        with server.connect() as nxt:
            nxt.sendall(b"next\n")
            expected += b"next\n"
            assert recv_until_suffix(nxt, b"next\n", timeout=10,
                                     limit=len(expected)) == expected
    finally:
        stop_reading.set()
        if reader.is_alive():
            reader.join(scaled(15))
        slow.close()
    print(f"slow reader disconnected after {took:.1f} s, "
          f"{received[0]} bytes read")


def server_tcp_states(server, client):
    """States of the server's ends of this client's connection."""
    client_port = client.getsockname()[1]
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if (int(fields[1].rsplit(":", 1)[1], 16) == server.port and
                        int(fields[2].rsplit(":", 1)[1], 16) == client_port):
                    states.append(int(fields[3], 16))
    return states


# --------------------------------------------------- crash-loop brake

# After a worker exit it did not ask for, the parent pauses forking 100 ms,
# doubling up to 5 s: 100+200+400+800+1600 ms leave room for at most six
# rounds of forks in 3 s, each of at most MIN_SPARE = 2 workers.
MOST_FORKS_IN_3_S = 12


@shim.needs_shim
def test_persistent_accept_error_does_not_fork_in_a_loop(make_server,
                                                         faultshim):
    server = make_server(env=faultshim.env())
    faultshim.set("accept4 EINVAL", "accept EINVAL")
    since = shim.now_ms()
    waiting = server.connect()
    try:
        waiting.sendall(b"waiting\n")       # the listener is readable now
        time.sleep(3)
        forks = faultshim.calls("fork", since_ms=since, failed=False)
        failed_accepts = (faultshim.calls("accept4", since_ms=since, failed=True)
                          + faultshim.calls("accept", since_ms=since, failed=True))
        assert failed_accepts, "the server never tried to accept"
        assert len(forks) <= MOST_FORKS_IN_3_S, f"{len(forks)} forks in 3 s"
        faultshim.clear()
        if server.proc.poll() is None:
            assert recv_until_suffix(waiting, b"waiting\n", timeout=15) == \
                b"waiting\n"
    finally:
        waiting.close()


@shim.needs_shim
def test_workers_dying_at_start_are_forked_at_a_throttled_rate(
        make_server, faultshim):
    server = make_server(env=faultshim.env())
    expected = assert_served(server, b"")
    faultshim.set("fork exit-child")    # every new worker exits at once
    since = shim.now_ms()
    for worker in live_children(server.proc.pid):
        os.kill(worker, signal.SIGKILL)
    time.sleep(3)
    forks = faultshim.calls("fork", pid=server.proc.pid, since_ms=since,
                            failed=False)
    assert server.proc.poll() is None, "the service stopped"
    assert forks, "the server gave up replacing its workers"
    assert len(forks) <= MOST_FORKS_IN_3_S, \
        f"{len(forks)} forks in 3 s, at " + \
        " ".join(f"{f.ms - since}" for f in forks) + " ms"
    assert os.path.exists(server.data_file)
    faultshim.clear()
    # forking resumes after the brake's pause (at most 5 s)
    packet = b"after the crash loop\n"
    with server.connect(timeout=30) as sock:
        sock.sendall(packet)
        assert recv_until_suffix(sock, packet, timeout=15) == expected + packet


# ------------------------------------------ faults after start-up

STRERROR = {"EAGAIN": "Resource temporarily unavailable",
            "ENFILE": "Too many open files in system",
            "EMFILE": "Too many open files",
            "EPERM": "Operation not permitted"}

# (call, errno, --user, whether the server may not call it at all): the
# spec's workers each need a socketpair() and a fork(); the failed
# epoll_create1() is today's worker's, which a new design need not call.
AFTER_START_UP_FAULTS = [
    pytest.param("fork", "EAGAIN", False, False, id="fork-EAGAIN"),
    pytest.param("socketpair", "ENFILE", False, False, id="socketpair-ENFILE"),
    pytest.param("epoll_create1", "EMFILE", False, True,
                 id="epoll_create1-EMFILE"),
    # a new worker that cannot drop root fails before it is ready
    pytest.param("setuid", "EPERM", True, False, id="user-setuid-EPERM",
                 marks=needs_root),
]


@shim.needs_shim
@pytest.mark.parametrize("call,err,user,optional", AFTER_START_UP_FAULTS)
def test_worker_that_cannot_start_after_start_up(make_server, faultshim,
                                                 call, err, user, optional):
    """Once the service is up, a worker that cannot be started does not
    stop it: it keeps accepting and holding clients, serves them with the
    workers it has, keeps the data, logs the failure with its cause, and
    starts workers again once the fault is gone."""
    shared = shared_tmp_dir() if user else None
    try:
        run_with_a_fault_after_start_up(make_server, faultshim, call, err,
                                        shared, optional)
    finally:
        if shared:
            shutil.rmtree(shared, ignore_errors=True)


def run_with_a_fault_after_start_up(make_server, faultshim, call, err, shared,
                                    optional):
    if shared:
        server = make_server("--user", "nobody", env=faultshim.env(),
                             data_file=os.path.join(shared, "aesdsocketdata"))
    else:
        server = make_server(env=faultshim.env())
    pid = server.proc.pid
    expected = assert_served(server, b"")
    time.sleep(0.3)                 # spares forked after the first client
    faultshim.set(f"{call} {err}")
    since = shim.now_ms()
    time.sleep(0.2)
    workers = len(live_children(pid))
    assert workers >= 1

    busy = []
    held = None
    try:
        # every worker busy: a packet in flight on each
        for i in range(workers):
            sock = server.connect()
            sock.sendall(b"busy %d" % i)
            busy.append(sock)
        for sock in busy:
            wait_server_read_everything(server, sock, timeout=10)
        # the server wants spare workers now, and cannot start them
        # (a call the server may never make gets a short wait: the spares
        # it wants are forked at once, sanitizers or not)
        if not settle(lambda: faultshim.calls(call, since_ms=since,
                                              failed=True),
                      3 if optional else scaled(10)):
            if optional:
                pytest.skip(f"this server never calls {call}() after "
                            f"start-up, so it cannot fail to start a worker")
            pytest.fail(f"the server never called {call}() for a new worker")
        server.wait_log(STRERROR[err], timeout=10)
        assert server.proc.poll() is None, "the service stopped"
        assert os.path.exists(server.data_file)

        # still accepting: a new client is accepted and held
        accepted = log_count(server, "Accepted connection from")
        held = server.connect()
        held.sendall(b"held\n")
        server.wait_log("Accepted connection from", count=accepted + 1)

        # still serving with the workers it has
        busy[0].sendall(b"\n")
        expected += b"busy 0\n"
        assert recv_exactly(busy[0], len(expected)) == expected
        expected += b"held\n"
        assert recv_until_suffix(held, b"held\n", timeout=10) == expected
        assert server.proc.poll() is None
        assert os.path.exists(server.data_file)

        # recovers: more workers once the fault is cleared
        faultshim.clear()
        wait_until(lambda: len(live_children(pid)) > workers, scaled(15),
                   what="a new worker once the fault is cleared")
        for i, sock in enumerate(busy[1:], start=1):
            sock.sendall(b"\n")
            packet = b"busy %d\n" % i
            expected += packet
            assert recv_until_suffix(sock, packet) == expected
        assert read_bytes(server.data_file) == expected
    finally:
        close_all(busy + [held])


# -------------------------------------------- faults before start-up

@needs_root
@shim.needs_shim
def test_worker_that_cannot_start_at_start_up_fails_it(make_server,
                                                       faultshim, tmp_path):
    """--user, and the first worker cannot drop root: start-up fails with
    exit status 1 and a message on stderr, in the foreground and with -d
    (which today returns 0: the worker was forked, not ready), and leaves
    no data file and no pidfile."""
    shared = shared_tmp_dir()
    try:
        faultshim.set("setuid EPERM", "setresuid EPERM", "setreuid EPERM")
        data_file = os.path.join(shared, "aesdsocketdata")
        pidfile = tmp_path / "fg.pid"
        server = make_server("--user", "nobody", "--pidfile", str(pidfile),
                             data_file=data_file, env=faultshim.env(),
                             start=False)
        status, log = expect_start_failure(server)
        assert status == 1, log
        assert "Operation not permitted" in log
        assert not os.path.exists(data_file)
        assert not pidfile.exists()

        port = free_port()
        pidfile = tmp_path / "daemon.pid"
        command = WRAPPER + [BINARY, "-d", "-p", str(port), "-f", data_file,
                             "-P", str(pidfile), "--user", "nobody"]
        daemon = subprocess.run(command, env=faultshim.env(),
                                capture_output=True, stdin=subprocess.DEVNULL,
                                timeout=scaled(20))
        try:
            assert daemon.returncode == 1, daemon.stderr
            assert daemon.stderr.strip(), "no message on stderr"
            wait_until(lambda: not os.path.exists(data_file) and
                       not pidfile.exists() and not port_accepts(port),
                       scaled(10), what="the failed daemon to clean up")
        finally:
            if pidfile.exists():
                stale = int(pidfile.read_text())
                if pid_alive(stale):
                    os.kill(stale, signal.SIGTERM)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
