"""The fault-injection shim (faultshim.c, LD_PRELOAD) seen from a test.

build() compiles it with gcc; a FaultShim names its control, log and atexit
files and gives the environment that makes a server use them.  Faults are
switched on and off while the server runs: the shim re-reads the control
file on every intercepted call.
"""
import os
import re
import subprocess
import time
from collections import namedtuple

import pytest

from server_harness import BINARY, UNDER_VALGRIND

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "faultshim.c")

# valgrind starts the server through preloaded libraries of its own and
# replaces functions itself; a shim of ours in between is not reliable
# there (and valgrind would check the shim, not the server).
needs_shim = pytest.mark.skipif(
    UNDER_VALGRIND, reason="an LD_PRELOAD shim does not combine with "
                           "valgrind's own preloaded libraries")

Call = namedtuple("Call", "ms pid call ret err")

# The option for a server whose serving workers must meet the faults: the
# shim opens its control file (and its log) on every call it intercepts,
# which a worker confined by its system call filter may not (openat fails
# with EACCES there, so no fault would fire).  Faults in the parent, or in
# a worker before it is confined (setuid, epoll_create1), need nothing.
UNCONFINED = ("--no-syscall-filter",)


def build(directory):
    """Compiles the shim into directory; returns the library's path."""
    library = os.path.join(directory, "faultshim.so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra",
                    "-Werror", "-fno-tree-loop-distribute-patterns",
                    "-o", library, SOURCE, "-ldl"], check=True,
                   capture_output=True)
    return library


def sanitizer_runtimes(binary=BINARY):
    """The ASan runtime a dynamically linked sanitizer build loads: it
    must come first in LD_PRELOAD, before the shim, or ASan refuses to
    start.  (A statically linked runtime needs nothing.)"""
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return re.findall(r"=>\s*(\S*libasan\.so[.\d]*)", out)


def now_ms():
    """The shim's clock (CLOCK_MONOTONIC, in ms)."""
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1000)


class FaultShim:
    def __init__(self, library, directory):
        self.library = library
        self.control = os.path.join(directory, "faults")
        self.log_path = os.path.join(directory, "calls.log")
        self.atexit_path = os.path.join(directory, "atexit.log")

    def env(self, record_atexit=False):
        """The environment for a server that runs under the shim."""
        env = dict(os.environ)
        env["LD_PRELOAD"] = " ".join(sanitizer_runtimes() + [self.library])
        env["AESD_FAULT_CONTROL"] = self.control
        env["AESD_FAULT_LOG"] = self.log_path
        if record_atexit:
            env["AESD_FAULT_ATEXIT"] = self.atexit_path
        return env

    def set(self, *faults):
        """Replaces the faults in force, e.g. set("fork EAGAIN")."""
        temporary = self.control + ".new"
        with open(temporary, "w") as f:
            f.write("".join(line + "\n" for line in faults))
        os.replace(temporary, self.control)     # never read half-written

    def clear(self):
        """No fault; and a "stop-once" fault may fire again once set."""
        self.set()
        try:
            os.unlink(self.control + ".fired")
        except FileNotFoundError:
            pass

    def calls(self, name=None, pid=None, since_ms=None, failed=None):
        """Intercepted calls, from the log; failed=True: injected or real
        failures only (return value -1)."""
        try:
            with open(self.log_path) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            fields = line.split()
            if len(fields) != 5:
                continue            # a line being written
            call = Call(int(fields[0]), int(fields[1]), fields[2],
                        int(fields[3]), int(fields[4]))
            if ((name is None or call.call == name) and
                    (pid is None or call.pid == pid) and
                    (since_ms is None or call.ms >= since_ms) and
                    (failed is None or (call.ret == -1) == failed)):
                found.append(call)
        return found

    def exited_through_atexit(self):
        """Pids of the processes that ran their atexit() handlers."""
        try:
            with open(self.atexit_path) as f:
                return [int(line) for line in f.read().split()]
        except FileNotFoundError:
            return []
