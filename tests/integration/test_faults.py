"""Fault tests against the real aesdsocket binary (issue 6, item 8).

Each test provokes one hostile client or one fault and checks what the
server promises: nothing torn or half-stored in the data file, the client
disconnected, a log line saying why, and every other client still served.
Several tests need root (tmpfs and bind mounts, --user); they skip without
it.  Every test also fails if any server process, workers included,
reported a sanitizer or valgrind error (see no_memory_errors in conftest).
"""
import errno
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from server_harness import (KILL_AT_FTRUNCATE, TORN_APPEND_CUT_BACK,
                            UNDER_VALGRIND, assert_closed_by_server,
                            assert_served, connect_on, expect_start_failure,
                            file_size_limit, grow_file, pid_alive, proc_exists,
                            raise_nofile, read_bytes, recv_exactly,
                            recv_until_suffix, rst_close, scaled, send_packet,
                            status_field, strace_injecting, tcp_entries,
                            wait_server_read_everything, wait_until,
                            wait_workers, worker_count, worker_serving,
                            wrapper_log_dir_is_private)

ESTABLISHED = 0x01

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


@pytest.fixture
def mounts():
    """Mount points to unmount at teardown (request it before make_server,
    so the server is gone before its file system is unmounted)."""
    points = []
    yield points
    for point in reversed(points):
        if subprocess.run(["umount", point]).returncode != 0:
            subprocess.run(["umount", "-l", point])


# ----------------------------------------------------- clients that fail

def test_client_abort_mid_packet_discards_it(make_server):
    server = make_server()
    assert send_packet(server, b"first\n", b"first\n") == b"first\n"

    aborted = server.connect()
    aborted.sendall(b"half a pack")
    wait_server_read_everything(server, aborted)
    rst_close(aborted)

    server.wait_log(r"Discarding 11 bytes from 127\.0\.0\.1")
    assert read_bytes(server.data_file) == b"first\n"
    assert_served(server, b"first\n")
    assert server.proc.poll() is None


def test_killed_worker_is_reaped_and_replaced_others_served(make_server):
    """-w 3, a client with a packet in flight on each worker: the worker
    of the middle one is killed.  Its client is disconnected, it is
    reaped (no zombie) and replaced after the logged pause, and the
    other two clients' packets complete on their own workers."""
    server = make_server("--workers", "3")
    workers = wait_workers(server, 3)
    clients = [connect_on(server, w) for w in workers]
    expected = b""
    for i, sock in enumerate(clients):
        packet = b"client %d\n" % i
        expected += packet
        sock.sendall(packet)
        assert recv_exactly(sock, len(expected)) == expected
    for i, sock in enumerate(clients):
        sock.sendall(b"client %d again" % i)
    for sock in clients:
        wait_server_read_everything(server, sock)

    victim = workers[1]
    os.kill(victim, signal.SIGKILL)
    assert_closed_by_server(clients[1])
    # reaped by the server: no zombie left behind, not a child any more
    wait_until(lambda: not proc_exists(victim), scaled(5),
               what=f"killed worker {victim} to be reaped")
    server.wait_log(rf"Worker {victim} killed by signal 9; next worker in "
                    r"100 ms")
    replaced = wait_workers(server, 3, exclude=[victim])
    assert set(replaced) - set(workers), "no new worker"

    for i in (0, 2):
        expected += b"client %d again\n" % i
        clients[i].sendall(b"\n")
        assert recv_exactly(clients[i], len(expected)) == expected
    expected = assert_served(server, expected)
    assert read_bytes(server.data_file) == expected
    for sock in clients:
        sock.close()


def test_over_long_packet_disconnects_stores_nothing(make_server):
    server = make_server("--max-packet", "1024")
    exact = b"x" * 1023 + b"\n"          # exactly the limit: stored
    assert send_packet(server, exact, exact) == exact

    # one byte over the limit, newline included: refused
    with server.connect() as sock:
        sock.sendall(b"y" * 1024 + b"\n")
        assert_closed_by_server(sock)
    server.wait_log(r"Disconnecting 127\.0\.0\.1: packet longer than 1024 "
                    r"bytes, nothing stored")
    assert read_bytes(server.data_file) == exact

    # an endless packet: the server stops reading after the limit, so the
    # client can push no more than the socket buffers hold
    baseline = {p: int(status_field(p, "VmHWM")[0])
                for p in wait_workers(server, worker_count(server))}
    sent = 0
    with server.connect() as sock:
        sock.settimeout(scaled(10))
        chunk = b"z" * 65536
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            while sent < 256 << 20:
                sent += sock.send(chunk)
    assert sent < 64 << 20, f"server kept reading: {sent} bytes accepted"
    server.wait_log(r"packet longer than 1024 bytes", count=2)
    grown = {p: int(status_field(p, "VmHWM")[0]) - baseline[p]
             for p in baseline}
    print(f"workers' peak RSS grew by {grown} KiB")
    # at most the 64 KiB receive buffer touched for the first time, and
    # under sanitizers its shadow; valgrind's own memory moves more
    bound = 16 * 1024 if UNDER_VALGRIND else 1024
    assert sum(grown.values()) <= bound, f"worker peak RSS grew {grown} kB"
    assert read_bytes(server.data_file) == exact
    assert_served(server, exact)


def test_slowloris_is_disconnected_others_unaffected(make_server):
    server = make_server("--idle-timeout", "1")
    slow = server.connect()
    slow_closed = threading.Event()
    closed_after = []
    started = time.monotonic()

    def trickle():
        # one byte every 0.2 s: the packet never completes within 1 s
        try:
            for _ in range(int(scaled(10) / 0.2)):
                slow.send(b"s")
                time.sleep(0.2)
        except OSError:
            closed_after.append(time.monotonic() - started)
            slow_closed.set()

    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        # meanwhile a well-behaved client keeps one connection for longer
        # than the idle timeout, one complete packet every 0.2 s
        expected = b""
        with server.connect() as good:
            for i in range(15):
                packet = b"good %d\n" % i
                expected += packet
                good.sendall(packet)
                assert recv_exactly(good, len(expected)) == expected
                time.sleep(0.2)
        server.wait_log(r"Disconnecting 127\.0\.0\.1: no complete packet "
                        r"for 1 s", timeout=3)
        assert slow_closed.wait(scaled(3)), "slow client still connected"
        # idle timeout 1 s, plus up to two sends to notice the close
        assert closed_after[0] < scaled(3), closed_after
    finally:
        slow.close()
        trickler.join(scaled(15))
    assert read_bytes(server.data_file) == expected
    assert_served(server, expected)


def test_client_that_never_reads_is_disconnected(make_server):
    server = make_server("--send-timeout", "1")
    # grow the file to 6 MB so that one response overflows the socket
    # buffers (the server's send buffer autotunes up to tcp_wmem's 4 MB)
    expected = grow_file(server, 6)

    stubborn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stubborn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # a small MSS keeps the server's send buffer small (on loopback it
    # autotunes to megabytes, which the send timeout's minimum rate of
    # 64 KiB/s would take a minute to account for)
    stubborn.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    stubborn.connect(("127.0.0.1", server.port))
    try:
        stubborn.sendall(b"never reads\n")
        expected += b"never reads\n"
        server.wait_log(r"Disconnecting 127\.0\.0\.1: it read", timeout=10)
        # the server is unaffected: others get the whole file
        with server.connect() as sock:
            sock.sendall(b"reader\n")
            expected += b"reader\n"
            assert recv_exactly(sock, len(expected), timeout=30) == expected
        # and the stubborn client gets less than its response, then EOF
        stubborn.settimeout(scaled(10))
        got = 0
        try:
            while True:
                chunk = stubborn.recv(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
        except ConnectionResetError:
            pass
        assert got < len(expected) - len(b"reader\n")
    finally:
        stubborn.close()
    assert server.proc.poll() is None


# ------------------------------------------------------------ file faults

@needs_root
def test_enospc_leaves_file_unchanged(mounts, make_server, tmp_path):
    fs = tmp_path / "small"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755",
                    "aesd-enospc", str(fs)], check=True)
    mounts.append(str(fs))
    server = make_server(data_file=fs / "aesdsocketdata")
    assert send_packet(server, b"first\n", b"first\n") == b"first\n"
    bystander = server.connect()      # connected before the failure

    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as f:
        with pytest.raises(OSError) as full:
            while True:
                f.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC

    big = b"B" * 20000 + b"\n"
    with server.connect() as sock:
        sock.sendall(big)
        assert_closed_by_server(sock)   # told by closing, no response
    server.wait_log(r"Cannot append 20001 bytes to data file \(kept at 6 "
                    r"bytes\): write: No space left on device")
    assert read_bytes(server.data_file) == b"first\n"
    assert os.path.getsize(server.data_file) == 6

    os.unlink(filler)
    bystander.sendall(b"bystander\n")
    assert recv_exactly(bystander, 16) == b"first\nbystander\n"
    bystander.close()
    expected = assert_served(server, b"first\nbystander\n")
    assert send_packet(server, big, expected + big) == expected + big
    assert server.stop() == 0


def test_efbig_leaves_file_unchanged(make_server):
    limit = 64 * 1024
    server = make_server(preexec_fn=file_size_limit(limit))
    assert send_packet(server, b"first\n", b"first\n") == b"first\n"

    crossing = b"C" * limit + b"\n"
    with server.connect() as sock:
        sock.sendall(crossing)
        assert_closed_by_server(sock)
    server.wait_log(rf"Cannot append {limit + 1} bytes to data file \(kept "
                    r"at 6 bytes\): write: File too large")
    assert read_bytes(server.data_file) == b"first\n"
    assert server.proc.poll() is None
    expected = assert_served(server, b"first\n")
    fits = b"F" * 1000 + b"\n"
    assert send_packet(server, fits, expected + fits) == expected + fits
    assert server.stop() == 0


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_append_torn_by_a_killed_worker_is_cut_back(make_server, tmp_path):
    """A worker dies between a short write and cutting it back: the next
    append, by any worker, removes the torn bytes first."""
    limit = 64 * 1024
    server = make_server(preexec_fn=file_size_limit(limit))
    assert send_packet(server, b"first\n", b"first\n") == b"first\n"

    doomed = server.connect()
    doomed.sendall(b"T")
    wait_server_read_everything(server, doomed)
    worker = worker_serving(server, doomed)
    # The packet crosses RLIMIT_FSIZE: write() stores part of it, the next
    # write() fails, and the worker is killed as it calls ftruncate().
    with strace_injecting(worker, tmp_path / "strace.out",
                          *KILL_AT_FTRUNCATE) as tracer:
        doomed.sendall(b"T" * (limit - 1) + b"\n")
        assert_closed_by_server(doomed)
        wait_until(lambda: not proc_exists(worker), scaled(10),
                   what="the traced worker to die")
        assert tracer.wait(timeout=scaled(10)) is not None
    doomed.close()
    server.wait_log(rf"Worker {worker} killed by signal 9")
    # the torn bytes are really there: the scenario happened
    assert os.path.getsize(server.data_file) == limit
    assert read_bytes(server.data_file).startswith(b"first\nTTTT")

    after = b"after\n"
    assert send_packet(server, after, b"first\n" + after) == b"first\n" + after
    server.wait_log(TORN_APPEND_CUT_BACK.format(size=6))
    assert read_bytes(server.data_file) == b"first\n" + after
    assert server.stop() == 0


@pytest.mark.skipif(UNDER_VALGRIND,
                    reason="the injected write error could hit valgrind's own log")
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_eio_on_append_leaves_file_unchanged(make_server, tmp_path):
    server = make_server()
    assert send_packet(server, b"first\n", b"first\n") == b"first\n"
    unlucky = server.connect()
    unlucky.sendall(b"lost")
    wait_server_read_everything(server, unlucky)
    worker = worker_serving(server, unlucky)
    # the worker's next write() is the append: it fails with EIO
    try:
        with strace_injecting(worker, tmp_path / "strace.out",
                              "-e", "trace=write",
                              "-e", "inject=write:error=EIO:when=1"):
            unlucky.sendall(b" to EIO\n")
            assert_closed_by_server(unlucky)
            server.wait_log(r"Cannot append 12 bytes to data file \(kept at "
                            r"6 bytes\): write: Input/output error")
    finally:
        unlucky.close()
    assert read_bytes(server.data_file) == b"first\n"
    assert pid_alive(worker)
    assert_served(server, b"first\n")


# ------------------------------------------------ signals and the workers

def test_sigterm_under_64_busy_clients(make_server):
    """64 clients each sending packets as fast as they are answered: a
    SIGTERM stops the server within a second, exit status 0, the data
    file removed, every worker reaped."""
    clients = 64
    server = make_server()
    stop = threading.Event()
    terminating = threading.Event()
    served = [0] * clients
    errors = []

    def busy(i):
        try:
            with server.connect(timeout=30) as sock:
                n = 0
                while not stop.is_set():
                    packet = b"c%02d-%d\n" % (i, n)
                    sock.sendall(packet)
                    recv_until_suffix(sock, packet, timeout=30)
                    served[i] += 1
                    n += 1
        except OSError as e:     # the server going away is expected
            if not terminating.is_set():
                errors.append(f"client {i}: {e!r}")
        except AssertionError:   # closed mid-response by the stop
            pass

    threads = [threading.Thread(target=busy, args=(i,))
               for i in range(clients)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: all(served), scaled(30), interval=0.05,
                   what=f"all {clients} clients to be served once")
        workers = server.workers()
        assert workers

        terminating.set()
        stop_requested = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        status = server.proc.wait(timeout=scaled(10))
        took = time.monotonic() - stop_requested
        stop.set()
    finally:
        stop.set()
        for t in threads:
            t.join(scaled(30))
    assert status == 0
    assert took < scaled(1.0), f"exit took {took:.2f} s"
    assert not errors, errors
    assert not os.path.exists(server.data_file)
    # reaped by the server itself before it exited: no orphan, no zombie
    assert [p for p in workers if proc_exists(p)] == []
    log = server.log()
    assert "Caught signal, exiting" in log
    # workers stopped mid-turn end quietly: a clean stop logs no error
    assert "did not stop" not in log
    assert "exited unasked" not in log


def test_1000_idle_clients_cost_no_process(make_server):
    """1000 idle connections are held by the workers' event loops: the
    workers stay the same processes, a client with a packet is served
    within a second meanwhile, and the idle ones are still served."""
    raise_nofile(4096)
    server = make_server("--idle-timeout", "0")
    workers = wait_workers(server, worker_count(server))
    idle = []
    try:
        accepted = server.log().count("Accepted connection")
        for _ in range(1000):
            idle.append(server.connect(timeout=10))
        server.wait_log("Accepted connection", count=accepted + 1000,
                        timeout=10)
        assert sorted(server.workers()) == sorted(workers)

        with server.connect() as late:
            late.sendall(b"late\n")
            assert recv_exactly(late, 5, timeout=1) == b"late\n"
        expected = b"late\n"
        for i in range(0, 1000, 100):   # and the idle ones are still served
            packet = b"idle %d\n" % i
            expected += packet
            idle[i].sendall(packet)
            assert recv_exactly(idle[i], len(expected)) == expected
        assert sorted(server.workers()) == sorted(workers)
    finally:
        for sock in idle:
            sock.close()
    assert_served(server, expected)
    assert server.stop() == 0


def server_connections(server):
    """Connections the server has accepted (an inode: a descriptor), by
    the client's port."""
    return {remote for local, remote, state, _, inode in tcp_entries()
            if local == server.port and inode and state == ESTABLISHED}


def test_max_connections_closes_the_longest_idle_to_make_room(make_server):
    """--max-connections bounds the connections open at once: when all
    are idle after an exchange, a new client gets in once the longest-idle
    one has been idle for a second, and that one is closed (logged)."""
    server = make_server("--max-connections", "50", "--idle-timeout", "0",
                         "--workers", "1")
    first = server.connect()        # the longest idle
    first.sendall(b"first\n")
    assert recv_exactly(first, 6) == b"first\n"
    first_idle_since = time.monotonic()
    idle = []
    try:
        for i in range(49):
            sock = server.connect()
            packet = b"idle %02d\n" % i
            sock.sendall(packet)
            recv_until_suffix(sock, packet)
            idle.append(sock)
        assert len(server_connections(server)) <= 50
        with server.connect() as late:
            late.sendall(b"late\n")
            assert recv_until_suffix(late, b"late\n").endswith(b"late\n")
            answered = time.monotonic()
        assert answered - first_idle_since >= 1.0, \
            "a connection idle for less than a second was closed"
        server.wait_log(r"Closing idle connection from 127\.0\.0\.1 to make "
                        r"room \(50 open\)")
        assert_closed_by_server(first)
        assert len(server_connections(server)) <= 50
        assert server.log().count("Closing idle connection") == 1
        # the others are still open and served
        packet = b"still here\n"
        idle[0].sendall(packet)
        assert recv_until_suffix(idle[0], packet).endswith(packet)
    finally:
        first.close()
        for sock in idle:
            sock.close()


def test_max_connections_all_busy_makes_new_clients_wait(make_server):
    """When every open connection has a packet in flight, none can be
    closed: a new client waits in the listen backlog until one ends."""
    server = make_server("--max-connections", "2", "--idle-timeout", "0")
    busy = [server.connect() for _ in range(2)]
    try:
        for i, sock in enumerate(busy):
            sock.sendall(b"busy %d" % i)    # no newline: in flight
        for sock in busy:
            wait_server_read_everything(server, sock)
        late = server.connect()
        late.sendall(b"late\n")
        # more than the second after which an idle one could be closed
        late.settimeout(1.5)
        with pytest.raises(socket.timeout):
            late.recv(100)
        assert "Closing idle connection" not in server.log()
        busy[0].close()                 # one ends: the late one gets in
        assert recv_exactly(late, 5, timeout=10) == b"late\n"
        late.close()
    finally:
        for sock in busy:
            sock.close()


# ------------------------------------------------- pidfile and data path

def test_stale_pidfile_is_overwritten(make_server, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = tmp_path / "aesdsocket.pid"
    pidfile.write_text(f"{dead.pid}\n")

    server = make_server("--pidfile", str(pidfile))
    assert pidfile.read_text() == f"{server.proc.pid}\n"
    assert server.stop() == 0
    assert not pidfile.exists()


def test_stale_pidfile_is_overwritten_by_daemon(make_server, tmp_path):
    pidfile = tmp_path / "aesdsocket.pid"
    pidfile.write_text("2147483646\n")     # above pid_max: surely dead
    server = make_server("-d", "--pidfile", str(pidfile), start=False)
    server.start(wait=False)
    daemon = None
    try:
        assert server.proc.wait(timeout=scaled(10)) == 0
        daemon = int(pidfile.read_text())
        assert daemon != server.proc.pid and pid_alive(daemon)
        assert_served(server, b"")
    finally:
        server.stderr_file.close()
        if daemon and pid_alive(daemon):
            os.kill(daemon, signal.SIGTERM)
            wait_until(lambda: not pid_alive(daemon), scaled(10),
                       what="daemon to exit")
    wait_until(lambda: not pidfile.exists(), scaled(5),
               what="pidfile removal")
    assert not os.path.exists(server.data_file)


def plant_victim(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    os.utime(victim, (1000000000, 1000000000))
    return victim


def assert_victim_untouched(victim):
    assert victim.read_bytes() == b"precious\n"
    assert victim.stat().st_mtime == 1000000000
    assert victim.stat().st_nlink >= 1


def test_symlink_at_data_path_is_refused(make_server, tmp_path):
    victim = plant_victim(tmp_path)
    link = tmp_path / "aesdsocketdata"
    link.symlink_to(victim)
    server = make_server(data_file=link, start=False)
    status, log = expect_start_failure(server)
    assert status not in (0, None)
    assert "Refusing data file" in log and "symbolic link" in log
    assert_victim_untouched(victim)
    assert link.is_symlink() and os.readlink(link) == str(victim)


def test_dangling_symlink_at_data_path_creates_nothing(make_server, tmp_path):
    target = tmp_path / "created-through-link"
    link = tmp_path / "aesdsocketdata"
    link.symlink_to(target)
    server = make_server(data_file=link, start=False)
    status, log = expect_start_failure(server)
    assert status not in (0, None)
    assert "Refusing data file" in log
    assert not target.exists()
    assert link.is_symlink()


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "hard link"])
def test_planted_pidfile_is_refused(make_server, tmp_path, kind):
    victim = plant_victim(tmp_path)
    pidfile = tmp_path / "aesdsocket.pid"
    if kind == "symlink":
        pidfile.symlink_to(victim)
    elif kind == "dangling symlink":
        pidfile.symlink_to(tmp_path / "created-through-link")
    else:
        os.link(victim, pidfile)
    server = make_server("--pidfile", str(pidfile), start=False)
    status, log = expect_start_failure(server)
    assert status not in (0, None)
    assert "pidfile" in log
    assert_victim_untouched(victim)
    assert not (tmp_path / "created-through-link").exists()
    # the failed start cleaned up its own data file, and only that
    assert not os.path.exists(server.data_file)
    assert pidfile.is_symlink() or pidfile.stat().st_nlink == 2


def test_missing_data_directory_is_a_clear_error(make_server, tmp_path):
    server = make_server(data_file=tmp_path / "missing" / "aesdsocketdata",
                         start=False)
    status, log = expect_start_failure(server)
    assert status not in (0, None)
    assert "Cannot create data file" in log
    assert "No such file or directory" in log
    assert not (tmp_path / "missing").exists()


@needs_root
def test_read_only_data_directory_is_a_clear_error(mounts, make_server,
                                                   tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)
    mounts.append(str(ro))
    subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
    server = make_server(data_file=ro / "aesdsocketdata", start=False)
    status, log = expect_start_failure(server)
    assert status not in (0, None)
    assert "Cannot create data file" in log
    assert "Read-only file system" in log


# ------------------------------------------------------------- privileges

@needs_root
@pytest.mark.skipif(UNDER_VALGRIND and wrapper_log_dir_is_private(),
                    reason="valgrind's --log-file directory is not writable "
                           "by nobody (chmod 1777 it)")
def test_user_drops_root_in_every_process(make_server):
    nobody = pwd.getpwnam("nobody")
    # like /var/tmp: world-writable and sticky, reachable by the user
    shared = tempfile.mkdtemp(prefix="aesd-user-", dir="/tmp")
    try:
        os.chmod(shared, 0o1777)
        data_file = os.path.join(shared, "aesdsocketdata")
        server = make_server("--user", "nobody", data_file=data_file)
        assert os.stat(data_file).st_uid == nobody.pw_uid
        assert_served(server, b"")

        def credentials(pid):
            return (status_field(pid, "Uid"), status_field(pid, "Gid"),
                    status_field(pid, "Groups"))
        as_nobody = ([str(nobody.pw_uid)] * 4, [str(nobody.pw_gid)] * 4, [])

        # every process that touches a client runs as the user; the
        # supervising parent (no client I/O) keeps root to clean up.  A
        # worker drops root before it sets up its event loop, so every
        # serving worker has, and so has one forked later.
        assert status_field(server.proc.pid, "Uid") == ["0"] * 4
        with server.connect() as client:
            client.sendall(b"in flight")
            serving = worker_serving(server, client)
            assert credentials(serving) == as_nobody, serving
        workers = wait_workers(server, worker_count(server))
        os.kill(workers[0], signal.SIGKILL)
        workers = wait_workers(server, len(workers), exclude=workers[:1])
        for pid in workers:
            assert credentials(pid) == as_nobody, pid
        assert server.stop() == 0
        assert not os.path.exists(data_file)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@needs_root
@pytest.mark.skipif(UNDER_VALGRIND and wrapper_log_dir_is_private(),
                    reason="valgrind's --log-file directory is not writable "
                           "by nobody (chmod 1777 it)")
def test_user_removes_pidfile_at_exit(make_server):
    # the data file where the init script puts it (/var/tmp: sticky,
    # world-writable), the pidfile too (/var/run: root's, 0755)
    shared = tempfile.mkdtemp(prefix="aesd-user-", dir="/tmp")
    run = tempfile.mkdtemp(prefix="aesd-run-", dir="/tmp")
    try:
        os.chmod(shared, 0o1777)
        os.chmod(run, 0o755)
        data_file = os.path.join(shared, "aesdsocketdata")
        pidfile = os.path.join(run, "aesdsocket.pid")
        server = make_server("--user", "nobody", "--pidfile", pidfile,
                             data_file=data_file)
        with open(pidfile) as f:
            assert f.read() == f"{server.proc.pid}\n"
        assert_served(server, b"")
        assert server.stop() == 0
        assert not os.path.exists(data_file)
        assert "Cannot remove pidfile" not in server.log()
        assert not os.path.exists(pidfile)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)
