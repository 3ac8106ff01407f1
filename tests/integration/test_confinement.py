"""Confinement (issue 19): a worker taken over by a client reaches nothing
it does not need.

Played from outside with a real debugger, with no test-only code in the
server: gdb attaches to a serving worker and makes it call, one call per
test, what a client that had taken it over would.  Each call must fail or
kill that worker, and whatever it does: a listener the test runs sees no
connection, the sibling worker and the parent are untouched (the same
pids, neither stopped nor traced), the sibling's client is still served,
a fresh client is answered within 1 s, and the data file holds exactly the
packets the clients sent.  A worker the filter kills is logged by the
parent with its pid and the call's name, and replaced.

Every test runs with the workers as root (no --user) and as nobody.  On
the server before the filter (main at c3ecc83) the first seven calls
succeed, with either user; the last three (kill of the parent, ptrace of
the sibling, setuid(0)) the kernel already refuses to nobody, and they
must stay refused.  Not under valgrind, whose stage runs without the
filter (valgrind makes the system calls itself).
"""
import collections
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import time

import pytest

from server_harness import (UNDER_VALGRIND, assert_served, connect_on,
                            fd_targets, log_lines, proc_exists, process_state,
                            read_bytes, recv_until_suffix, scaled,
                            server_side, shared_tmp_dir, socket_inode,
                            status_field, tcp_socket_states, wait_until,
                            wait_workers)

pytestmark = [
    pytest.mark.skipif(UNDER_VALGRIND,
                       reason="the valgrind stage runs without the system "
                              "call filter (--no-syscall-filter)"),
    pytest.mark.filter_kills]

GDB = shutil.which("gdb")
EACCES, EAFNOSUPPORT = 13, 97
SIGSTOP, SIGTERM, PTRACE_ATTACH, SHUT_RD = 19, 15, 16, 0
LISTEN = 0x0A


# ------------------------------------------------------------- gdb

def gdb(pid, commands, timeout=60.0):
    """Attaches gdb to pid, runs commands, detaches; returns what they
    printed ("result 5" -> ("result", 5), in order) and gdb's output.  A
    SIGSYS goes to the worker as it would without gdb (its handler, then
    its death)."""
    assert GDB, "gdb is not installed (tests/packages/server.txt lists it)"
    argv = [GDB, "-p", str(pid), "-batch", "-nx",
            "-iex", "set debuginfod enabled off",
            "-ex", "handle SIGSYS nostop noprint pass"]
    for command in commands:
        argv += ["-ex", command]
    run = subprocess.run(argv, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=scaled(timeout))
    output = run.stdout + run.stderr
    printed = [(label, int(value)) for label, value in
               re.findall(r"^(result|errno) (-?\d+)$", output, re.M)]
    return printed, output


def call(function, signature, *args):
    """A command calling a libc function through a cast (no debug
    information needed) and printing "result N": call("kill",
    "int(*)(int,int)", 1, 19)."""
    return (f'printf "result %ld\\n", (long)(({signature}){function})'
            f"({', '.join(str(a) for a in args)})")


ERRNO = 'printf "errno %d\\n", *((int *(*)(void))__errno_location)()'
ALLOCATE = "set $m = (unsigned long long *)((void *(*)(unsigned long))malloc)"


def sockaddr_words(family, port=0, address="0.0.0.0"):
    """A struct sockaddr_in as two 64-bit words in this host's order."""
    raw = (struct.pack("=H", family) + struct.pack("!H", port) +
           socket.inet_aton(address) + bytes(8))
    return struct.unpack("=QQ", raw)


def store_sockaddr(var, family, port=0):
    """Commands that leave a sockaddr_in (127.0.0.1:port) at gdb's $var."""
    low, high = sockaddr_words(family, port, "127.0.0.1")
    return [f"{ALLOCATE}(16)", f"set ${var} = $m",
            f"set ${var}[0] = {low}", f"set ${var}[1] = {high}"]


# ---------------------------------------------------- what it reaches

def descriptor_of(pid, wanted):
    """The worker's descriptor whose socket inode satisfies wanted."""
    for fd, target in sorted(fd_targets(pid).items()):
        inode = socket_inode(target)
        if inode is not None and wanted(inode):
            return fd
    raise AssertionError(f"no such socket in {pid}: {fd_targets(pid)}")


def listening_fd(pid):
    states = tcp_socket_states()
    return descriptor_of(pid, lambda inode: states.get(inode) == LISTEN)


class Scene:
    """What one attack runs against: the server, the worker attacked and
    its sibling, a held client on each, a listener outside the server, a
    readable file, and the data file's content so far."""

    def __init__(self, server, workers, tmp):
        self.server = server
        self.victim, self.sibling = workers
        self.tmp = tmp
        self.expected = assert_served(server, b"")
        self.victim_client = connect_on(server, self.victim)
        self.sibling_client = connect_on(server, self.sibling)
        for client in (self.victim_client, self.sibling_client):
            self.exchange(client)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.secret = os.path.join(tmp, "secret")
        with open(self.secret, "w") as f:
            f.write("readable by anyone\n")
        os.chmod(self.secret, 0o644)
        self.marker = os.path.join(tmp, "a shell ran")

    def exchange(self, client):
        packet = b"packet %d\n" % time.monotonic_ns()
        client.sendall(packet)
        self.expected += packet
        assert recv_until_suffix(client, packet) == self.expected

    def listener_port(self):
        return self.listener.getsockname()[1]

    def connection_fd(self):
        """The victim's descriptor of its held client's connection."""
        inode = server_side(self.server, self.victim_client)[1]
        return descriptor_of(self.victim, lambda i: i == inode)

    def close(self):
        for sock in (self.victim_client, self.sibling_client, self.listener):
            sock.close()


def untouched(pid):
    """pid lives, neither stopped nor traced."""
    return (process_state(pid) not in (None, "Z", "T", "t") and
            status_field(pid, "TracerPid") == ["0"])


# ---------------------------------------------------------- the attacks

# commands: for gdb; printed: the values they must print (a call's result,
# errno); killed_by: the system call at which the filter kills the worker,
# which the parent names, or None when the worker must go on serving.
Attack = collections.namedtuple("Attack", "commands printed killed_by")


def open_a_file(scene):
    return Attack([call("openat", "int(*)(int,char*,int)", -100,
                        f'"{scene.secret}"', 0), ERRNO],
                  [("result", -1), ("errno", EACCES)], None)


def connect_out(scene):
    """socket(AF_INET) fails, so the connect() that follows names -1, and
    connect() is refused anyway: the worker has no use for it."""
    return Attack([call("socket", "int(*)(int,int,int)", 2, 1, 0), ERRNO,
                   *store_sockaddr("to", 2, scene.listener_port()),
                   call("connect", "int(*)(int,void*,int)", -1, "$to", 16)],
                  [("result", -1), ("errno", EAFNOSUPPORT)], "connect")


def reconnect_a_client_socket(scene):
    """No socket() needed: connect(AF_UNSPEC) disconnects an accepted TCP
    socket, which may then connect anywhere."""
    fd = scene.connection_fd()
    return Attack([*store_sockaddr("none", 0),
                   *store_sockaddr("to", 2, scene.listener_port()),
                   call("connect", "int(*)(int,void*,int)", fd, "$none", 16),
                   call("connect", "int(*)(int,void*,int)", fd, "$to", 16)],
                  [], "connect")


def exec_a_shell(scene):
    return Attack([f"{ALLOCATE}(32)", "set $argv = (char **)$m",
                   'set $argv[0] = "sh"', 'set $argv[1] = "-c"',
                   f"set $argv[2] = \"touch '{scene.marker}'\"",
                   "set $argv[3] = 0",
                   call("execve", "int(*)(char*,char**,char**)",
                        '"/bin/sh"', "$argv", 0)],
                  [], "execve")


def stop_the_sibling(scene):
    return Attack([call("kill", "int(*)(int,int)", scene.sibling, SIGSTOP)],
                  [], "kill")


def fork(scene):
    return Attack([call("fork", "int(*)(void)")], [], "clone")


def stop_listening_for_everyone(scene):
    """shutdown(SHUT_RD) of the listening socket every worker shares ends
    its listening, for all of them: the parent would never know."""
    fd = listening_fd(scene.victim)
    return Attack([call("shutdown", "int(*)(int,int)", fd, SHUT_RD)],
                  [], "shutdown")


def kill_the_parent(scene):
    return Attack([call("kill", "int(*)(int,int)", scene.server.proc.pid,
                        SIGTERM)],
                  [], "kill")


def trace_the_sibling(scene):
    return Attack([call("ptrace", "long(*)(long,long,long,long)",
                        PTRACE_ATTACH, scene.sibling, 0, 0)],
                  [], "ptrace")


def become_root(scene):
    return Attack([call("setuid", "int(*)(int)", 0)], [], "setuid")


ATTACKS = [open_a_file, connect_out, reconnect_a_client_socket, exec_a_shell,
           stop_the_sibling, fork, stop_listening_for_everyone,
           kill_the_parent, trace_the_sibling, become_root]


# ------------------------------------------------------------ the checks

def check_refused(printed, output):
    """The call did not happen: every call the worker returned from
    failed (a call that killed it returned nothing)."""
    succeeded = [value for label, value in printed
                 if label == "result" and value != -1]
    assert not succeeded, f"the call succeeded, returned {succeeded}\n{output}"


def check_outcome(scene, attack, printed, output):
    """What the allow-list says for this call: the errno it fails with,
    or the worker killed at it, the parent naming the call."""
    server, victim = scene.server, scene.victim
    assert printed == attack.printed, output
    if attack.killed_by is None:
        assert untouched(victim), "the worker stopped serving"
        scene.exchange(scene.victim_client)
        return
    pattern = (rf"Worker {victim} killed by the system call filter: "
               rf"it called {attack.killed_by}\b")
    try:
        server.wait_log(pattern, timeout=10)
    except AssertionError:
        raise AssertionError(f"{output}\n{server.log()[-3000:]}")
    wait_until(lambda: not proc_exists(victim), scaled(5),
               what="the killed worker to be reaped")
    assert len(log_lines(server, pattern, server.proc.pid)) == 1


def check_nothing_escaped(scene):
    """No connection reached the listener, no shell ran, the sibling and
    the parent are as they were and serve."""
    ready, _, _ = select.select([scene.listener], [], [], scaled(0.2))
    assert not ready, "the listener was connected to"
    assert not os.path.exists(scene.marker), "the shell ran"
    assert untouched(scene.sibling), "the sibling was stopped or traced"
    assert untouched(scene.server.proc.pid), "the parent was signalled"
    assert scene.server.proc.poll() is None, "the parent exited"
    scene.exchange(scene.sibling_client)


def check_service(scene):
    """A fresh client is answered within 1 s; the file holds exactly what
    the clients sent; two workers serve (a killed one replaced)."""
    started = time.monotonic()
    scene.expected = assert_served(scene.server, scene.expected)
    took = time.monotonic() - started
    assert took <= scaled(1), f"a fresh client waited {took:.2f} s"
    assert read_bytes(scene.server.data_file) == scene.expected
    workers = wait_workers(scene.server, 2)
    assert scene.sibling in workers


@pytest.fixture(params=["root", "nobody"])
def confined_server(request, make_server):
    """A server with two workers, as root or --user nobody; yields it and a
    directory every user may write to."""
    shared = shared_tmp_dir()
    try:
        user = () if request.param == "root" else ("--user", "nobody")
        server = make_server("-w", "2", *user,
                             data_file=os.path.join(shared, "aesdsocketdata"))
        yield server, shared
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__)
def test_a_taken_over_worker_reaches_nothing(confined_server, attack):
    server, shared = confined_server
    scene = Scene(server, wait_workers(server, 2), shared)
    try:
        chosen = attack(scene)
        printed, output = gdb(scene.victim, chosen.commands)
        check_refused(printed, output)
        check_nothing_escaped(scene)
        check_outcome(scene, chosen, printed, output)
        check_service(scene)
    finally:
        scene.close()
