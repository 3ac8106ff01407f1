"""Privilege separation (issue 9, item 2), attacked as root from outside.

A worker is where client bytes are parsed, so the tests play a compromised
worker: they write into its memory, or speak on its channel to the parent,
and check that the root parent signals nothing it should not, stays up,
serves, and keeps to --max-workers.  And --user must work under the
systemd unit's capability bounding set.
"""
import ctypes
import os
import pwd
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from server_harness import (IS_ROOT, UNDER_VALGRIND, assert_served,
                            fd_targets, live_children, read_bytes, scaled,
                            shared_tmp_dir, socket_inode, status_field,
                            unix_socket_types, wait_server_read_everything,
                            wait_until, worker_serving,
                            wrapper_log_dir_is_private)

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")

SOCK_SEQPACKET_TYPE = 5
SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438
libc = ctypes.CDLL(None, use_errno=True)


def stop_and_wait(server, timeout=10.0):
    """SIGTERM; the exit status, or "hung" if the server did not exit."""
    server.proc.send_signal(signal.SIGTERM)
    try:
        return server.proc.wait(timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        return "hung"
    finally:
        server.stderr_file.close()


@pytest.fixture
def victim():
    """A process of the test's own that nobody has a reason to signal,
    in a session of its own (so a negative pid names its group only)."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


# ------------------------------------------------ worker-writable memory

def shared_writable_mappings(pid):
    """(start, end) of every writable MAP_SHARED mapping of a process."""
    found = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            perms = fields[1]
            if perms[1] == "w" and perms[3] == "s":
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found.append((start, end))
    return found


def fill_with(pid, start, end, value):
    word = struct.pack("=i", value)
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        mem.write(word * ((end - start) // len(word)))


@needs_root
@pytest.mark.skipif(UNDER_VALGRIND,
                    reason="valgrind keeps shared mappings of its own in every "
                           "process; overwriting those breaks valgrind")
def test_worker_memory_cannot_aim_the_parents_signals(make_server, victim):
    """Whatever a (compromised) worker writes into memory it shares, the
    root parent does not signal the pid written there.  Today the workers'
    MAP_SHARED scoreboard holds the pids the parent kill()s at the stop."""
    server = make_server()
    expected = assert_served(server, b"")
    written = []
    for worker in live_children(server.proc.pid):
        for start, end in shared_writable_mappings(worker):
            fill_with(worker, start, end, victim.pid)
            written.append((worker, hex(start), end - start))
    status = stop_and_wait(server)
    time.sleep(0.2)
    assert victim.poll() is None, \
        f"the parent signalled the pid written into {written}"
    assert status == 0
    assert not os.path.exists(server.data_file)
    print(f"overwrote {written}, served {len(expected)} bytes")


# --------------------------------------------------- forged channel messages

def pidfd_getfd(pid, fd):
    """A duplicate of another process's descriptor (needs ptrace access)."""
    pidfd = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        raise OSError(ctypes.get_errno(), f"pidfd_open({pid})")
    try:
        dup = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            raise OSError(ctypes.get_errno(), f"pidfd_getfd({pid}, {fd})")
        return dup
    finally:
        os.close(pidfd)


def channel_of(worker):
    """A duplicate of the worker's end of its channel to the parent: its
    AF_UNIX SOCK_SEQPACKET socket.  None if it has none (or is gone)."""
    types = unix_socket_types()
    for fd, target in sorted(fd_targets(worker).items()):
        inode = socket_inode(target)
        if inode is not None and types.get(inode) == SOCK_SEQPACKET_TYPE:
            try:
                dup = pidfd_getfd(worker, fd)
            except OSError:
                return None
            return socket.socket(fileno=dup)
    return None


def channels_of_workers(server, exclude=()):
    """{worker: duplicate of its channel} for every live worker."""
    found = {}
    for worker in live_children(server.proc.pid):
        if worker in exclude:
            continue
        channel = channel_of(worker)
        if channel is not None:
            channel.setblocking(False)
            found[worker] = channel
    return found


def peek_assignment(server, client, packet):
    """The message the parent sends a worker to hand it a connection.
    Every worker is stopped, so the one the parent picks leaves the
    message in its channel, where the test reads it without taking it."""
    workers = live_children(server.proc.pid)
    channels = channels_of_workers(server)
    for worker in workers:
        os.kill(worker, signal.SIGSTOP)
    message = None
    try:
        client.sendall(packet)

        def peeked():
            nonlocal message
            for channel in channels.values():
                try:
                    message = channel.recv(65536, socket.MSG_PEEK)
                    return True
                except BlockingIOError:
                    continue
            return False
        wait_until(peeked, scaled(5), what="the parent to hand the connection "
                                           "to a (stopped) worker")
    finally:
        for worker in workers:
            os.kill(worker, signal.SIGCONT)
        for channel in channels.values():
            channel.close()
    return message


def with_word(message, index, value):
    """message with its index-th 32-bit word replaced."""
    word = struct.pack("=i", value)
    return message[:4 * index] + word + message[4 * index + 4:]


def lies(template, victim_pid, rng):
    """What a compromised worker may say, a list of messages per liar: the
    parent may stop listening to a liar after its first bad message.  The
    template is a real message (parent to worker) of the channel's fixed
    size, its first word taken as the command, as in nginx's ngx_channel_t:
    with command words 0..4 it is a report (READY, IDLE, CLOSE, ...) about
    a connection this worker does not hold."""
    size = len(template)
    victim_filled = struct.pack("=i", victim_pid) * (size // 4)
    for command in range(5):
        yield [(with_word(template, 0, command), None)]
    yield [(with_word(victim_filled, 0, 2), None), (victim_filled, None)]
    yield [(template[:-1], None), (template + b"\0", None), (b"", None),
           (b"\xff" * 4096, None)]
    yield [(rng.randbytes(size), None) for _ in range(20)]
    yield [(with_word(template, 0, 1), "fd"), (with_word(template, 0, 2), "fd")]
    yield [(with_word(template, 0, n % 5), None) for n in range(20000)]


def tell(channel, message, fd):
    """Sends one forged message; False once the parent has hung up."""
    try:
        if fd is None:
            channel.send(message)
        else:
            channel.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                         struct.pack("=i", fd))])
        return True
    except BlockingIOError:
        time.sleep(0.001)           # the parent reads at its own pace
        return True
    except OSError:
        return False


@needs_root
def test_forged_channel_messages_cannot_steer_the_parent(make_server, victim,
                                                         tmp_path):
    """A compromised worker speaks on its channel: garbage, wrong sizes,
    reports about connections it does not hold (the victim's pid in every
    field), descriptors, floods.  The parent stays up, keeps serving
    (the connections other workers hold included), signals no process of
    ours, keeps no descriptor it was sent, and never runs more than
    --max-workers workers."""
    max_workers = 4
    server = make_server("--max-workers", str(max_workers),
                         preexec_fn=os.setsid)   # kill(0) would hit only it
    pid = server.proc.pid
    expected = assert_served(server, b"")
    probe = channels_of_workers(server)
    if not probe:
        pytest.skip("the workers have no AF_UNIX SOCK_SEQPACKET channel to "
                    "the parent (the process model before issue 9)")
    for channel in probe.values():
        channel.close()

    held = server.connect()         # idle after this, held by the parent
    template = peek_assignment(server, held, b"held\n")
    expected += b"held\n"
    assert held.recv(len(expected), socket.MSG_WAITALL) == expected
    busy = server.connect()         # in flight on a worker meanwhile
    busy.sendall(b"in flight")
    wait_server_read_everything(server, busy)
    busy_worker = worker_serving(server, busy)
    fds_before = len(fd_targets(pid))

    most_workers = [0]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            most_workers[0] = max(most_workers[0], len(live_children(pid)))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    spare = os.open(tmp_path / "passed", os.O_RDWR | os.O_CREAT)
    told = 0
    try:
        for lie in lies(template, victim.pid, random.Random(9)):
            # a liar: any worker but the one serving `busy`; replacements
            # for the liars the parent stopped may take a while (the brake)
            liars = {}
            wait_until(lambda: liars.update(channels_of_workers(
                server, exclude=(busy_worker,))) or liars, scaled(20),
                what="a worker to lie through")
            channel = next(iter(liars.values()))
            for message, fd in lie:
                if not tell(channel, message, spare if fd else None):
                    break
                told += 1
            for channel in liars.values():
                channel.close()
        time.sleep(0.5)
        assert server.proc.poll() is None, "the parent died"
        assert victim.poll() is None, "the parent signalled a process of ours"
        # the connections that other workers hold, or the parent, still work
        busy.sendall(b"\n")
        expected += b"in flight\n"
        assert busy.recv(len(expected), socket.MSG_WAITALL) == expected
        held.sendall(b"held again\n")
        expected += b"held again\n"
        assert held.recv(len(expected), socket.MSG_WAITALL) == expected
        for _ in range(3):
            expected = assert_served(server, expected)
        assert len(fd_targets(pid)) <= fds_before + 10, \
            "the parent kept descriptors a worker sent it"
    finally:
        os.close(spare)
        busy.close()
        held.close()
        sampling.set()
        sampler.join()
    assert most_workers[0] <= max_workers
    assert stop_and_wait(server) == 0
    assert victim.poll() is None, "the parent signalled a process of ours"
    print(f"{told} forged messages of {len(template)} bytes told")


# ----------------------------------------- --user under the unit's bounding set

CAP_CHOWN, CAP_SETGID, CAP_SETUID = 0, 6, 7
UNIT_BOUNDING_SET = ["setpriv", "--bounding-set", "-all,+setuid,+setgid,+chown",
                     "--"]


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
@pytest.mark.skipif(UNDER_VALGRIND and wrapper_log_dir_is_private(),
                    reason="valgrind's --log-file directory is not writable "
                           "by nobody (chmod 1777 it)")
def test_user_works_under_the_units_capability_bounding_set(make_server):
    """aesdsocket.service keeps CapabilityBoundingSet=CAP_SETUID CAP_SETGID
    CAP_CHOWN: with --user nobody the service starts, serves from workers
    running as nobody, writes its data file and removes it at exit."""
    nobody = pwd.getpwnam("nobody")
    shared = shared_tmp_dir()
    try:
        data_file = os.path.join(shared, "aesdsocketdata")
        server = make_server("--user", "nobody", data_file=data_file,
                             prefix=UNIT_BOUNDING_SET)
        bounding = int(status_field(server.proc.pid, "CapBnd")[0], 16)
        assert bounding == (1 << CAP_CHOWN) | (1 << CAP_SETGID) | (1 << CAP_SETUID)

        expected = assert_served(server, b"")
        as_nobody = [str(nobody.pw_uid)] * 4
        with server.connect() as client:
            client.sendall(b"in fli")       # work in flight: a worker has it
            serving = worker_serving(server, client)
            assert status_field(serving, "Uid") == as_nobody
            client.sendall(b"ght\n")
            expected += b"in flight\n"
            assert client.recv(len(expected), socket.MSG_WAITALL) == expected

        def all_nobody():
            workers = live_children(server.proc.pid)
            try:
                return workers and all(status_field(w, "Uid") == as_nobody
                                       for w in workers)
            except (OSError, AssertionError):
                return False        # one exited meanwhile: look again
        wait_until(all_nobody, scaled(5), what="every worker to run as nobody")
        assert read_bytes(data_file) == expected
        assert server.stop() == 0
        assert not os.path.exists(data_file)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
