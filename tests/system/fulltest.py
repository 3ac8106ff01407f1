#!/usr/bin/python3
"""The checks of full-test.sh (see there), on one throwaway boot of the image
with qemu_guest's Guest, as the system tests boot it. One PASS or FAIL line
per check, then "N passed, M failed"; exit status 0 only when none failed.
A check whose guest is gone (the boot failed, say) fails without running.
QEMU is stopped on any way out: failure, Ctrl-C, SIGTERM, SIGHUP.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import pexpect

from qemu_guest import HOST_FROM_GUEST, Guest, booted_files, sha256, sockettest


class Run:
    """The guest and what the checks found out along the way."""

    def __init__(self, workdir):
        self.workdir = workdir
        env = dict(os.environ, AESD_QEMU_SNAPSHOT="1")
        ports = [int(os.environ[v]) if os.environ.get(v) else None
                 for v in ("AESD_HOST_PORT", "AESD_SSH_PORT")]
        self.guest = Guest(workdir, "full-test", env, host_port=ports[0],
                           ssh_port=ports[1])
        self.booted = False
        self.connections = 0
        # what QEMU boots, with their sha256 before the boot
        self.image = {}


def check_boot(run):
    """boot: init starts aesdsocket, root logs in on the console"""
    guest = run.guest
    # runqemu.sh --dry-run installs what is missing, builds the fast image
    # if need be, and names the files QEMU will boot
    files = booted_files(guest.env)
    print("full-test: a throwaway boot (runqemu.sh --snapshot) of " + " ".join(files))
    run.image = {f: sha256(f) for f in files}
    guest.boot()
    run.booted = True
    assert "Starting aesdsocket: OK" in guest.console_log(), "no 'Starting aesdsocket: OK'"
    return f"{time.monotonic() - guest.started:.1f} s from QEMU's start to the shell"


def check_sockettest(run):
    """sockettest.sh through the forward to the guest's port 9000"""
    result = sockettest(run.guest.host_port)
    assert result.returncode == 0, result.stdout + result.stderr
    run.connections = result.stdout.count("sending string")
    return f"{run.connections} connections to 127.0.0.1:{run.guest.host_port}"


def check_syslog(run):
    """syslog: aesdsocket logged each connection's accept and close"""
    assert run.connections, "no connections to look for (sockettest did not run)"
    expected = (run.connections, run.connections)
    counts = run.guest.wait_connection_log(expected)
    assert counts == expected, \
        f"(Accepted, Closed) connection from {HOST_FROM_GUEST}: {counts}, expected {expected}"
    return f"{run.connections} 'Accepted connection from {HOST_FROM_GUEST}', " \
           f"as many 'Closed connection from {HOST_FROM_GUEST}'"


def check_ssh(run):
    """ssh through the forward to the guest's port 22"""
    result = run.guest.ssh("uname -m; id -u")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["aarch64", "0"], result.stdout.decode()
    return f"root@127.0.0.1 -p {run.guest.ssh_port}: uname -m, id -u"


def check_scp(run):
    """scp through the same forward, to the guest and back"""
    for legacy in (False, True):
        run.guest.scp_round_trip(run.workdir, legacy)
    return "256 KiB both ways, with scp and scp -O"


def check_poweroff(run):
    """poweroff: the service stops, QEMU exits 0"""
    guest = run.guest
    run.booted = False
    status = guest.poweroff()
    assert status == 0, f"QEMU exited {status}"
    assert guest.stopped_then_powered_off(), "no 'Stopping aesdsocket: OK' before the power off"


def check_image_unchanged(run):
    """the image files are as before the boot (a throwaway boot)"""
    assert run.image, "not run: the boot did not start"
    changed = [f for f, digest in run.image.items() if sha256(f) != digest]
    assert not changed, f"changed: {', '.join(changed)}"
    return ", ".join(sorted(os.path.basename(f) for f in run.image)) + ": same sha256"


CHECKS = [check_boot, check_sockettest, check_syslog, check_ssh, check_scp,
          check_poweroff, check_image_unchanged]


def why(error, guest):
    """What to say about a failed check."""
    if isinstance(error, AssertionError):
        return str(error)
    if isinstance(error, (pexpect.EOF, pexpect.TIMEOUT)):
        waited = re.findall(r"re\.compile\((.*)\)", str(error))
        what = "QEMU ended" if isinstance(error, pexpect.EOF) else "timed out"
        tail = guest.console_log().strip().splitlines()[-10:]
        return f"{what} while waiting for {' or '.join(waited) or 'the console'}; " \
               "the console's last lines:\n" + "\n".join(tail)
    if isinstance(error, subprocess.CalledProcessError):
        command = " ".join(os.path.relpath(w) if os.path.isabs(w) else w for w in error.cmd)
        return f"{command} exited {error.returncode} (it says why on stderr)"
    return traceback.format_exception_only(type(error), error)[-1]


def interrupted(signum, _frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main():
    # in order with what runqemu.sh and QEMU print on stderr
    sys.stdout.reconfigure(line_buffering=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    workdir = tempfile.mkdtemp(prefix="aesd-full-test.")
    run = Run(workdir)
    passed = failed = 0
    print(f"full-test: aesdsocket on 127.0.0.1:{run.guest.host_port}, "
          f"ssh on 127.0.0.1:{run.guest.ssh_port}")
    try:
        for check in CHECKS:
            what = check.__doc__
            needs_guest = check not in (check_boot, check_image_unchanged)
            try:
                if needs_guest and not run.booted:
                    raise AssertionError("not run: no guest")
                detail = check(run)
            except Exception as e:  # a failed check, whatever its kind
                failed += 1
                print(f"FAIL: {what}")
                for line in why(e, run.guest).strip().splitlines()[-20:]:
                    print(f"    {line}")
            else:
                passed += 1
                print(f"PASS: {what}" + (f" ({detail})" if detail else ""))
    except KeyboardInterrupt as e:
        failed += 1
        print(f"FAIL: interrupted ({e or 'SIGINT'})")
    finally:
        run.guest.kill()
    if failed:
        print(f"full-test: console log and files kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
