"""Helpers shared by the lifecycle tests (a module name of its own, so it
cannot be confused with another test directory's conftest or helpers)."""

import os
import socket
import time


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def port_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def exchange(port, packet, timeout=10.0):
    """Send one packet on a new connection; return the server's answer,
    which ends where the packet does in the data file."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(packet)
        answer = b""
        while not answer.endswith(packet):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def proc_state(pid):
    """'R', 'S', 'Z', ... or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def alive(pid):
    return proc_state(pid) not in (None, "Z")


def ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def children(pid):
    """Pids of the live processes whose parent is pid."""
    return [int(p) for p in os.listdir("/proc")
            if p.isdigit() and ppid(int(p)) == pid and alive(int(p))]


def uids(pid):
    """Real, effective, saved and filesystem uid of pid."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("Uid:"))
    return [int(u) for u in line.split()[1:]]
