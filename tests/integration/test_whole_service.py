"""Each promise the manual makes for the service holds for the whole
service, not inside one worker, and against the kernel's view of a
connection (issue 20): the connection cap and whom it closes, a new
client at the cap, what the buffer budget counts, the data file's lock,
and the data file's path.

Clients are steered to a chosen worker by stopping the others while they
connect (connect_on), so that what happens between workers is
deterministic.  Each test says how it fails on the server before issue 20
(main at c3ecc83, AESDSOCKET=/path/to/it), and under which mutation of
today's server.
"""
import fcntl
import os
import signal
import socket
import stat
import subprocess
import time

import pytest

import faultshim as shim
from server_harness import (IS_ROOT, assert_closed_by_server, assert_served,
                            closed_by_peer, connect_on, log_lines,
                            process_state, read_bytes,
                            recv_exactly, recv_until_suffix, scaled,
                            server_send_queue, server_side, shared_tmp_dir,
                            stop_process, wait_server_read_everything,
                            wait_until, wait_workers)

ACCEPTED = "Accepted connection from"
CLOSED = "Closed connection from"


def exchange(sock, packet, expected):
    """One packet on an open connection; returns the file after it."""
    sock.sendall(packet)
    expected += packet
    assert recv_until_suffix(sock, packet) == expected
    return expected


def answered_in_order(expected, *waiting):
    """Each (socket, packet) in waiting, a packet sent earlier, is answered
    in that order: the file grows by each in turn.  Returns the file."""
    for sock, packet in waiting:
        expected += packet
        assert recv_until_suffix(sock, packet) == expected
    return expected


def unanswered(sock, seconds=0.5):
    """True if nothing arrives on sock for that long (not scaled), and the
    server has not closed it either."""
    sock.settimeout(seconds)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except socket.timeout:
        return True
    return False


def idle_for(seconds):
    """Lets connections the server has accepted go idle for that long: the
    server took them before the test's clock started."""
    time.sleep(seconds)


# ------------------------------------------------------ the connection cap

def established_then_silent(make_server, pause):
    """-c 4 -w 2 -i 0, at the cap: two clients idle after an exchange on
    the first worker, then, pause seconds later, two silent ones on the
    second.  Returns the server, both workers, both pairs of sockets and
    the file's content."""
    server = make_server("-c", "4", "-w", "2", "-i", "0")
    first, second = wait_workers(server, 2)
    established = [connect_on(server, first) for _ in range(2)]
    expected = b""
    for i, sock in enumerate(established):
        expected = exchange(sock, b"established %d\n" % i, expected)
    idle_for(pause)
    silent = [connect_on(server, second) for _ in range(2)]
    return server, first, second, established, silent, expected


def test_cap_closes_a_silent_connection_on_another_worker_first(make_server):
    """-c 4 -w 2: two clients exchange a packet on the first worker; half
    a second later two clients connect to the second and send nothing;
    1.3 s later a fifth client comes.  It is answered, and the one closed
    to make room is a silent one (never-spoke before spoke, then longest
    idle, across the service): the established clients stay and are
    served; the line says how many are open.

    Fails on the issue-14 server (c3ecc83): the first worker, woken for
    the fifth client, closes one of its own established clients.  Fails
    under the mutation "census_first_idle() returns the caller whenever
    it has an idle connection" (census.c)."""
    server, first, second, established, silent, expected = \
        established_then_silent(make_server, 0.5)
    idle_for(1.3)
    try:
        with server.connect() as fifth:
            expected = exchange(fifth, b"fifth\n", expected)
        wait_until(lambda: sum(map(closed_by_peer, silent)) == 1, scaled(5),
                   what="a silent connection to be closed")
        assert not any(map(closed_by_peer, established))
        for i, sock in enumerate(established):
            expected = exchange(sock, b"still here %d\n" % i, expected)
        assert len(log_lines(server, r"Closing idle connection from "
                                     r"127\.0\.0\.1 to make room \(4 open\): "
                                     r"silent", second)) == 1
        assert not log_lines(server, "Closing idle connection", first)
    finally:
        for sock in established + silent:
            sock.close()


def test_below_the_cap_one_worker_may_hold_every_connection(make_server):
    """-c 4 -w 2: four clients, all on the first worker, each idle for more
    than a second after an exchange before the next comes: every one is
    accepted and nothing is closed (the cap counts the service's
    connections, not a share of each worker).

    Fails on the issue-14 server: each worker has a share of 2, the other
    (stopped while the client connects) counts as full, so the first
    worker closes one of its own to make room.  Fails under the mutation
    "census_open() returns the cap" (census.c)."""
    server = make_server("-c", "4", "-w", "2", "-i", "0")
    first, _ = wait_workers(server, 2)
    socks, expected = [], b""
    try:
        for i in range(4):
            sock = connect_on(server, first)
            socks.append(sock)
            expected = exchange(sock, b"client %d\n" % i, expected)
            idle_for(1.1)
        assert not any(map(closed_by_peer, socks))
        assert not log_lines(server, "Closing idle connection")
        for i, sock in enumerate(socks):
            expected = exchange(sock, b"again %d\n" % i, expected)
    finally:
        for sock in socks:
            sock.close()


def test_new_client_at_the_cap_waits_only_for_room(make_server):
    """-c 4 -w 2: the first worker holds two established clients, the
    second two silent ones, all idle for more than a second; one silent
    client closes, so 3 of 4 are open.  A new client is answered at once
    (here: within 3 s, however busy the machine): below the cap, a worker
    with room takes it.

    Fails on the issue-14 server: the first worker, woken for the new
    client, is full and turns it down; the second, with room, is never
    woken, and the client waits for another arrival (12 s and more).
    Fails under the mutation "census_turned_down() wakes nobody"
    (census.c) only when the kernel wakes the worker at its cap; and
    under "census_open() returns the cap" always."""
    server, first, second, established, silent, expected = \
        established_then_silent(make_server, 0)
    idle_for(1.2)
    silent.pop().close()
    server.wait_log(CLOSED, count=2)    # the probe's and this one
    try:
        started = time.monotonic()
        with server.connect() as new:
            new.sendall(b"new\n")
            answer = recv_until_suffix(new, b"new\n", timeout=3)
        took = time.monotonic() - started
        assert answer == expected + b"new\n"
        assert took <= scaled(3), f"answered after {took:.2f} s"
        assert not log_lines(server, "Closing idle connection")
    finally:
        for sock in established + silent:
            sock.close()


def test_connection_with_bytes_in_the_kernel_is_not_idle(make_server):
    """-w 1 -c 1: A connects and stays silent for 1.3 s; the worker is
    stopped; B connects (it waits in the backlog) and A sends "hello"; the
    worker goes on and finds both in one batch.  A is answered (the
    kernel held a packet for it: it was not idle), the file holds its
    packet, and B is answered once A has been idle for a second again
    (then A, idle after an exchange, is closed to make room).

    Fails on the issue-14 server: A is closed as idle, gets a reset, and
    its packet is lost.  Fails under the mutation "find_room() does not
    peek" (loop.c)."""
    server = make_server("-w", "1", "-c", "1", "-i", "0")
    (worker,) = wait_workers(server, 1)
    a = connect_on(server, worker)
    b = None
    try:
        idle_for(1.3)
        stop_process(worker)
        try:
            b = server.connect()
            b.sendall(b"bee\n")
            a.sendall(b"hello\n")
            wait_until(lambda: (server_side(server, a) or (0,))[0] == 6,
                       scaled(5), what="A's packet in the kernel")
        finally:
            os.kill(worker, signal.SIGCONT)
        assert recv_until_suffix(a, b"hello\n") == b"hello\n"
        assert recv_until_suffix(b, b"bee\n", timeout=10) == b"hello\nbee\n"
        assert read_bytes(server.data_file) == b"hello\nbee\n"
        assert len(log_lines(server, r"Closing idle connection from .* "
                                     r"\(1 open\): idle for")) == 1
    finally:
        for sock in (a, b):
            if sock is not None:
                sock.close()


# ------------------------------------------------------- the buffer budget

def grow_quietly(server, count, size):
    """Appends count packets of size bytes, each from a client that closes
    without reading its answer; returns the file's content."""
    expected = b""
    for i in range(count):
        packet = bytes([ord("a") + i % 26]) * (size - 1) + b"\n"
        expected += packet
        with server.connect() as sock:
            sock.sendall(packet)
        wait_until(lambda: os.path.getsize(server.data_file) == len(expected),
                   scaled(10), what=f"packet {i} stored")
    return expected


def partial(server, size):
    """A client that has sent size bytes of a packet, all read by the
    server."""
    sock = server.connect()
    sock.sendall(b"p" * size)
    wait_server_read_everything(server, sock)
    return sock


def test_budget_counts_only_bytes_not_yet_stored(make_server):
    """-w 1 -m 65536 -B 131072, a file of 8 MiB: A sends a 64 KiB packet
    in two pieces (so the worker puts it together) and does not read its
    answer; B and C each hold 40,000 bytes of a packet.  A has nothing
    left that is not stored, so nobody is disconnected, and A then reads
    its whole answer.  A fourth client, D, with 40,000 bytes more, does
    exceed the budget: B, holding the most for longest, is disconnected,
    and the line says what it really held (40000 bytes).

    Fails on the issue-14 server: A is disconnected ("it holds 65536
    bytes of a packet") for a packet already stored.  Fails under the
    mutation "answer() does not let the framer's buffer go"
    (connection.c)."""
    server = make_server("-w", "1", "-m", "65536", "-B", "131072")
    expected = grow_quietly(server, 128, 65536)
    a = socket.socket()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a.connect(("127.0.0.1", server.port))
    others = []
    try:
        packet = b"A" * 65535 + b"\n"
        a.sendall(packet[:40000])
        wait_server_read_everything(server, a)
        a.sendall(packet[40000:])
        expected += packet
        wait_until(lambda: server_send_queue(server, a) > 0, scaled(5),
                   what="A's answer to be under way")
        others = [partial(server, 40000) for _ in range(2)]
        assert not log_lines(server, "Disconnecting")
        assert recv_exactly(a, len(expected), timeout=60) == expected
        others.append(partial(server, 40000))
        server.wait_log(r"Disconnecting 127\.0\.0\.1: it holds 40000 bytes "
                        r"not yet stored")
        wait_until(lambda: closed_by_peer(others[0]), scaled(5),
                   what="B to be disconnected")
        assert not closed_by_peer(others[1])
        assert len(log_lines(server, "Disconnecting")) == 1
    finally:
        for sock in [a] + others:
            sock.close()


# ----------------------------------------------------- the data file's lock

def test_a_reader_of_the_data_file_cannot_hold_up_appends(make_server):
    """The data file is created mode 0640; a process that has it open for
    reading only (here root's) holds an exclusive flock() on it: new
    clients are answered all along (within 3 s each, however busy the
    machine; the appenders' lock is not the file's), and the file holds
    every packet.

    Fails on the issue-14 server: flock() on the data file is the
    appenders' lock, so every append of every worker waits for the
    reader."""
    server = make_server()
    expected = assert_served(server, b"")
    assert stat.S_IMODE(os.stat(server.data_file).st_mode) == 0o640
    with open(server.data_file, "rb") as reader:
        fcntl.flock(reader, fcntl.LOCK_EX)
        try:
            for i in range(5):
                packet = b"while a reader holds a lock %d\n" % i
                started = time.monotonic()
                with server.connect() as sock:
                    sock.sendall(packet)
                    answer = recv_until_suffix(sock, packet, timeout=3)
                assert answer == expected + packet
                assert time.monotonic() - started <= scaled(3)
                expected += packet
        finally:
            fcntl.flock(reader, fcntl.LOCK_UN)
    assert read_bytes(server.data_file) == expected


@pytest.mark.skipif(not IS_ROOT, reason="needs root to be another user")
def test_another_user_can_neither_read_nor_lock_the_data_file(make_server):
    """--user nobody: the data file belongs to nobody's group, mode 0640;
    another user (daemon) cannot open it at all, so cannot lock it.

    Fails on the issue-14 server: the file is 0644, any user opens it and
    flock -x stops every append."""
    directory = shared_tmp_dir()
    try:
        server = make_server("--user", "nobody",
                             data_file=os.path.join(directory, "data"))
        assert_served(server, b"")
        st = os.stat(server.data_file)
        assert stat.S_IMODE(st.st_mode) == 0o640
        tried = subprocess.run(
            ["setpriv", "--reuid=daemon", "--regid=daemon", "--clear-groups",
             "flock", "-n", "-x", server.data_file, "true"],
            capture_output=True, text=True, timeout=scaled(10))
        assert tried.returncode != 0
        assert "Permission denied" in tried.stderr, tried.stderr
        server.stop()
    finally:
        subprocess.run(["rm", "-rf", directory], check=False)


def stop_holding_the_lock(faultshim, holder, client):
    """The worker holder stops (SIGSTOP) holding the appenders' lock, in
    the middle of its append of its client's packet "held\\n"."""
    faultshim.set("flock stop-once")
    client.sendall(b"held\n")
    wait_until(lambda: process_state(holder) in ("T", None), scaled(5),
               what="the worker to stop holding the lock")
    faultshim.clear()


def start_with_lock_holder(make_server, faultshim, *args):
    """-w 2 under the fault shim (without the system call filter, which
    would keep the shim from reading its control file in a worker that
    serves): a client idle on the first worker, which
    then stops holding the lock (stop_holding_the_lock).  Returns the
    server, the stopped worker, the other one, that client and the file's
    content before."""
    server = make_server("-w", "2", *args, *shim.UNCONFINED,
                         env=faultshim.env())
    holder, other = wait_workers(server, 2)
    client = connect_on(server, holder)
    expected = exchange(client, b"before\n", b"")
    stop_holding_the_lock(faultshim, holder, client)
    return server, holder, other, client, expected


@shim.needs_shim
def test_while_appends_wait_for_the_lock_nothing_else_waits(make_server,
                                                            faultshim):
    """-w 2 -i 3: one worker stops holding the appenders' lock.  The other
    meanwhile accepts new clients, reads a partial packet, closes a
    silent client at its -i deadline, and says once that appends wait;
    its clients' packets wait, unanswered, with no deadline.  Once the
    first worker goes on, every waiting packet is stored in the order it
    came and answered, and the log says appends went on.

    Fails on the issue-14 server: the other worker blocks in flock(), so
    nothing of this happens, and after 0.5 s the parent kills the stopped
    worker (its packet and its clients are lost).  Fails under the
    mutation "take_lock() blocks" (store.c)."""
    server, holder, other, client, expected = start_with_lock_holder(
        make_server, faultshim, "-i", "3")
    # only the other worker accepts now
    before = len(log_lines(server, ACCEPTED, other))
    waiting, part, silent = server.connect(), server.connect(), None
    try:
        server.wait_log(ACCEPTED, count=4)
        assert len(log_lines(server, ACCEPTED, other)) == before + 2
        waiting.sendall(b"waits 1\n")
        part.sendall(b"part of")
        wait_server_read_everything(server, part)
        part.sendall(b" a packet\n")
        silent = server.connect()
        wait_until(lambda: closed_by_peer(silent), scaled(6),
                   what="the silent client's -i deadline")
        server.wait_log(r"Appends have waited \d+ ms for the data file's "
                        r"lock", timeout=5)
        assert unanswered(waiting) and unanswered(part)
        assert process_state(holder) == "T"
        assert len(log_lines(server, "Appends have waited", other)) == 1
        assert not log_lines(server, r"Worker \d+ (killed|exited)")
    finally:
        os.kill(holder, signal.SIGCONT)
    expected = answered_in_order(expected, (client, b"held\n"),
                                 (waiting, b"waits 1\n"),
                                 (part, b"part of a packet\n"))
    server.wait_log(r"Appends go on after \d+ ms waiting")
    for sock in (client, waiting, part, silent):
        sock.close()
    assert read_bytes(server.data_file) == expected


@shim.needs_shim
def test_slow_reader_is_served_while_appends_wait(make_server, faultshim):
    """-w 2 -t 0, a 4 MB file: a client on the second worker has its
    answer under way (it reads slowly); then the first worker stops
    holding the lock, and another client of the second worker sends a
    packet, which waits for the lock.  The slow reader still gets its
    whole answer while the lock is held.

    Fails on the issue-14 server: the second worker blocks in flock()
    (the slow reader gets nothing more) until the parent kills the
    stopped worker, after 0.5 s ("Worker ... is stopped holding the data
    file's lock; killing it")."""
    server = make_server("-w", "2", "-t", "0", *shim.UNCONFINED,
                         env=faultshim.env())
    holder, other = wait_workers(server, 2)
    expected = b""
    with server.connect() as sock:
        for i in range(4):
            packet = bytes([ord("a") + i]) * 999999 + b"\n"
            expected = exchange(sock, packet, expected)
    client = connect_on(server, holder)
    expected = exchange(client, b"before\n", expected)
    slow = connect_on(server, other, rcvbuf=4096)
    slow.sendall(b"slow\n")
    expected += b"slow\n"
    wait_until(lambda: server_send_queue(server, slow) > 0, scaled(5),
               what="the slow reader's answer to be under way")
    first = recv_exactly(slow, 4096)
    stop_holding_the_lock(faultshim, holder, client)
    waiting = connect_on(server, other)
    try:
        waiting.sendall(b"waits\n")
        wait_server_read_everything(server, waiting)
        rest = recv_until_suffix(slow, b"slow\n", timeout=30)
        assert first + rest == expected
        assert process_state(holder) == "T"
        assert not log_lines(server, r"Worker \d+ (killed|exited|is stopped)")
    finally:
        os.kill(holder, signal.SIGCONT)
    answered_in_order(expected, (client, b"held\n"), (waiting, b"waits\n"))
    for sock in (slow, client, waiting):
        sock.close()


@shim.needs_shim
def test_stop_while_a_worker_is_stopped_holding_the_lock(make_server,
                                                         faultshim):
    """SIGTERM while one worker is stopped holding the lock and the other
    has a client whose packet waits for it: the parent lets the stopped
    worker go on, it finishes its append and stops; the service exits 0
    without waiting out the 5 s grace (nothing is killed), every
    connection logged Accepted is logged Closed, the waiting packet is
    either logged as never stored or, when the lock came free before that
    worker saw the stop (the two race, and both are right), stored and
    answered, never both and never neither; and the data file is deleted.

    Fails on the issue-14 server: the stopped worker is killed (by the
    lock watchdog, or at the end of the grace) without closing its
    connections, so their Closed lines are missing."""
    server, holder, other, client, _ = start_with_lock_holder(
        make_server, faultshim)
    waiting = server.connect()
    server.wait_log(ACCEPTED, count=3)
    waiting.sendall(b"waits\n")
    wait_server_read_everything(server, waiting)
    assert server.stop(timeout=10) == 0
    log = server.log()
    assert log.count(ACCEPTED) == log.count(CLOSED), log
    discarded = "Discarding 6 bytes from 127.0.0.1 that were never stored" in log
    answered = assert_closed_by_server(waiting).endswith(b"waits\n")
    assert discarded != answered, log
    assert not log_lines(server, r"did not stop|killed by signal")
    assert not os.path.exists(server.data_file)
    client.close()
    waiting.close()


# ------------------------------------------------------ the data file's path

@pytest.mark.parametrize("what", ["deleted", "replaced", "renamed"])
def test_changes_at_the_data_file_path_are_logged(make_server, tmp_path,
                                                  what):
    """The data file is deleted, replaced by another file, or renamed
    while the service runs: the parent logs it once, at once; the
    service goes on with its own file (every client, and a worker forked
    after the change, appends to it and is answered the whole of it), a
    file put in its place is left alone and outlives the service.

    Fails on the issue-14 server: nothing is logged."""
    server = make_server("--workers", "2")
    expected = assert_served(server, b"")
    path = server.data_file
    if what == "deleted":
        os.unlink(path)
    elif what == "replaced":
        os.unlink(path)
        with open(path, "wb") as f:
            f.write(b"someone else's\n")
    else:
        os.rename(path, str(tmp_path / "moved"))
    server.wait_log(rf"Data file {path} (was deleted|was renamed)")
    workers = wait_workers(server, 2)
    os.kill(workers[0], signal.SIGKILL)
    workers = wait_workers(server, 2, exclude=workers[:1])
    for worker in workers:
        with connect_on(server, worker) as sock:
            expected = exchange(sock, b"after on %d\n" % worker, expected)
    assert len(log_lines(server, "Data file .* was")) == 1
    if what == "renamed":
        assert read_bytes(str(tmp_path / "moved")) == expected
    assert server.stop() == 0
    if what == "replaced":
        assert read_bytes(path) == b"someone else's\n"
        assert "Not deleting" in server.log()
    else:
        assert not os.path.exists(path)
