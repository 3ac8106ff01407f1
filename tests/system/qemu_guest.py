"""A QEMU guest booted with runqemu.sh, driven on its serial console with
pexpect and reached from the host through QEMU's forwarded ports (aesdsocket,
ssh), picked free for every boot. Every wait has an explicit timeout. Used by
the system tests and by full-test.sh (fulltest.py).

Environment: AESD_BOOT_TIMEOUT, seconds allowed for a boot (default 180).
"""

import hashlib
import os
import re
import shlex
import socket
import subprocess
import time
import uuid

import pexpect

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNQEMU = os.path.join(TOP, "runqemu.sh")
SOCKETTEST = os.path.join(TOP, "tests", "sockettest.sh")
BUILD = os.path.join(TOP, "image", "build.sh")
BR_IMAGES = os.path.join(TOP, "buildroot", "output", "images")

BOOT_TIMEOUT = float(os.environ.get("AESD_BOOT_TIMEOUT", "180"))
CMD_TIMEOUT = 60
DATA_FILE = "/var/tmp/aesdsocketdata"
INIT_SCRIPT = "/etc/init.d/S99aesdsocket"
SYSLOG = "/var/log/messages"
# Where connections from the host come from, seen from the guest (the
# gateway of QEMU's user network)
HOST_FROM_GUEST = "10.0.2.2"
HOST_PACKAGES = ["qemu-system-arm", "sshpass", "openssh-client", "netcat-openbsd"]

# Guests started in this run, newest last, for failure reports
started_guests = []
# (what, seconds) measured along the way, printed at the end of the run
timings = []


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send_packets(port, data, timeout=30):
    """Send bytes to aesdsocket on 127.0.0.1:port, half-close, return all of
    the response once the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def sockettest(port, timeout=120):
    """Run tests/sockettest.sh against 127.0.0.1:port; the completed process
    (stdout has a "sending string" line per connection it made)."""
    return subprocess.run(["sh", SOCKETTEST, "-t", "127.0.0.1", "-p", str(port)],
                          capture_output=True, text=True, timeout=timeout, check=False)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def booted_files(env, timeout=1800):
    """The files runqemu.sh would give QEMU with this environment (kernel,
    initramfs, disk), from its --dry-run; which also installs what is
    missing and builds the fast image when needed (hence the long timeout).
    Symbolic links are resolved: the files themselves."""
    r = subprocess.run([RUNQEMU, "--dry-run"], env=env, stdout=subprocess.PIPE,
                       text=True, timeout=timeout, check=True)
    words = shlex.split(r.stdout)
    files = []
    for option, value in zip(words, words[1:]):
        if option in ("-kernel", "-initrd"):
            files.append(value)
        elif option == "-drive":
            files.append(dict(o.split("=", 1) for o in value.split(",") if "=" in o)["file"])
    return [os.path.realpath(f) for f in files]


def probe_port(port, timeout):
    """True when aesdsocket in the guest answers a packet on `port` (which
    adds b"probe\\n" to its data file)."""
    try:
        return send_packets(port, b"probe\n", timeout=timeout).endswith(b"probe\n")
    except OSError:
        return False


class Guest:
    """One QEMU run of the image, driven on its serial console."""

    def __init__(self, logdir, name, env_extra=None, args=(), host_port=None,
                 ssh_port=None):
        """Ports picked free unless given; args go to runqemu.sh."""
        self.host_port = host_port or free_port()
        self.ssh_port = ssh_port or free_port()
        while self.ssh_port == self.host_port:
            self.ssh_port = free_port()
        self.args = list(args)
        self.logpath = os.path.join(logdir, f"{name}-console.log")
        self.env = dict(os.environ)
        self.env.update({
            "AESD_HOST_PORT": str(self.host_port),
            "AESD_SSH_PORT": str(self.ssh_port),
            "AESD_QEMU_SNAPSHOT": "1",
        })
        self.env.update(env_extra or {})
        self.child = None
        self.logfile = None
        self.started = None
        self.load_at_boot = None
        self.port_seconds = None
        started_guests.append(self)

    # -- boot and shutdown -------------------------------------------------

    def boot(self, timeout=BOOT_TIMEOUT, measure=False):
        """Start QEMU and log in as root on the console, which appears once
        the start scripts have run.

        With measure=True, also time how long port 9000 takes to answer from
        QEMU's start: the init script prints "Starting aesdsocket: OK" only
        once the daemon listens, and a probe packet (left in the data file)
        then checks the answer through the forwarded port. Probing earlier
        is no good: QEMU's user network accepts host connections before the
        guest listens and delivers their data whenever the guest does."""
        self.logfile = open(self.logpath, "a", encoding="utf-8", errors="replace")
        # how busy the machine was, for whoever judges the boot time
        self.load_at_boot = os.getloadavg()[0]
        self.started = time.monotonic()
        self.child = pexpect.spawn(
            RUNQEMU, self.args, env=self.env, encoding="utf-8", codec_errors="replace",
            timeout=timeout, dimensions=(50, 250), logfile=self.logfile)
        deadline = self.started + timeout
        if measure:
            self.child.expect("Starting aesdsocket: OK", timeout=timeout)
            listening = time.monotonic() - self.started
            if not probe_port(self.host_port, timeout=max(1, deadline - time.monotonic())):
                raise AssertionError("aesdsocket started but port 9000 does not answer")
            self.port_seconds = time.monotonic() - self.started
            timings.append(("QEMU start to aesdsocket listening", listening))
            timings.append(("QEMU start to port 9000 answering", self.port_seconds))
        self.child.expect("login:", timeout=max(1, deadline - time.monotonic()))
        self.login()
        return self

    def login(self):
        self.child.sendline("root")
        self.child.expect("Password:", timeout=CMD_TIMEOUT)
        self.child.sendline("root")
        self.child.expect("# ", timeout=CMD_TIMEOUT)
        # No echo (ash then reads plain lines, no line editing) and no kernel
        # messages on the console: command output is all we read.
        self.child.sendline("stty -echo; dmesg -n 1")
        self.run("true")

    def poweroff(self, timeout=120):
        """Run poweroff; return QEMU's exit status."""
        self.child.sendline("poweroff")
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.child.close()
        return self.child.exitstatus

    def stopped_then_powered_off(self):
        """True when the console shows the init script's stop, then the
        kernel powering off (rcK ran before the end)."""
        log = self.console_log()
        stop = log.rfind("Stopping aesdsocket: OK")
        return stop >= 0 and (log.find("reboot: Power down", stop) > stop or
                              log.find("Requesting system poweroff", stop) > stop)

    def kill(self):
        """Stop QEMU if it still runs (it is our child, so by its own pid)."""
        if self.child is not None and self.child.isalive():
            self.child.terminate(force=True)
        if self.logfile is not None:
            self.logfile.close()

    def console_log(self):
        if self.logfile is not None and not self.logfile.closed:
            self.logfile.flush()
        try:
            with open(self.logpath, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def printed_hints(self):
        """The commands runqemu.sh printed for the user to try, comments
        removed: {"nc": ..., "ssh": ..., "scp": ...}."""
        log = self.console_log()
        start = log.index("from another terminal:")
        end = log.index("runqemu.sh: quit with", start)
        hints = {}
        for line in log[start:end].splitlines()[1:]:
            command = line.split("#", 1)[0].strip()
            if command:
                name = "nc" if "| nc " in command else command.split()[0]
                hints[name] = command
        return hints

    # -- commands ----------------------------------------------------------

    def run(self, command, timeout=CMD_TIMEOUT):
        """Run a shell command on the console; return (exit status, output)."""
        tag = uuid.uuid4().hex[:12]
        self.child.sendline(f"echo {tag}-start; {command}; echo {tag}-rc=$?")
        # Lines end in \r\r\n: the guest's tty and the host's pty each add \r
        self.child.expect(rf"{tag}-start\r*\n", timeout=timeout)
        self.child.expect(rf"{tag}-rc=(\d+)\r*\n", timeout=timeout)
        output = re.sub(r"\r+\n", "\n", self.child.before)
        return int(self.child.match.group(1)), output

    def check(self, command, timeout=CMD_TIMEOUT):
        """Run a command that must succeed; return its output."""
        rc, output = self.run(command, timeout)
        assert rc == 0, f"{command!r} exited {rc}:\n{output}"
        return output

    def wait_for(self, command, timeout=30, interval=0.2):
        """Re-run a command until it succeeds; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            rc, output = self.run(command)
            if rc == 0:
                return output
            if time.monotonic() > deadline:
                raise AssertionError(f"{command!r} still failing after {timeout} s:\n{output}")
            time.sleep(interval)

    def ssh(self, command, timeout=CMD_TIMEOUT):
        return subprocess.run(
            ["sshpass", "-p", "root", "ssh", *ssh_options(), "-p", str(self.ssh_port),
             "root@127.0.0.1", command],
            capture_output=True, timeout=timeout, check=False)

    def connection_log(self):
        """aesdsocket's syslog lines for connections from the host:
        (accepted, closed) counts."""
        out = self.check(f"grep aesdsocket {SYSLOG} || true")
        return tuple(out.count(f"{what} connection from {HOST_FROM_GUEST}\n")
                     for what in ("Accepted", "Closed"))

    def wait_connection_log(self, expected, timeout=10):
        """Wait until connection_log() is at least `expected` (a worker logs
        the close just after its last answer); return it then."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.connection_log()
            if all(c >= e for c, e in zip(counts, expected)) or time.monotonic() > deadline:
                return counts
            time.sleep(0.2)

    def scp_round_trip(self, workdir, legacy, size=256 * 1024):
        """Copy random bytes to the guest and back with scp (SFTP, or the
        old protocol with legacy=True); raise AssertionError unless both
        copies are whole."""
        kind = "legacy" if legacy else "sftp"
        payload = os.urandom(size)
        source = os.path.join(workdir, f"payload-{kind}.bin")
        back = os.path.join(workdir, f"back-{kind}.bin")
        remote = f"/tmp/payload-{kind}.bin"
        with open(source, "wb") as f:
            f.write(payload)
        up = self.scp(source, f"guest:{remote}", legacy=legacy)
        assert up.returncode == 0, up.stderr.decode()
        digest = hashlib.sha256(payload).hexdigest()
        assert self.check(f"sha256sum {remote}").split()[0] == digest
        down = self.scp(f"guest:{remote}", back, legacy=legacy)
        assert down.returncode == 0, down.stderr.decode()
        with open(back, "rb") as f:
            assert f.read() == payload, f"{kind}: the copy back differs"

    def scp(self, source, dest, legacy=False, timeout=CMD_TIMEOUT):
        """scp between host and guest; `guest:PATH` names a guest path."""
        def arg(path):
            return path.replace("guest:", "root@127.0.0.1:", 1)
        cmd = ["sshpass", "-p", "root", "scp", *ssh_options(), "-P", str(self.ssh_port)]
        if legacy:
            cmd.append("-O")
        return subprocess.run(cmd + [arg(source), arg(dest)], capture_output=True,
                              timeout=timeout, check=False)


def ssh_options():
    return ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=30",
            "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"]


def ensure_host_packages():
    missing = [p for p in HOST_PACKAGES if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True,
        check=False).stdout.find("ok installed") < 0]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                       check=True)
