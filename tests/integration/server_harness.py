"""Helpers for driving the real aesdsocket binary over TCP.

Each test gets its own server on a free port with its own data file.  Log
lines are captured from stderr (--log-stderr), so syslog content is checked
for real.  Environment:
  AESDSOCKET          binary under test (default: server/aesdsocket)
  AESDSOCKET_WRAPPER  command prefix, e.g. a valgrind invocation
  AESD_TIME_SCALE     multiplier for every timeout (valgrind is slow)
"""
import contextlib
import os
import re
import resource
import select
import shlex
import signal
import socket
import struct
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("AESDSOCKET", os.path.join(ROOT, "server", "aesdsocket"))
WRAPPER = shlex.split(os.environ.get("AESDSOCKET_WRAPPER", ""))
TIME_SCALE = float(os.environ.get("AESD_TIME_SCALE", "1"))
UNDER_VALGRIND = any("valgrind" in w for w in WRAPPER)
# valgrind makes the program's system calls itself (and maps executable
# code): a worker's system call filter would kill it there, so under
# valgrind every server runs with the filter off.
FILTER_ARGS = ["--no-syscall-filter"] if UNDER_VALGRIND else []
IS_ROOT = os.geteuid() == 0


def scaled(seconds):
    return seconds * TIME_SCALE


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, interval=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")


def port_accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def children_of(pid):
    """Pids whose parent is pid (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def live_children(pid):
    """Children of pid that are running (zombies left out)."""
    return [c for c in children_of(pid) if pid_alive(c)]


def fd_targets(pid):
    """{fd: what it points at} for a process; {} once it is gone."""
    targets = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return targets
    for fd in fds:
        try:
            targets[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
    return targets


def socket_inode(target):
    """The inode of a "socket:[N]" fd target, else None."""
    found = re.fullmatch(r"socket:\[(\d+)\]", target)
    return int(found.group(1)) if found else None


def unix_socket_types():
    """{inode: type} of every AF_UNIX socket (1 stream, 2 dgram, 5 seqpacket)."""
    types = {}
    with open("/proc/net/unix") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            types[int(fields[6])] = int(fields[4], 16)
    return types


def tcp_socket_states():
    """{inode: state} of every TCP socket (0x0A = listening)."""
    return {inode: state for _, _, state, _, inode in tcp_entries()}


def recv_exactly(sock, n, timeout=5.0):
    sock.settimeout(scaled(timeout))
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(1 << 20, n - got))
        if not chunk:
            raise AssertionError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_until_suffix(sock, suffix, timeout=10.0, limit=1 << 30):
    """Reads until the data received ends with suffix (a unique packet)."""
    sock.settimeout(scaled(timeout))
    data = bytearray()
    while not data.endswith(suffix):
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise AssertionError(f"closed after {len(data)} bytes, no {suffix!r}")
        data += chunk
        assert len(data) <= limit, "response longer than the limit"
    return bytes(data)


def assert_closed_by_server(sock, timeout=5.0):
    """The server closes the connection: EOF or reset, never a timeout.
    Returns what it sent before closing."""
    sock.settimeout(scaled(timeout))
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return bytes(received)


class Server:
    """One aesdsocket process (and its workers) owned by a test."""

    def __init__(self, tmp_path, args=(), port=None, data_file=None, env=None,
                 prefix=(), preexec_fn=None, pass_fds=(), log_stderr=True):
        """env: the server's whole environment (default: ours); prefix: a
        command in front of it (e.g. setpriv ... --), before WRAPPER;
        log_stderr=False leaves out -s (then wait_listening cannot wait
        for a log line: start it with wait=False)."""
        self.tmp_path = tmp_path
        self.port = port or free_port()
        self.data_file = str(data_file or tmp_path / "aesdsocketdata")
        self.stderr_path = tmp_path / f"server-{self.port}.log"
        self.args = list(args)
        self.env = env
        self.prefix = list(prefix)
        self.preexec_fn = preexec_fn
        self.pass_fds = tuple(pass_fds)
        self.log_stderr = log_stderr
        self.proc = None

    def command(self, extra=()):
        return (self.prefix + WRAPPER + [BINARY] + FILTER_ARGS +
                (["-s"] if self.log_stderr else []) +
                ["-p", str(self.port), "-f", self.data_file] + self.args +
                list(extra))

    def start(self, extra=(), wait=True):
        self.stderr_file = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.command(extra), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self.stderr_file, env=self.env,
                                     preexec_fn=self.preexec_fn,
                                     pass_fds=self.pass_fds)
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout=10.0):
        def up():
            assert self.proc.poll() is None, f"server exited early:\n{self.log()}"
            return port_accepts(self.port)
        wait_until(up, scaled(timeout), what=f"port {self.port}")
        # a probe connection makes the server log; wait for it to settle
        self.wait_log(r"Closed connection from", timeout=timeout)

    def log(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=5.0, count=1):
        wait_until(lambda: len(re.findall(pattern, self.log())) >= count,
                   scaled(timeout), what=f"log line {pattern!r} x{count}")

    def workers(self):
        return children_of(self.proc.pid) if self.proc else []

    def connect(self, timeout=5.0):
        return socket.create_connection(("127.0.0.1", self.port),
                                        timeout=scaled(timeout))

    def stop(self, signo=signal.SIGTERM, timeout=5.0):
        """Signals the server; returns its exit status."""
        self.proc.send_signal(signo)
        try:
            return self.proc.wait(timeout=scaled(timeout))
        finally:
            self.stderr_file.close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            for child in self.workers():
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.kill()
            self.proc.wait()
            self.stderr_file.close()


def exchange(sock, packet, expected_len):
    sock.sendall(packet)
    return recv_exactly(sock, expected_len)


# ------------------------------------------- shared by the test modules

def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def send_packet(server, packet, expected):
    """One client, one packet; returns the response (the file so far)."""
    with server.connect() as sock:
        sock.sendall(packet)
        return recv_exactly(sock, len(expected))


def assert_served(server, before):
    """A fresh client is served: its response is `before` plus its packet."""
    packet = b"still serving %d\n" % time.monotonic_ns()
    assert send_packet(server, packet, before + packet) == before + packet
    return before + packet


def grow_file(server, megabytes):
    """Appends megabytes packets of 1 MB each over one connection, each
    checked; returns the file's content."""
    expected = b""
    with server.connect() as sock:
        for i in range(megabytes):
            packet = bytes([ord("a") + i]) * (1000 * 1000) + b"\n"
            expected += packet
            sock.sendall(packet)
            assert recv_exactly(sock, len(expected), timeout=30) == expected
    return expected


def open_after_one_exchange(server, count, label, expected=b""):
    """count connections, each left open after one checked exchange (idle
    at a packet boundary); returns them and the file's content."""
    socks = []
    for i in range(count):
        sock = server.connect()
        socks.append(sock)
        packet = b"%s %03d\n" % (label, i)
        expected += packet
        sock.sendall(packet)
        assert recv_until_suffix(sock, packet) == expected
    return socks, expected


def proc_exists(pid):
    """True while /proc/pid exists, zombie included (not yet reaped)."""
    return os.path.exists(f"/proc/{pid}")


def tcp_entries():
    """(local_port, remote_port, state, rx_queue, inode) of every TCP socket,
    each once.  The kernel prints these tables a page per read() and finds
    its place again by counting, so while other processes open and close
    sockets a socket may be listed twice (kept once here) or not at all (a
    caller that needs one to be there looks again)."""
    entries = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            rx_queue = int(fields[4].split(":")[1], 16)
            entries.append((local_port, remote_port, int(fields[3], 16),
                            rx_queue, int(fields[9])))
    return list(dict.fromkeys(entries))


def server_send_queue(server, client):
    """Bytes the server's end of the client's connection has yet to send
    (0 once it is gone)."""
    client_port = client.getsockname()[1]
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if (int(fields[1].rsplit(":", 1)[1], 16) == server.port and
                        int(fields[2].rsplit(":", 1)[1], 16) == client_port
                        and int(fields[9])):
                    return int(fields[4].split(":")[0], 16)
    return 0


def server_sides(server):
    """{client port: (rx_queue, inode)} of every connection the server
    holds, from one reading of the TCP tables."""
    return {remote: (rx_queue, inode)
            for local, remote, _, rx_queue, inode in tcp_entries()
            if local == server.port and remote and inode}


def server_side(server, client):
    """(rx_queue, inode) of the server's end of the client's connection."""
    client_port = client.getsockname()[1]
    for local, remote, _, rx_queue, inode in tcp_entries():
        if local == server.port and remote == client_port and inode:
            return rx_queue, inode
    return None


def wait_server_read_everything(server, client, timeout=5.0):
    """Until the server has received every byte this client sent."""
    def drained():
        side = server_side(server, client)
        return side is not None and side[0] == 0
    wait_until(drained, scaled(timeout), what="server to read the bytes sent")


def worker_serving(server, client, timeout=5.0):
    """The pid of the worker process holding the client's connection."""
    found = []

    def lookup():
        side = server_side(server, client)
        if side is None:
            return False
        target = f"socket:[{side[1]}]"
        for pid in server.workers():
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        found.append(pid)
                        return True
                except OSError:
                    continue
        return False
    wait_until(lookup, scaled(timeout), what="the worker of a connection")
    return found[0]


def status_field(pid, name):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split()[1:]
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def wrapper_log_dir_is_private():
    """Under valgrind --log-file=DIR/%p.log, each worker forked after
    --user drops root must create its own log in DIR."""
    directory = valgrind_log_dir()
    if directory is None:
        return False
    try:
        return not os.stat(directory).st_mode & 0o002
    except OSError:
        return True


def valgrind_log_dir():
    for word in WRAPPER:
        if word.startswith("--log-file="):
            return os.path.dirname(word.split("=", 1)[1]) or "."
    return None


def expect_start_failure(server, extra=(), timeout=10.0):
    """Starts the server expecting it to refuse: returns (status, log)."""
    server.start(extra=extra, wait=False)
    try:
        status = server.proc.wait(timeout=scaled(timeout))
    finally:
        server.stderr_file.close()
    return status, server.log()


def rst_close(sock):
    """Closes with a reset (SO_LINGER 0), as a crashed client does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                    struct.pack("ii", 1, 0))
    sock.close()


def shared_tmp_dir():
    """A new directory like /var/tmp (world-writable, sticky), where a
    server running --user nobody can reach its data file; the caller
    removes it."""
    path = tempfile.mkdtemp(prefix="aesd-user-", dir="/tmp")
    os.chmod(path, 0o1777)
    return path


# ------------------------------------------------ the v3 process model

def _binary_mentions(word):
    try:
        with open(BINARY, "rb") as f:
            return word in f.read()
    except OSError:
        return False


# A sanitizer build keeps freed memory in quarantine and maps shadow
# memory: its footprint says nothing about the server's own bounds.
UNDER_SANITIZER = _binary_mentions(b"__asan_init")


def process_state(pid):
    """The state letter of /proc/pid/stat ("S", "T", "Z", ...), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def has_event_loop(pid):
    """True once a worker has created its epoll instance: the last step of
    its set-up before it serves."""
    return "anon_inode:[eventpoll]" in fd_targets(pid).values()


def serving_workers(server):
    """The live workers that have set up their event loop, sorted."""
    return sorted(w for w in live_children(server.proc.pid)
                  if has_event_loop(w))


def wait_workers(server, count, timeout=10.0, exclude=()):
    """Waits until exactly count workers serve, none of them in exclude
    (e.g. the pid of a killed one); returns their pids."""
    try:
        return wait_serving(server.proc.pid, count, timeout, exclude)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{server.log()[-3000:]}")


def wait_serving(parent, count, timeout=10.0, exclude=()):
    """wait_workers for the server process parent (e.g. a daemon)."""
    found = []

    def ready():
        workers = live_children(parent)
        serving = [w for w in workers if has_event_loop(w)]
        found[:] = sorted(serving)
        return (len(workers) == len(serving) == count and
                not set(serving) & set(exclude))
    try:
        wait_until(ready, scaled(timeout), what=f"{count} serving workers")
    except AssertionError as e:
        raise AssertionError(f"{e}; serving: {found}, excluded: "
                             f"{list(exclude)}")
    return list(found)


def stop_process(pid):
    """SIGSTOP, and waits until the process is really stopped."""
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: process_state(pid) in ("T", "t", None), scaled(5),
               what=f"process {pid} to stop")


def connect_on(server, worker, timeout=5.0, rcvbuf=None):
    """A connection accepted by the given worker: every other worker is
    stopped meanwhile, so only this one can accept it.  rcvbuf: the
    client's SO_RCVBUF, set before it connects."""
    others = [w for w in live_children(server.proc.pid) if w != worker]
    stopped = []
    try:
        for other in others:
            if process_state(other) not in ("T", "t"):
                stop_process(other)
                stopped.append(other)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(scaled(timeout))
        sock.connect(("127.0.0.1", server.port))
        holder = worker_serving(server, sock)
        assert holder == worker, f"accepted by {holder}, not {worker}"
    finally:
        for other in stopped:
            os.kill(other, signal.SIGCONT)
    return sock


def log_lines(server, pattern, pid=None):
    """The log lines (from stderr, -s) that match the regular expression,
    from one process if pid is given."""
    who = str(pid) if pid else r"\d+"
    return [m.group(0) for m in
            re.finditer(rf"^aesdsocket\[{who}\]: .*?(?:{pattern}).*$",
                        server.log(), re.M)]


def kib_field(pid, name, source="status"):
    """A "kB" field of /proc/pid/status or /proc/pid/smaps_rollup."""
    with open(f"/proc/{pid}/{source}") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/{pid}/{source}")


def tree_pss_kib(server):
    """The proportional set size of the server and its workers (shared
    pages counted once across them), in KiB."""
    total = 0
    for pid in [server.proc.pid] + live_children(server.proc.pid):
        try:
            total += kib_field(pid, "Pss", "smaps_rollup")
        except OSError:
            continue            # exited meanwhile
    return total


def fd_count(pid):
    return len(fd_targets(pid))


# The next appender's log line after a worker died mid-append ("worker"
# or the older "connection process"): str.format(size=N).
TORN_APPEND_CUT_BACK = (r"A (?:connection process|worker) died while "
                        r"appending; cut\w* the data file back to {size} bytes")


def file_size_limit(limit):
    """A preexec_fn: RLIMIT_FSIZE for the server process and its workers."""
    def apply():
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE,
                           (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return apply


def worker_count(server):
    """The number of workers the server says it started with."""
    server.wait_log(r"Serving on port")
    found = re.search(r"Serving on port .* with (\d+) workers", server.log())
    assert found, server.log()
    return int(found.group(1))


def raise_nofile(wanted):
    """Raises this process's descriptor limit towards wanted (for tests
    that open many client sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def closed_by_peer(sock):
    """True if the server has closed this (otherwise silent) connection."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


@contextlib.contextmanager
def strace_injecting(pid, log_path, *options):
    """strace attached to pid with options (-e trace=..., -e inject=...):
    the body runs once it has attached; afterwards strace is gone (it
    detaches if the process still lives)."""
    tracer = subprocess.Popen(["strace", "-p", str(pid), "-o", str(log_path),
                               *options],
                              stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        attached = tracer.stderr.readline()
        assert "attached" in attached, attached
        yield tracer
    finally:
        if tracer.poll() is None:
            tracer.terminate()      # detaches; the process carries on
            try:
                tracer.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait()
        tracer.stderr.close()


# strace options: the worker's next ftruncate() (cutting back a failed
# write) kills it instead, so it dies with torn bytes in the file.
KILL_AT_FTRUNCATE = ("-e", "trace=ftruncate",
                     "-e", "inject=ftruncate:error=EIO:signal=SIGKILL")
