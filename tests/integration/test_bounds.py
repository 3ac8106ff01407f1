"""What slow and hostile clients cost (issue 14, section 2).

Clients that trickle bytes, hold large partial packets, or crowd the
connection cap must not keep a well-behaved client waiting: a fresh
client's packet is answered within a second.  Partial packets are bounded
by the buffer budget (-B, split between the workers), and at the
connection cap (-c, shared out) only a connection idle for a second is
closed to make room, one that never sent a byte first.

Each test says whether it fails on the issue-9 server (main at 3f2cd91,
AESDSOCKET=/path/to/it) or under which mutation of today's server.
"""
import re
import socket
import struct
import subprocess
import threading
import time

import pytest

from server_harness import (UNDER_SANITIZER, UNDER_VALGRIND, closed_by_peer,
                            log_lines, raise_nofile, read_bytes, recv_exactly,
                            scaled, server_side, server_sides, tree_pss_kib,
                            wait_server_read_everything, wait_until)

MiB = 1 << 20


def answer_time(server, packet, before, limit):
    """A fresh client sends packet: asserts that its response (before +
    packet) comes within limit seconds (not scaled); returns how long it
    took."""
    started = time.monotonic()
    with server.connect() as sock:
        sock.sendall(packet)
        sock.settimeout(limit)
        data = bytearray()
        try:
            while len(data) < len(before) + len(packet):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    took = time.monotonic() - started
    assert bytes(data) == before + packet, \
        f"a fresh client got {len(data)} of {len(before) + len(packet)} " \
        f"bytes in {took:.2f} s (limit {limit:.1f} s)"
    return took


def read_for(sock, n, seconds):
    """Up to n bytes, read for at most seconds (not scaled)."""
    deadline = time.monotonic() + seconds
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(data))
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return data


def keeps_up(server, socks):
    """The server has read all but at most a byte of each client."""
    sides = server_sides(server)
    return all(sides.get(s.getsockname()[1], (0,))[0] <= 1 for s in socks)


def all_on_the_server(server, socks):
    """The server holds a connection for each of these clients."""
    sides = server_sides(server)
    return all(s.getsockname()[1] in sides for s in socks)


def read_or_dropped(server, sock):
    """The server has read all this client sent, or closed it."""
    side = server_side(server, sock)
    return side is None or side[0] == 0


# ---------------------------------------------------------- slow clients

class Tricklers:
    """Clients that each send one byte every 0.2 s and never a newline,
    all from one thread; a send that fails marks the client as closed."""

    def __init__(self, server):
        self.server = server
        self.socks = []
        self.failed = []
        self.rounds = 0         # of one byte from every client
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def add(self, n):
        new = [self.server.connect() for _ in range(n)]
        for sock in new:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.send(b"s")
        with self._lock:
            self.socks += new
        return new

    def _run(self):
        while not self._stop.wait(0.2):
            with self._lock:
                socks = list(self.socks)
            for i, sock in enumerate(socks):
                try:
                    sock.send(b"s")
                except OSError as e:
                    if i not in self.failed:
                        self.failed.append((i, repr(e)))
            self.rounds += 1

    def wait_rounds(self, n):
        """Returns once every client has sent n more bytes."""
        until = self.rounds + n
        wait_until(lambda: self.rounds >= until, scaled(n), interval=0.05,
                   what=f"{n} rounds of slow bytes")

    def close(self):
        self._stop.set()
        self._thread.join()
        for sock in self.socks:
            sock.close()


def test_slow_clients_do_not_delay_a_fresh_client(make_server):
    """Default options: 33, then 200 clients each trickling a byte every
    0.2 s and never finishing a packet.  A fresh client's packet is
    answered within 1 s all along, and no slow client is closed meanwhile
    (they are well within the 60 s packet deadline).

    Fails on the issue-9 server: 33 such clients pin its 32 workers, and
    the fresh client waits until the -i deadline (57-60 s)."""
    raise_nofile(1024)
    server = make_server()
    slow = Tricklers(server)
    expected = b""
    try:
        for total in (33, 200):
            accepted = server.log().count("Accepted connection from")
            socks = slow.add(total - len(slow.socks))
            server.wait_log("Accepted connection from",
                            count=accepted + len(socks), timeout=10)
            # the server keeps up with every slow client: at most the byte
            # just sent is unread (at most 2 s: the issue-9 server never
            # reads those it has no worker for)
            slow.wait_rounds(5)
            try:
                wait_until(lambda: keeps_up(server, slow.socks), scaled(2),
                           interval=0.05)
            except AssertionError:
                pass
            for i in range(5):
                slow.wait_rounds(2)     # trickling on meanwhile
                packet = b"fresh %d among %d slow\n" % (i, total)
                took = answer_time(server, packet, expected, scaled(1))
                expected += packet
                print(f"{total} slow clients: answered in {took * 1000:.1f} ms")
            assert not slow.failed, f"slow clients closed: {slow.failed}"
            # (a socket may be missing from one reading of the table)
            wait_until(lambda: all_on_the_server(server, slow.socks),
                       scaled(2),
                       what="every slow client's connection on the server")
        assert not log_lines(server, "Disconnecting|Closing idle")
    finally:
        slow.close()
    assert read_bytes(server.data_file) == expected


# --------------------------------------------------------- buffer budget

# What the tree may take beyond the buffer budget while partial packets
# are held: each worker's 64 KiB receive buffer (touched only by the
# first big read), malloc's bookkeeping, a packet buffer being moved by
# realloc() as it doubles, and the pages of the connection table.
ALLOWANCE_KIB = 4096


def budget_cases():
    return [
        pytest.param(["-B", str(4 * MiB), "-m", str(MiB), "-w", "2"], 20,
                     4 * MiB, id="4MiB-budget"),
        pytest.param([], 40, 32 * MiB, id="default-budget"),
    ]


@pytest.mark.parametrize("args,clients,budget", budget_cases())
def test_large_partial_packets_cannot_starve_small_ones(make_server, args,
                                                        clients, budget):
    """Many clients each send 900 KiB of a packet and no newline, more
    than the buffer budget holds.  Meanwhile small-packet clients are
    answered within 1 s; the workers disconnect the clients holding most
    (logged) so that the whole tree's memory (PSS) stays within the stated
    budget (every worker holds at least one --max-packet) plus
    ALLOWANCE_KIB; and nothing of the partial packets reaches the data
    file.

    The 4MiB-budget case fails on the issue-9 server at once (no -B); the
    default-budget case fails there because the 40 clients pin its 32
    workers, so the small clients wait for the -i deadline.  Both fail
    under the mutation "keep_to_budget() returns at once" (loop.c): no
    disconnect line, and about 36 MiB held."""
    raise_nofile(1024)
    server = make_server(*args)
    server.wait_log(r"Serving on port")
    started = re.search(r"Serving on port .* with (\d+) workers", server.log())
    workers = int(started.group(1)) if started else len(server.workers())
    max_packet = MiB
    stated = workers * max(budget // workers, max_packet)
    expected = b""
    for i in range(3):          # every worker's receive buffer touched
        packet = b"warm-up %d\n" % i
        answer_time(server, packet, expected, scaled(1))
        expected += packet
    baseline = tree_pss_kib(server)
    peak = [baseline]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak[0] = max(peak[0], tree_pss_kib(server))
            time.sleep(0.01)

    big = [server.connect() for _ in range(clients)]
    outcome = [None] * clients

    def send_big(i):
        try:
            big[i].sendall(b"B" * (900 * 1024))
            outcome[i] = "sent"
        except OSError as e:
            outcome[i] = repr(e)

    sampler = threading.Thread(target=sample)
    senders = [threading.Thread(target=send_big, args=(i,))
               for i in range(clients)]
    sampler.start()
    try:
        for t in senders:
            t.start()
        slowest = 0.0
        for i in range(20):
            packet = b"small %02d\n" % i
            slowest = max(slowest,
                          answer_time(server, packet, expected, scaled(1)))
            expected += packet
        for t in senders:
            t.join(scaled(30))
        # every big client has been read in full, or disconnected
        for sock in big:
            wait_until(lambda: read_or_dropped(server, sock), scaled(10),
                       what="the server to read or drop a big client")
        packet = b"small after\n"
        answer_time(server, packet, expected, scaled(1))
        expected += packet
    finally:
        sampling.set()
        sampler.join()
    disconnected = log_lines(
        server, r"Disconnecting 127\.0\.0\.1: it holds \d+ bytes not yet "
                r"stored, the most while this worker's \d+-byte share of "
                r"the buffer budget is used up")
    assert disconnected, "nobody was disconnected for the budget"
    grown = peak[0] - baseline
    print(f"{workers} workers, {len(disconnected)} of {clients} clients "
          f"disconnected, slowest small answer {slowest * 1000:.0f} ms, "
          f"PSS {baseline} KiB + {grown} KiB at most (stated budget "
          f"{stated // 1024} KiB)")
    if not (UNDER_SANITIZER or UNDER_VALGRIND):
        assert grown <= stated // 1024 + ALLOWANCE_KIB, \
            f"PSS grew {grown} KiB for a budget of {stated // 1024} KiB"
    for sock in big:
        sock.close()
    assert read_bytes(server.data_file) == expected
    answer_time(server, b"last\n", expected, scaled(1))


# ---------------------------------------------------- the connection cap

# Linux's value (asm-generic/socket.h); Python does not name it
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def received_at(ancillary):
    """The kernel's receive time in recvmsg()'s ancillary data, or None."""
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = struct.unpack("qq", value[:16])
            return seconds + nanoseconds / 1e9
    return None


@pytest.fixture
def receive_timestamps():
    """Receive timestamps switched on for the test's duration: the kernel
    turns them on a moment after the first socket asks (a deferred
    work item), so a datagram is sent to ourselves until one has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(scaled(1))

        def stamped():
            sock.sendto(b"t", sock.getsockname())
            return received_at(sock.recvmsg(16, 1024)[1]) is not None
        wait_until(stamped, scaled(5), what="receive timestamps")
        yield


def idle_since(sock, packet):
    """Sends packet and reads its answer; returns when the answer's last
    bytes reached the client's socket, on time.time()'s clock, as the
    kernel stamped them (the client itself may be scheduled much later
    on a loaded machine, and the server's idle second began before)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.sendall(packet)
    sock.settimeout(scaled(5))
    data = b""
    arrived = None
    while not data.endswith(packet):
        chunk, ancillary, _, _ = sock.recvmsg(1 << 16, 1024)
        assert chunk, "closed before the answer"
        data += chunk
        arrived = received_at(ancillary) or arrived
    assert arrived is not None, "no receive timestamp"
    return arrived


def test_cap_resumes_accepting_once_busy_connections_go_idle(
        make_server, receive_timestamps):
    """-c 2 -i 0: A and B each send half a packet, a third client
    connects and sends a whole one and waits in the backlog; A and B
    finish their packets and go idle.  A second later one of them is
    closed to make room (logged once) and the third is answered, within
    1 s of them going idle plus slack; the other one is still served.

    Fails on the issue-9 server: the third waits until A or B closes
    (forever with -i 0)."""
    server = make_server("-c", "2", "-i", "0")
    a, b = server.connect(), server.connect()
    third = None
    try:
        a.sendall(b"aa")
        b.sendall(b"bb")
        wait_server_read_everything(server, a)
        wait_server_read_everything(server, b)
        third = server.connect()
        third.sendall(b"new\n")
        went_idle = max(idle_since(a, b"\n"), idle_since(b, b"\n"))
        answer = read_for(third, len(b"aa\nbb\nnew\n"), 1.0 + scaled(0.5))
        took = time.time() - went_idle
        assert len(answer) == 10, \
            f"the third client got {answer!r} within {took:.2f} s of the " \
            f"other two going idle"
        assert answer in (b"aa\nbb\nnew\n", b"bb\naa\nnew\n"), answer
        assert took >= 0.9, f"a connection idle for {took:.2f} s was closed"
        evictions = log_lines(server, r"Closing idle connection from "
                                      r"127\.0\.0\.1 to make room \(2 open\)")
        assert len(evictions) == 1, evictions
        wait_until(lambda: closed_by_peer(a) or closed_by_peer(b), scaled(5),
                   what="the evicted connection to be closed")
        kept = b if closed_by_peer(a) else a
        assert not closed_by_peer(kept)
        third.close()
        third = None
        kept.sendall(b"kept\n")
        assert recv_exactly(kept, len(answer) + 5).endswith(b"kept\n")
    finally:
        for sock in (a, b, third):
            if sock is not None:
                sock.close()


def test_cap_evicts_only_connections_idle_for_a_second_under_churn(
        make_server, receive_timestamps):
    """-c 2 -i 0, with the CPUs busy: 16 clients come one after another
    while the cap is full; half never send, half send a packet and stay.
    Every accepted client that sent a packet is answered, and every
    connection the server closes had been idle for at least 1 s (it
    never closes one for an event meant for its slot's previous
    connection); the log gives "Closing idle connection" as the only
    reason, once per closed connection.

    A guard more than a reproducer: the issue-9 defect (an event fetched
    for an evicted slot applied to its next connection) needs the parent
    descheduled at the wrong moment.  Fails under the mutation
    IDLE_ENOUGH_MS 0 (conntable.h)."""
    server = make_server("-c", "2", "-i", "0")
    hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"])
            for _ in range(2)]
    # (socket, silent, idle since, closed at): time.time(), taken so that
    # a late client only makes the idle time it sees longer
    clients = []
    errors = []
    try:
        for i in range(16):
            connecting = time.time()    # before the server can accept it
            sock = server.connect()
            silent = i % 2 == 1
            answered = None
            if silent:
                answered = connecting
            else:
                packet = b"churn %02d\n" % i
                try:
                    answered = idle_since(sock, packet)
                except (OSError, AssertionError) as e:
                    errors.append(f"client {i}: {e!r}")
            clients.append([sock, silent, answered, None])
            now = time.time()
            for entry in clients:
                if entry[3] is None and closed_by_peer(entry[0]):
                    entry[3] = now
        deadline = time.monotonic() + scaled(5)
        while time.monotonic() < deadline and \
                sum(e[3] is None for e in clients) > 2:
            now = time.time()
            for entry in clients:
                if entry[3] is None and closed_by_peer(entry[0]):
                    entry[3] = now
            time.sleep(0.01)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    try:
        assert not errors, errors
        early = [(i, round(e[3] - e[2], 3)) for i, e in enumerate(clients)
                 if e[3] is not None and e[3] - e[2] < 0.99]
        assert not early, f"closed after less than 1 s idle: {early}"
        closed = sum(e[3] is not None for e in clients)
        assert closed >= 14, f"only {closed} of 16 made room"
        evictions = log_lines(server, r"Closing idle connection from")
        assert len(evictions) == closed, (closed, evictions)
        assert not log_lines(server, r"Disconnecting|Cannot")
    finally:
        for entry in clients:
            entry[0].close()


def test_cap_of_two_serves_20_clients_connecting_at_once(make_server):
    """-c 2: ten rounds of 20 clients connecting at once, each sending one
    packet, reading its answer and closing: every one is served (the
    others wait in the backlog); no connection with its first packet on
    the way is closed to make room.

    Fails on the issue-9 server in about 4 rounds of 12 (a connection
    just accepted, its packet in flight, was evicted), so in most runs of
    ten rounds."""
    server = make_server("-c", "2")
    packets = []
    for round_ in range(10):
        errors = []
        start = threading.Barrier(20)

        def client(i):
            packet = b"round %d client %02d\n" % (round_, i)
            try:
                start.wait(timeout=scaled(10))
                with server.connect(timeout=30) as sock:
                    sock.sendall(packet)
                    sock.settimeout(scaled(10))
                    data = b""
                    while not data.endswith(packet):
                        chunk = sock.recv(1 << 16)
                        if not chunk:
                            raise AssertionError(f"closed after {len(data)} "
                                                 f"bytes, unanswered")
                        data += chunk
                packets.append(packet)
            except Exception as e:      # reported below
                errors.append(f"round {round_} client {i}: {e!r}")

        threads = [threading.Thread(target=client, args=(i,))
                   for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(scaled(60))
        assert not errors, errors
    stored = read_bytes(server.data_file).splitlines(keepends=True)
    assert sorted(stored) == sorted(packets)
    assert len(packets) == 200
    assert not log_lines(server, "Closing idle connection")


def test_established_client_survives_100_silent_connects(
        make_server, receive_timestamps):
    """-c 100: a client exchanges a packet and stays idle for more than a
    second; then 100 clients connect at once and send nothing.  The cap
    holds 99 of them, the hundredth waits until a silent one has been
    idle for a second, and that one (never the established client) is
    closed to make room; the established client's next packet is
    answered.

    Fails on the issue-9 server: its cap is pure LRU, so the established
    client, idle longest, is closed."""
    raise_nofile(1024)
    server = make_server("-c", "100", "-i", "0")
    established = server.connect()
    silent = []
    try:
        went_idle = idle_since(established, b"established\n")
        wait_until(lambda: time.time() - went_idle > 1.2, 5,
                   interval=0.05, what="more than a second of idling")
        accepted = server.log().count("Accepted connection from")
        silent = [server.connect() for _ in range(100)]
        server.wait_log("Accepted connection from", count=accepted + 100,
                        timeout=10)
        assert not closed_by_peer(established), \
            "the established client was closed to make room"
        established.sendall(b"still here\n")
        assert recv_exactly(established, 23) == b"established\nstill here\n"
        wait_until(lambda: sum(map(closed_by_peer, silent)) >= 1, scaled(5),
                   what="a silent connection to be closed")
        evictions = log_lines(server, r"Closing idle connection from "
                                      r"127\.0\.0\.1 to make room "
                                      r"\(100 open\)")
        assert len(evictions) == 1, evictions
        assert sum(map(closed_by_peer, silent)) == 1
    finally:
        established.close()
        for sock in silent:
            sock.close()
