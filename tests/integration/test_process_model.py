"""The process model of issue 14 ("v3"), black-box against the real binary.

A root parent binds, creates the data file and forks a fixed number of
workers (-w; default one per online CPU, at least 2), and from then on only
supervises: it restarts a worker that exits unasked after a pause that
doubles with each failure in a row, and stops them at exit.  Each worker is
an event loop that accepts from the shared listening socket and serves
many connections.  So the number of processes never follows the load,
idle and busy clients alike cost no process, "Accepted"/"Closed" are
logged once per connection, and a worker that cannot be started or
restarted does not stop the service.
"""
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import faultshim as shim
from server_harness import (BINARY, FILTER_ARGS, IS_ROOT, WRAPPER,
                            assert_served, connect_on, expect_start_failure,
                            free_port, grow_file, live_children, log_lines,
                            open_after_one_exchange, pid_alive, port_accepts,
                            proc_exists, raise_nofile, read_bytes,
                            recv_exactly, recv_until_suffix, scaled,
                            shared_tmp_dir, wait_server_read_everything,
                            wait_until, wait_workers)

ESTABLISHED = 0x01

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


def log_count(server, pattern):
    return server.log().count(pattern)


def close_all(socks):
    for sock in socks:
        if sock is not None:
            sock.close()


def settle_log(server):
    """Returns once every log line of connections closed so far is
    written: with one worker (-w 1) its lines come in order, so a fresh
    connection's "Closed" line comes after them all."""
    closed = log_count(server, "Closed connection from")
    with server.connect():
        pass
    server.wait_log("Closed connection from", count=closed + 1)


class ChildSampler:
    """Records every pid the server has as a child, every few ms, in a
    thread."""

    def __init__(self, server):
        self.pid = server.proc.pid
        self.seen = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self):
        while not self._stop.is_set():
            self.seen.update(live_children(self.pid))
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ------------------------------------------------- a fixed set of workers

def test_default_worker_count_is_one_per_cpu_at_least_two(make_server):
    server = make_server()
    expected = max(2, os.cpu_count())
    workers = wait_workers(server, expected)
    assert log_lines(server, rf"Serving on port {server.port} with "
                             rf"{expected} workers,"), server.log()
    assert_served(server, b"")
    assert serving_pids_unchanged(server, workers)


def serving_pids_unchanged(server, workers):
    return sorted(live_children(server.proc.pid)) == sorted(workers)


@pytest.mark.parametrize("option", ["-w", "--workers", "--max-workers"])
def test_the_workers_are_the_same_processes_whatever_the_load(make_server,
                                                              option):
    """-w 3 (--max-workers is the old name): exactly three workers, and
    the same three, while 40 clients are served at once, 200 stay idle
    and all of them close; never a fork, never a retirement.  (The issue-9
    server forks a worker per connection with work in flight: it fails.)"""
    raise_nofile(1024)
    server = make_server(option, "3")
    workers = wait_workers(server, 3)
    idle = []
    with ChildSampler(server) as sampler:
        idle, expected = open_after_one_exchange(server, 100, b"idle")
        idle += [server.connect() for _ in range(100)]
        busy = [server.connect() for _ in range(40)]
        try:
            for i, sock in enumerate(busy):
                sock.sendall(b"busy %02d" % i)     # in flight, no newline
            for sock in busy:
                wait_server_read_everything(server, sock)
            for i, sock in enumerate(busy):
                sock.sendall(b"\n")
                expected_tail = b"busy %02d\n" % i
                recv_until_suffix(sock, expected_tail)
        finally:
            close_all(busy + idle)
        accepted = log_count(server, "Accepted connection from")
        server.wait_log("Closed connection from", count=accepted, timeout=10)
    assert sampler.seen == set(workers), \
        f"children seen {sorted(sampler.seen)}, workers {workers}"
    assert serving_pids_unchanged(server, workers)


# ---------------------------------------------------------- availability

def test_idle_clients_do_not_keep_a_new_client_waiting(make_server):
    """Default options: 300 idle clients (200 that never send, 100 idle
    after one exchange) hold no process, so a new client is answered at
    once, and each of the 300 is still served afterwards."""
    raise_nofile(2048)
    server = make_server()
    after_one, silent = [], []
    try:
        after_one, expected = open_after_one_exchange(server, 100,
                                                      b"first exchange")
        accepted = log_count(server, "Accepted connection from")
        for _ in range(200):
            silent.append(server.connect())
        server.wait_log("Accepted connection from", count=accepted + 200)

        with server.connect() as new:
            new.sendall(b"newcomer\n")
            expected += b"newcomer\n"
            try:
                answer = recv_until_suffix(new, b"newcomer\n", timeout=1)
            except socket.timeout:
                pytest.fail("a new client waited more than 1 s for its answer "
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
    """One worker, two connections taking turns: each connection is
    "Accepted" and "Closed" exactly once, whatever the turns."""
    server = make_server("--workers", "1")
    accepted = log_count(server, "Accepted connection from")
    closed = log_count(server, "Closed connection from")
    a, b = server.connect(), server.connect()
    expected = b""
    for turn in range(3):
        for name, sock in ((b"a", a), (b"b", b)):
            packet = b"%s turn %d\n" % (name, turn)
            expected += packet
            sock.sendall(packet)
            # one worker serves b while a is still open
            assert recv_exactly(sock, len(expected)) == expected
    a.close()
    b.close()
    server.wait_log("Closed connection from", count=closed + 2)
    settle_log(server)          # one more connection, logged last
    assert log_count(server, "Accepted connection from") == accepted + 3
    assert log_count(server, "Closed connection from") == closed + 3


def test_silent_connections_are_logged_once(make_server):
    """Connections that never send cost no process (one worker serves a
    client meanwhile), and are logged once each when they close."""
    server = make_server("--workers", "1")
    accepted = log_count(server, "Accepted connection from")
    closed = log_count(server, "Closed connection from")
    silent = [server.connect() for _ in range(5)]
    try:
        server.wait_log(r"Accepted connection from", count=accepted + 5)
        with server.connect() as busy:
            busy.sendall(b"served meanwhile\n")
            assert recv_until_suffix(busy, b"served meanwhile\n",
                                     timeout=1) == b"served meanwhile\n"
    finally:
        close_all(silent)
    server.wait_log("Closed connection from", count=closed + 6)
    settle_log(server)
    assert log_count(server, "Accepted connection from") == accepted + 7
    assert log_count(server, "Closed connection from") == closed + 7


def test_idle_timeout_closes_idle_connections_once(make_server):
    """-i 1: connections that never sent, or are idle after one exchange,
    are closed by the idle timeout, each logged once; a client served
    meanwhile is not kept waiting for them."""
    server = make_server("--idle-timeout", "1", "--workers", "1")
    accepted = log_count(server, "Accepted connection from")
    closed = log_count(server, "Closed connection from")
    socks = [server.connect() for _ in range(3)]
    # answered before any idle second is over
    expected = b"meanwhile\n"
    with server.connect() as meanwhile:
        meanwhile.sendall(expected)
        assert recv_exactly(meanwhile, len(expected), timeout=0.5) == expected
    assert "Disconnecting" not in server.log(), \
        "the client was served only after an idle connection timed out"
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
    settle_log(server)
    log = server.log()
    assert log.count("Disconnecting 127.0.0.1: no complete packet for 1 s") == 5
    assert log.count("Accepted connection from") == accepted + 7
    assert log.count("Closed connection from") == closed + 7
    assert_served(server, expected)


# ----------------------------------------------------------- slow reader

def test_slow_reader_is_disconnected_by_the_response_pace(make_server):
    """A response must progress at 64 KiB/s on average after the send
    timeout: a client that reads its multi-MiB response at about half
    that rate is disconnected, and its worker (-w 1) serves the next
    client meanwhile and after."""
    send_timeout = 5
    server = make_server("--send-timeout", str(send_timeout),
                         "--workers", "1")
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
        # 4 KiB every 1/8 s: about 32 KiB/s at most
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
        # the one worker is not taken by the slow reader
        with server.connect() as meanwhile:
            meanwhile.sendall(b"meanwhile\n")
            expected += b"meanwhile\n"
            assert recv_until_suffix(meanwhile, b"meanwhile\n", timeout=10,
                                     limit=len(expected)) == expected

        def server_closed_it():
            # the client sees EOF only once it has read what the server's
            # send buffer still holds; the server's end shows it at once
            return ESTABLISHED not in server_tcp_states(server, slow)
        wait_until(server_closed_it, scaled(30), interval=0.1,
                   what="the server to disconnect a client reading at "
                        "~32 KiB/s")
        took = time.monotonic() - started
        assert received[0] < len(expected), "the whole response was read"
        server.wait_log(r"Disconnecting 127\.0\.0\.1: it read")
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


# --------------------------------------------------- crash-loop brakes

def pauses_logged(server, pattern, pid=None):
    """The pauses, in ms, of the log lines "<pattern>...in N ms"."""
    return [int(line.rsplit(" in ", 1)[1].split()[0])
            for line in log_lines(server, pattern + r".* in \d+ ms", pid)]


@shim.needs_shim
def test_persistent_accept_error_backs_off_in_the_worker(make_server,
                                                         faultshim):
    """accept() keeps failing: the worker that tries pauses accepting for
    100 ms, then 200, 400, 800 (logged), and nobody forks or exits; once
    the fault is gone, the waiting client is served."""
    server = make_server("-w", "2", *shim.UNCONFINED, env=faultshim.env())
    workers = wait_workers(server, 2)
    expected = assert_served(server, b"")
    faultshim.set("accept4 EINVAL", "accept EINVAL")
    since = shim.now_ms()
    started = time.monotonic()
    waiting = server.connect()
    try:
        waiting.sendall(b"waiting\n")       # the listener is readable now

        def backed_off_to_800():
            return any(pauses_logged(server, "Cannot accept connections",
                                     w)[-1:] == [800] for w in workers)
        wait_until(backed_off_to_800, scaled(10),
                   what="an accept pause of 800 ms")
        took = time.monotonic() - started
        for worker in workers:
            pauses = pauses_logged(server, "Cannot accept connections",
                                   worker)
            assert pauses == [100, 200, 400, 800][:len(pauses)], pauses
        # 100 + 200 + 400 ms of pauses before the fourth failure
        assert took >= 0.7, f"four failed accepts in {took:.2f} s"
        assert "Invalid argument" in server.log()
        assert not faultshim.calls("fork", since_ms=since)
        assert serving_pids_unchanged(server, workers)
        faultshim.clear()
        # the pause ends (800 ms at this stage, 1600 after one more)
        expected += b"waiting\n"
        assert recv_until_suffix(waiting, b"waiting\n", timeout=5) == expected
    finally:
        waiting.close()
    assert serving_pids_unchanged(server, workers)


@shim.needs_shim
def test_workers_dying_at_start_are_restarted_at_a_throttled_rate(
        make_server, faultshim):
    """Every new worker exits at once: the parent logs each exit with a
    pause that doubles from 100 ms (up to 5 s) and forks only after it;
    it never gives up, and the service comes back once workers start."""
    server = make_server("-w", "2", env=faultshim.env())
    workers = wait_workers(server, 2)
    expected = assert_served(server, b"")
    faultshim.set("fork exit-child")    # every new worker exits at once
    since = shim.now_ms()
    started = time.monotonic()
    # Both deaths before the parent sees either: on a loaded machine this
    # process may otherwise lose the CPU between the two kills for longer
    # than the first 100 ms pause, and the exits then come in another
    # order (one round of forks with one worker, then two), faster.
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for worker in workers:
            os.kill(worker, signal.SIGKILL)
        wait_until(lambda: not any(pid_alive(w) for w in workers),
                   scaled(5), what="both workers to die")
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)

    def restarts_logged():
        return pauses_logged(server, r"Worker \d+ .*; next worker")

    wait_until(lambda: 1600 in restarts_logged(), scaled(10),
               what="a restart pause of 1600 ms")
    took = time.monotonic() - started
    pauses = restarts_logged()
    assert pauses[:5] == [100, 200, 400, 800, 1600], pauses
    # two exits per round of forks (one per worker): the forks for the
    # third and fourth exits came after a 200 ms pause, those for the
    # fifth after 800 ms more
    assert took >= 0.9, f"five exits in {took:.2f} s"
    forks = faultshim.calls("fork", pid=server.proc.pid, since_ms=since,
                            failed=False)
    assert forks, "the server gave up replacing its workers"
    assert len(forks) <= len(pauses), \
        f"{len(forks)} forks for {len(pauses)} exits"
    assert server.proc.poll() is None, "the service stopped"
    assert os.path.exists(server.data_file)
    faultshim.clear()
    # forking resumes after the brake's pause (at most 5 s)
    wait_workers(server, 2, timeout=15, exclude=workers)
    packet = b"after the crash loop\n"
    with server.connect() as sock:
        sock.sendall(packet)
        assert recv_until_suffix(sock, packet) == expected + packet


def test_brake_resets_after_a_worker_that_ran_long(make_server):
    """A worker killed after it ran more than 5 s is a fresh failure: its
    replacement comes after 100 ms, not after a pause that kept doubling
    since an earlier crash."""
    server = make_server("-w", "2")
    workers = wait_workers(server, 2)
    os.kill(workers[0], signal.SIGKILL)
    server.wait_log(rf"Worker {workers[0]} killed by signal 9; next worker "
                    r"in 100 ms")
    replaced = wait_workers(server, 2, exclude=workers[:1])
    young = (set(replaced) - set(workers)).pop()
    os.kill(young, signal.SIGKILL)      # at once: the pause doubles
    server.wait_log(rf"Worker {young} killed by signal 9; next worker in "
                    r"200 ms")
    replaced = wait_workers(server, 2, exclude=[young])
    # the other first worker has run for more than 5 s by now
    wait_until(lambda: time.monotonic() - started_at(workers[1]) > 5.5,
               scaled(10), interval=0.1, what="5 s of running")
    os.kill(workers[1], signal.SIGKILL)
    server.wait_log(rf"Worker {workers[1]} killed by signal 9; next worker "
                    r"in 100 ms")
    wait_workers(server, 2, exclude=[workers[1]])
    assert_served(server, b"")


def started_at(pid):
    """When a process started, on time.monotonic()'s clock."""
    with open(f"/proc/{pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    return time.monotonic() - age


# ------------------------------------------ faults after start-up

STRERROR = {"EAGAIN": "Resource temporarily unavailable",
            "EMFILE": "Too many open files",
            "EPERM": "Operation not permitted"}

# (call, errno, --user): the parent cannot fork; a new worker cannot set
# up its event loop; a new worker cannot drop root.
AFTER_START_UP_FAULTS = [
    pytest.param("fork", "EAGAIN", False, id="fork-EAGAIN"),
    pytest.param("epoll_create1", "EMFILE", False, id="epoll_create1-EMFILE"),
    pytest.param("setuid", "EPERM", True, id="user-setuid-EPERM",
                 marks=needs_root),
]


@shim.needs_shim
@pytest.mark.parametrize("call,err,user", AFTER_START_UP_FAULTS)
def test_worker_that_cannot_be_replaced_does_not_stop_the_service(
        make_server, faultshim, call, err, user):
    """Once the service is up, a killed worker that cannot be replaced
    (fork fails, or the new worker fails before it is ready) does not stop
    it: the other workers keep serving their clients and new ones, the
    data is kept, the failure is logged with its cause, and the
    replacement comes once the fault is gone."""
    shared = shared_tmp_dir() if user else None
    try:
        run_with_a_fault_after_start_up(make_server, faultshim, call, err,
                                        shared)
    finally:
        if shared:
            shutil.rmtree(shared, ignore_errors=True)


def run_with_a_fault_after_start_up(make_server, faultshim, call, err,
                                    shared):
    args = ["--workers", "3"]
    if shared:
        server = make_server(*args, "--user", "nobody", env=faultshim.env(),
                             data_file=os.path.join(shared, "aesdsocketdata"))
    else:
        server = make_server(*args, env=faultshim.env())
    workers = wait_workers(server, 3)
    expected = assert_served(server, b"")
    # a client in the middle of a packet on each surviving worker
    victim, survivors = workers[0], workers[1:]
    busy = [connect_on(server, w) for w in survivors]
    for i, sock in enumerate(busy):
        sock.sendall(b"busy %d" % i)
    for sock in busy:
        wait_server_read_everything(server, sock)

    faultshim.set(f"{call} {err}")
    since = shim.now_ms()
    try:
        os.kill(victim, signal.SIGKILL)
        server.wait_log(rf"Worker {victim} killed by signal 9")
        wait_until(lambda: faultshim.calls(call, since_ms=since, failed=True),
                   scaled(10), what=f"a failed {call}() for a new worker")
        server.wait_log(STRERROR[err])
        if call != "fork":
            server.wait_log(r"Worker \d+ could not start; next worker in")
        assert server.proc.poll() is None, "the service stopped"
        assert os.path.exists(server.data_file)

        # still serving with the workers it has: new clients and old
        expected = assert_served(server, expected)
        for i, sock in enumerate(busy):
            sock.sendall(b"\n")
            packet = b"busy %d\n" % i
            expected += packet
            assert recv_until_suffix(sock, packet) == expected
        assert len(live_children(server.proc.pid)) == 2

        # recovers: three workers again once the fault is cleared
        faultshim.clear()
        wait_workers(server, 3, timeout=15, exclude=[victim])
        for _ in range(3):
            expected = assert_served(server, expected)
        assert read_bytes(server.data_file) == expected
    finally:
        faultshim.clear()
        close_all(busy)


# -------------------------------------------- faults before start-up

@needs_root
@shim.needs_shim
def test_worker_that_cannot_start_at_start_up_fails_it(make_server,
                                                       faultshim, tmp_path):
    """--user, and the first workers cannot drop root: start-up fails with
    exit status 1 and a message on stderr, in the foreground and with -d
    (which returns only once a worker is ready), and leaves no data file
    and no pidfile."""
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
        command = WRAPPER + [BINARY, *FILTER_ARGS, "-d", "-p", str(port),
                             "-f", data_file,
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


# ------------------------------------------------ stopping every process

@pytest.mark.parametrize("order", ["workers first", "parent first"])
def test_signal_to_every_process_stops_cleanly(make_server, order):
    """`kill $(pidof aesdsocket)` signals the parent and every worker at
    once (the course's check): exit status 0, every process gone, the
    data file removed, and nothing restarted."""
    server = make_server("--workers", "3")
    workers = wait_workers(server, 3)
    assert_served(server, b"")
    pids = workers + [server.proc.pid]
    if order == "parent first":
        pids.reverse()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass            # a worker already gone after the parent's stop
    assert server.proc.wait(timeout=scaled(10)) == 0
    server.stderr_file.close()
    assert not any(proc_exists(w) for w in workers)
    # no worker forked meanwhile outlived it with the listening socket
    assert not port_accepts(server.port)
    assert not os.path.exists(server.data_file)
    assert "Caught signal, exiting" in server.log()
