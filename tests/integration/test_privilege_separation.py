"""Privilege separation (issues 9 and 14), attacked as root from outside.

A worker is where client bytes are parsed, so the tests play a compromised
worker: they write into the memory it shares, and check that the root
parent signals nothing it should not, stays up and serves.  Each worker is
restricted (no_new_privs, no core dumps, descriptors limited to its share
of -c), and --user works, and stops, under the systemd unit's capability
bounding set.
"""
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

from server_harness import (IS_ROOT, ROOT, UNDER_VALGRIND, assert_served,
                            live_children, proc_exists, read_bytes, scaled,
                            shared_tmp_dir, status_field, stop_process,
                            wait_until, wait_workers, worker_count,
                            worker_serving,
                            wrapper_log_dir_is_private)

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


def stop_and_wait(server, timeout=10.0):
    """SIGTERM; the exit status, or "hung" if the server did not exit."""
    server.proc.send_signal(signal.SIGTERM)
    try:
        return server.proc.wait(timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        return "hung"
    finally:
        server.stderr_file.close()


BLOCK_EVERY_SIGNAL = ("import signal, sys, time; "
                      "signal.pthread_sigmask(signal.SIG_BLOCK, "
                      "signal.valid_signals()); "
                      "print(flush=True); time.sleep(600)")


@pytest.fixture
def victim():
    """A process of the test's own that nobody has a reason to signal,
    in a session of its own (so a negative pid names its group only).  It
    blocks every signal it can: one sent to it stays pending, visible at
    once (SIGKILL: pending until it has died, then a zombie)."""
    proc = subprocess.Popen(["/usr/bin/python3", "-c", BLOCK_EVERY_SIGNAL],
                            start_new_session=True, stdout=subprocess.PIPE)
    proc.stdout.readline()          # blocking from now on
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


def signalled(proc):
    """True if any signal has been sent to proc since it blocked them."""
    with open(f"/proc/{proc.pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return (fields["State"].split()[0] in ("Z", "X", "T") or
            int(fields["SigPnd"], 16) != 0 or int(fields["ShdPnd"], 16) != 0)


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
    """Whatever a (compromised) worker writes into memory it shares (the
    workers' census of open connections, the data file's append marker),
    the root parent does not signal the pid written there, and the
    service goes on.  (Issue 9's parent kill()ed pids from a shared
    scoreboard at the stop.)"""
    server = make_server()
    expected = assert_served(server, b"")
    written = []
    for worker in live_children(server.proc.pid):
        for start, end in shared_writable_mappings(worker):
            fill_with(worker, start, end, victim.pid)
            written.append((worker, hex(start), end - start))
    assert written, "no shared memory to write into"
    expected = assert_served(server, expected)
    assert read_bytes(server.data_file) == expected
    status = stop_and_wait(server)
    assert not signalled(victim), \
        f"the parent signalled the pid written into {written}"
    assert status == 0
    assert not os.path.exists(server.data_file)
    print(f"overwrote {written}, served {len(expected)} bytes")


# ----------------------------------------- --user under the unit's bounding set

# ---------------------------------------------- what a worker may do

def limits(pid):
    """{name: (soft, hard)} from /proc/pid/limits."""
    found = {}
    with open(f"/proc/{pid}/limits") as f:
        for line in f.read().splitlines()[1:]:
            parts = re.split(r"\s{2,}", line.strip())
            found[parts[0]] = (parts[1], parts[2])
    return found


def test_workers_are_restricted(make_server):
    """-c 10 -w 3: each worker runs with no_new_privs, no core dumps, and
    a descriptor limit of what the service's connections need (any worker
    may hold all 10, and one more while it closes an idle one in its
    place) plus an eventfd per worker and 16: 30; a worker forked later
    too.  A client that takes a worker over gains no privilege through
    exec, leaves no core with others' bytes, and cannot open more
    descriptors than the connections need."""
    server = make_server("-c", "10", "-w", "3")
    workers = wait_workers(server, 3)
    os.kill(workers[0], signal.SIGKILL)
    workers = wait_workers(server, 3, exclude=workers[:1])
    files = []
    for worker in workers:
        assert status_field(worker, "NoNewPrivs") == ["1"], worker
        mine = limits(worker)
        assert mine["Max core file size"] == ("0", "0"), worker
        files.append(mine["Max open files"])
    # valgrind keeps RLIMIT_NOFILE to itself: /proc shows its own
    if not UNDER_VALGRIND:
        assert files == [("30", "30")] * 3
    assert_served(server, b"")


# ----------------------------------------- --user under the unit's bounding set

CAPABILITIES = [
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill",
    "setgid", "setuid", "setpcap", "linux_immutable", "net_bind_service",
    "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
    "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time",
    "sys_tty_config", "mknod", "lease", "audit_write", "audit_control",
    "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
    "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore"]
UNIT_FILE = os.path.join(ROOT, "server", "aesdsocket.service")


def unit_setting(name):
    """The words of the unit file's last "name=" line (every line of it,
    for a setting that adds up, like CapabilityBoundingSet=)."""
    words = []
    with open(UNIT_FILE) as f:
        for line in f:
            if line.startswith(name + "="):
                words += line.split("=", 1)[1].split()
    return words


def unit_bounding_set():
    """The capability names (lower case, no "cap_") the unit keeps; the
    setting must be there (without it, a unit keeps every capability)."""
    with open(UNIT_FILE) as f:
        assert re.search(r"^CapabilityBoundingSet=", f.read(), re.M)
    names = [w.lower().removeprefix("cap_")
             for w in unit_setting("CapabilityBoundingSet")]
    assert not any(n.startswith("~") for n in names), \
        "a bounding set this test cannot read"
    assert set(names) <= set(CAPABILITIES), names
    return names


def unit_prefix():
    """setpriv as systemd starts the unit: as its User= (nobody stands in
    for aesd, which this host may not have), with no supplementary group,
    its capability bounding set and its no_new_privs."""
    assert unit_setting("User") == ["aesd"]
    nobody = pwd.getpwnam("nobody")
    caps = "".join(",+" + n for n in unit_bounding_set())
    prefix = ["setpriv", f"--reuid={nobody.pw_uid}",
              f"--regid={nobody.pw_gid}", "--clear-groups",
              f"--bounding-set=-all{caps}"]
    if unit_setting("NoNewPrivileges") == ["yes"]:
        prefix.append("--no-new-privs")
    return prefix + ["--"]


needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None,
                                   reason="needs setpriv")
nobody_can_log = pytest.mark.skipif(
    UNDER_VALGRIND and wrapper_log_dir_is_private(),
    reason="valgrind's --log-file directory is not writable by nobody "
           "(chmod 1777 it)")


@needs_root
@needs_setpriv
@nobody_can_log
def test_user_works_under_the_units_capability_bounding_set(make_server):
    """Run as the unit runs it (as its user, with its capability bounding
    set, read from aesdsocket.service: none) and with --user naming that
    same user, as /etc/default/aesdsocket does (a no-op then), the service
    starts, serves from workers running as that user, writes its data
    file and removes it at exit: nothing runs as root."""
    nobody = pwd.getpwnam("nobody")
    shared = shared_tmp_dir()
    try:
        data_file = os.path.join(shared, "aesdsocketdata")
        server = make_server("--user", "nobody", data_file=data_file,
                             prefix=unit_prefix())
        bounding = int(status_field(server.proc.pid, "CapBnd")[0], 16)
        assert bounding == sum(1 << CAPABILITIES.index(n)
                               for n in unit_bounding_set())
        assert status_field(server.proc.pid, "Uid") == \
            [str(nobody.pw_uid)] * 4

        expected = assert_served(server, b"")
        as_nobody = [str(nobody.pw_uid)] * 4
        with server.connect() as client:
            client.sendall(b"in fli")
            serving = worker_serving(server, client)
            assert status_field(serving, "Uid") == as_nobody
            client.sendall(b"ght\n")
            expected += b"in flight\n"
            assert client.recv(len(expected), socket.MSG_WAITALL) == expected
        for worker in wait_workers(server, worker_count(server)):
            assert status_field(worker, "Uid") == as_nobody, worker
        assert read_bytes(data_file) == expected
        assert server.stop() == 0
        assert not os.path.exists(data_file)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


STOP_GRACE = 5      # the parent kills workers still there after 5 s


@needs_root
@needs_setpriv
@nobody_can_log
@pytest.mark.parametrize("hung", [False, True], ids=["running", "one-stopped"])
def test_stop_under_the_units_bounding_set_ends_every_worker(make_server,
                                                             hung):
    """Run as the unit runs it (as its user, no capabilities), SIGTERM to
    the parent ends every worker, also one that is SIGSTOPped and so
    cannot see the lifeline close: it must be gone within the stop grace
    period (then killed) plus slack, and the parent exits 0.  (The parent
    kills a worker of its own user: no CAP_KILL needed.)"""
    shared = shared_tmp_dir()
    server = None
    workers = []
    try:
        data_file = os.path.join(shared, "aesdsocketdata")
        server = make_server("--user", "nobody", "--workers", "3",
                             data_file=data_file, prefix=unit_prefix())
        workers = wait_workers(server, 3)
        assert_served(server, b"")
        if hung:
            stop_process(workers[1])
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        limit = STOP_GRACE + scaled(3) if hung else scaled(3)
        try:
            wait_until(lambda: not any(proc_exists(w) for w in workers),
                       limit, interval=0.05, what="every worker to end")
        except AssertionError:
            left = [w for w in workers if proc_exists(w)]
            raise AssertionError(
                f"workers {left} still there {limit:.0f} s after the stop "
                f"(bounding set {unit_bounding_set()}):\n{server.log()}")
        took = time.monotonic() - started
        assert server.proc.wait(timeout=scaled(10)) == 0
        assert not os.path.exists(data_file)
        print(f"every worker gone {took:.1f} s after SIGTERM")
    finally:
        for worker in workers:
            if proc_exists(worker):
                os.kill(worker, signal.SIGKILL)
        shutil.rmtree(shared, ignore_errors=True)
