"""Fixtures for the lifecycle tests: the init script run for real in a tiny
BusyBox chroot against a statically linked aesdsocket built from a copy of
server/ (nothing is built in the work tree). Two flavours: "busybox", the
target's (BusyBox ash and start-stop-daemon), and "debian" (Debian's dash
and start-stop-daemon, copied in with their libraries; dash because Debian's
busybox ash runs its own applets in preference to /sbin/start-stop-daemon).

Every test gets its own chroot, its own free port (AESDSOCKET_ARGS in the
chroot's /etc/default/aesdsocket) and its own reaper process (reaper.py),
which stands in for init: daemons are reparented to it, reaped when they
exit, and killed when the test ends; it also holds the chroot's /proc mount
in a mount namespace of its own. Every wait has an explicit timeout.
"""

import json
import os
import pathlib
import select
import shutil
import subprocess
import sys

import pytest

from lifecycle_helpers import free_port, ppid

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
SERVER = REPO / "server"
BUSYBOX = pathlib.Path("/bin/busybox")
DEBIAN_SSD = pathlib.Path("/sbin/start-stop-daemon")
DASH = pathlib.Path("/bin/dash")
# BusyBox init's default PATH on the target.
TARGET_PATH = "/sbin:/usr/sbin:/bin:/usr/bin"
COMMAND_TIMEOUT = 30.0
STATIC = ["LDFLAGS=-static"]


class Reaper:
    """Client of reaper.py: runs commands as its children."""

    def __init__(self, chroot):
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "reaper.py"), str(chroot)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = json.loads(self._readline(10.0))["pid"]

    def _readline(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"reaper gave no answer in {timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("reaper exited")
        return line

    def run(self, argv, env, timeout=COMMAND_TIMEOUT):
        self.proc.stdin.write(json.dumps([argv, env, timeout]) + "\n")
        self.proc.stdin.flush()
        result = json.loads(self._readline(timeout + 10.0))
        if result["timed_out"]:
            raise AssertionError(
                f"{argv} timed out after {timeout:.0f} s:\n{result['out']}")
        return subprocess.CompletedProcess(argv, result["rc"], result["out"])

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise


class Target:
    """A chroot laid out like the target: BusyBox, aesdsocket installed with
    the server's `make install` and `make install-sysv`, /var/run, /var/tmp."""

    def __init__(self, root, port, reaper, flavour):
        self.root = root
        self.port = port
        self.reaper = reaper
        self.flavour = flavour
        self.shell = "/bin/dash" if flavour == "debian" else "/bin/sh"
        self.binary = root / "usr/bin/aesdsocket"
        self.pidfile = root / "var/run/aesdsocket.pid"
        self.datafile = root / "var/tmp/aesdsocketdata"
        self.default = root / "etc/default/aesdsocket"
        self.shipped_default = self.default.read_text()
        self.set_args(f"-p {port}")

    def set_args(self, args):
        # Keep the shipped file (it must source cleanly) and override it,
        # as an administrator editing it would.
        self.default.write_text(
            self.shipped_default + f'AESDSOCKET_ARGS="{args}"\n')

    def chroot(self, *argv):
        """Run argv inside the chroot (as a child of the reaper)."""
        return self.reaper.run(["/usr/sbin/chroot", str(self.root), *argv],
                               {"PATH": TARGET_PATH})

    def initscript(self, action):
        return self.chroot(self.shell, "/etc/init.d/S99aesdsocket", action)

    def pid(self):
        return int(self.pidfile.read_text())

    def is_ours(self, pid):
        """pid is alive and runs this chroot's aesdsocket."""
        try:
            return os.readlink(f"/proc/{pid}/exe") == str(self.binary)
        except OSError:
            return False

    def servers(self):
        """Pids of live aesdsocket main processes of this chroot (workers,
        whose parent is an aesdsocket too, are not counted)."""
        ours = [int(p) for p in os.listdir("/proc")
                if p.isdigit() and self.is_ours(int(p))]
        return sorted(p for p in ours if not self.is_ours(ppid(p)))


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot, unshare, mknod)")


@pytest.fixture(scope="session")
def static_server(tmp_path_factory):
    """A copy of server/ with a statically linked aesdsocket built in it."""
    copy = tmp_path_factory.mktemp("server") / "server"
    shutil.copytree(SERVER, copy, ignore=shutil.ignore_patterns(
        "build", "aesdsocket", "*.o", "*.d"))
    subprocess.run(["make", "-s", "-C", str(copy), *STATIC, "clean", "all"],
                   check=True, timeout=300, stdout=subprocess.DEVNULL)
    return copy


def with_libraries(program):
    """program and the shared libraries it loads."""
    out = subprocess.run(["ldd", str(program)], check=True, text=True,
                         capture_output=True, timeout=30).stdout
    libs = [pathlib.Path(word) for line in out.splitlines()
            for word in line.split() if word.startswith("/")]
    return [program, *libs]


def make_target(root, server, flavour):
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc",
              "tmp", "var/run", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "var/tmp").chmod(0o1777)
    os.mknod(root / "dev/null", 0o666 | 0o020000, os.makedev(1, 3))
    (root / "dev/null").chmod(0o666)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "aesd:x:1000:1000:aesdsocket:/nonexistent:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\naesd:x:1000:\n")
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    subprocess.run(["chroot", str(root), "/bin/busybox", "--install", "-s"],
                   check=True, timeout=30)
    for target in ("install", "install-sysv"):
        # The same flags as the build, or make would rebuild for the install.
        subprocess.run(["make", "-s", "-C", str(server), *STATIC, target,
                        f"DESTDIR={root}", "PREFIX=/usr"],
                       check=True, timeout=60, stdout=subprocess.DEVNULL)
    if flavour == "debian":
        for d in ("sbin", "usr/sbin", "bin", "usr/bin"):
            (root / d / "start-stop-daemon").unlink(missing_ok=True)
        # Same paths inside; on a merged-/usr host, /bin and /sbin are links.
        dests = {DEBIAN_SSD: "sbin/start-stop-daemon", DASH: "bin/dash"}
        for f in with_libraries(DEBIAN_SSD) + with_libraries(DASH):
            dest = root / dests.get(f, str(f).lstrip("/"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)


@pytest.fixture(params=["busybox", "debian"])
def target(request, static_server, tmp_path):
    """A fresh target chroot per test, in either flavour; every process it
    started is gone afterwards."""
    needs_root()
    if not BUSYBOX.exists():
        pytest.skip("busybox-static is not installed")
    if request.param == "debian" and not (DEBIAN_SSD.exists() and
                                          DASH.exists()):
        pytest.skip("Debian's start-stop-daemon or dash is not installed")
    root = tmp_path / "root"
    make_target(root, static_server, request.param)
    reaper = Reaper(root)
    t = Target(root, free_port(), reaper, request.param)
    try:
        yield t
    finally:
        reaper.close()
    assert not t.servers(), "aesdsocket still running after the test"
