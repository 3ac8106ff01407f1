#!/usr/bin/python3
"""Where a boot's time goes: boot the image N times with runqemu.sh and time
every console line from QEMU's start (host clock), until port 9000 answers
through the forward; print each boot's timeline and the median.

    tests/system/boot_time.py [-n 5] [--image fast|buildroot] [-v]

The image is the one runqemu.sh would boot (the Buildroot one when built,
else the fast one) unless --image or AESD_IMAGE says. The Buildroot image
must have been built (./build.sh); the fast one is built first when it is
missing or stale (runqemu.sh --dry-run), so that no build is timed as part
of a boot. The Buildroot image boots with AESD_QEMU_SNAPSHOT=1, so every
boot is the first boot of a fresh image, as for the fast image (which
lives in RAM).
A line's time is when its end reached the host: for "Starting X: OK", the
end of X's start script; the time since the line before is what X took.
Extra kernel command line (e.g. loglevel=7 to see the kernel's own lines)
goes in AESD_QEMU_APPEND, as for runqemu.sh.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

import pexpect

from qemu_guest import BOOT_TIMEOUT, BR_IMAGES, RUNQEMU, free_port, probe_port

# What the Buildroot image boots from, as runqemu.sh looks for it
BR_FILES = [os.path.join(BR_IMAGES, name) for name in ("Image", "rootfs.ext4")]


def default_image():
    """The image runqemu.sh boots: the Buildroot one when it is built."""
    return os.environ.get("AESD_IMAGE") or (
        "buildroot" if all(map(os.path.exists, BR_FILES)) else "fast")


def boot_once(image, verbose):
    """Boot, return ([(seconds, line)], seconds until the port answered)."""
    port, ssh_port = free_port(), free_port()
    env = dict(os.environ, AESD_IMAGE=image, AESD_HOST_PORT=str(port),
               AESD_SSH_PORT=str(ssh_port), AESD_QEMU_SNAPSHOT="1")
    started = time.monotonic()
    child = pexpect.spawn(RUNQEMU, env=env, encoding="utf-8",
                          codec_errors="replace", dimensions=(50, 250))
    lines = []
    try:
        deadline = started + BOOT_TIMEOUT
        while True:
            try:
                child.expect(r"\r*\n", timeout=max(1, deadline - time.monotonic()))
            except (pexpect.EOF, pexpect.TIMEOUT) as e:
                last = "\n".join(f"  {line}" for _, line in lines[-15:])
                why = "QEMU exited" if isinstance(e, pexpect.EOF) else \
                    f"no 'Starting aesdsocket: OK' within {BOOT_TIMEOUT:.0f} s"
                raise SystemExit(f"boot_time.py: {why}; the console's last lines:\n{last}")
            now = time.monotonic() - started
            line = child.before.strip()
            lines.append((now, line))
            if verbose:
                print(f"{now:7.2f}  {line}", flush=True)
            if "Starting aesdsocket: OK" in line:
                break
        if not probe_port(port, timeout=max(1, deadline - time.monotonic())):
            raise SystemExit("aesdsocket started but port 9000 does not answer")
        answered = time.monotonic() - started
        lines.append((answered, "(port 9000 answered through the forward)"))
        return lines, answered
    finally:
        # QEMU is our child; the image is a snapshot or in RAM
        child.terminate(force=True)


def milestones(lines):
    """The lines worth a column: the kernel's first, init's, the scripts'."""
    picked = []
    for seconds, line in lines:
        if (line.startswith("runqemu.sh: booting") or
                re.match(r"(\[ *[\d.]+\] )?(Booting Linux|Run /s?bin/init)", line) or
                re.search(r"(OK|FAIL)$|^(Starting|Running|Loading) |not found|"
                          r"port 9000", line)):
            picked.append((seconds, line))
    return picked


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5, help="boots (default 5)")
    parser.add_argument("--image", choices=("fast", "buildroot"), default=default_image(),
                        help="default: the one runqemu.sh would boot")
    parser.add_argument("-v", action="store_true", help="print every line")
    args = parser.parse_args()
    missing = [f for f in BR_FILES if not os.path.exists(f)]
    if args.image == "buildroot" and missing:
        print(f"boot_time.py: the Buildroot image is not built (no {', '.join(missing)}):"
              " build it with ./build.sh, or time the fast image (--image fast)",
              file=sys.stderr)
        return 2
    if args.image == "fast":
        # built now if missing or stale, not during a timed boot
        subprocess.run([RUNQEMU, "--dry-run"], env=dict(os.environ, AESD_IMAGE="fast"),
                       stdout=subprocess.DEVNULL, check=True)

    results = []
    for n in range(args.n):
        lines, answered = boot_once(args.image, args.v)
        results.append(answered)
        print(f"boot {n + 1} ({args.image}, load {os.getloadavg()[0]:.1f}):")
        previous = 0.0
        for seconds, line in milestones(lines):
            print(f"  {seconds:6.2f} s  (+{seconds - previous:5.2f})  {line}")
            previous = seconds
    print(f"QEMU start to port 9000 answering, {args.image} image, "
          f"{len(results)} boots: median {statistics.median(results):.2f} s "
          f"(min {min(results):.2f}, max {max(results):.2f}; "
          + ", ".join(f"{r:.2f}" for r in results) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
