"""Helpers for driving the real aesdsocket binary over TCP.

Each test gets its own server on a free port with its own data file.  Log
lines are captured from stderr (--log-stderr), so syslog content is checked
for real.  Environment:
  AESDSOCKET          binary under test (default: server/aesdsocket)
  AESDSOCKET_WRAPPER  command prefix, e.g. a valgrind invocation
  AESD_TIME_SCALE     multiplier for every timeout (valgrind is slow)
"""
import os
import re
import shlex
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("AESDSOCKET", os.path.join(ROOT, "server", "aesdsocket"))
WRAPPER = shlex.split(os.environ.get("AESDSOCKET_WRAPPER", ""))
TIME_SCALE = float(os.environ.get("AESD_TIME_SCALE", "1"))
UNDER_VALGRIND = any("valgrind" in w for w in WRAPPER)


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
    """The server closes the connection: EOF or reset, never a timeout."""
    sock.settimeout(scaled(timeout))
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


class Server:
    """One aesdsocket process (and its workers) owned by a test."""

    def __init__(self, tmp_path, args=(), port=None, data_file=None):
        self.tmp_path = tmp_path
        self.port = port or free_port()
        self.data_file = str(data_file or tmp_path / "aesdsocketdata")
        self.stderr_path = tmp_path / f"server-{self.port}.log"
        self.args = list(args)
        self.proc = None

    def command(self, extra=()):
        return WRAPPER + [BINARY, "-s", "-p", str(self.port), "-f",
                          self.data_file] + self.args + list(extra)

    def start(self, extra=(), wait=True):
        self.stderr_file = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.command(extra), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self.stderr_file)
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
