"""runqemu.sh on a fresh machine, without booting anything: with a PATH that
has no QEMU, no netcat and no ssh client, and stand-ins for dpkg-query,
apt-get and qemu-system-aarch64, it must install what it and the hints it
prints need, and only what is missing."""

import os
import subprocess
import time

from qemu_guest import RUNQEMU

# What runqemu.sh itself runs besides the stand-ins
HOST_TOOLS = ["bash", "cat", "dirname", "find", "grep", "id"]

# The stand-ins themselves use the real system's tools
STUB_DPKG_QUERY = """#!/bin/sh
PATH=/usr/bin:/bin
# "installed" once the fake apt-get has run install
pkg=$(for a; do last=$a; done; echo "$last")
if [ -e "$STUBS/.installed" ] || grep -qx "$pkg" "$STUBS/.preinstalled" 2>/dev/null; then
    printf 'install ok installed'
else
    exit 1
fi
"""

STUB_APT_GET = """#!/bin/sh
PATH=/usr/bin:/bin
echo "$*" >> "$STUBS/.apt-get.log"
[ "$1" = update ] && exit 0
for tool in qemu-system-aarch64 nc ssh scp; do
    printf '%s\\n' "$RECORDER" > "$STUBS/$tool"
    chmod +x "$STUBS/$tool"
done
touch "$STUBS/.installed"
"""


# A stand-in program that records its arguments, one a line
RECORDER = '#!/bin/sh\nprintf "%s\\n" "$@" > "$STUBS/.${0##*/}.args"'


def fake_machine(tmp_path, preinstalled=()):
    """A stub directory standing in for PATH, and a fast image that is newer
    than its sources (so runqemu.sh does not build one)."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in HOST_TOOLS:
        path = subprocess.run(["bash", "-c", f"command -v {tool}"], text=True,
                              capture_output=True, check=True).stdout.strip()
        (stubs / tool).symlink_to(path)
    for name, text in (("dpkg-query", STUB_DPKG_QUERY), ("apt-get", STUB_APT_GET),
                       ("sudo", '#!/bin/sh\nexec "$@"\n')):
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    (stubs / ".preinstalled").write_text("".join(p + "\n" for p in preinstalled))
    out = tmp_path / "image"
    out.mkdir()
    future = time.time() + 3600
    for name in ("Image", "rootfs.cpio"):
        (out / name).write_bytes(b"")
        os.utime(out / name, (future, future))
    return stubs, out


def run(stubs, out):
    env = {"PATH": str(stubs), "STUBS": str(stubs), "RECORDER": RECORDER,
           "AESD_IMAGE": "fast",
           "AESD_IMAGE_OUT": str(out), "AESD_HOST_PORT": "19190",
           "AESD_SSH_PORT": "19122", "HOME": str(stubs.parent)}
    return subprocess.run([RUNQEMU], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def apt_calls(stubs):
    log = stubs / ".apt-get.log"
    return log.read_text().splitlines() if log.exists() else []


def test_fresh_machine_gets_qemu_netcat_and_ssh(tmp_path):
    stubs, out = fake_machine(tmp_path)
    r = run(stubs, out)
    assert r.returncode == 0, r.stderr
    installs = [c for c in apt_calls(stubs) if c.startswith("install")]
    assert len(installs) == 1, apt_calls(stubs)
    assert set(installs[0].split()) >= {"qemu-system-arm", "netcat-openbsd",
                                        "openssh-client"}, installs
    # then it booted, with the forwards on 127.0.0.1 only and restrict=on
    args = (stubs / ".qemu-system-aarch64.args").read_text().splitlines()
    netdev = args[args.index("-netdev") + 1]
    assert "restrict=on" in netdev.split(",")
    assert "hostfwd=tcp:127.0.0.1:19190-:9000" in netdev.split(",")
    # and printed hints for exactly the tools it installed
    assert "echo hello | nc -N 127.0.0.1 19190" in r.stderr
    assert "ssh -p 19122 root@127.0.0.1" in r.stderr
    assert "scp -P 19122 " in r.stderr


def test_nothing_is_installed_when_nothing_is_missing(tmp_path):
    stubs, out = fake_machine(tmp_path, preinstalled=["netcat-openbsd"])
    for tool in ("qemu-system-aarch64", "nc", "ssh", "scp"):
        (stubs / tool).write_text(RECORDER + "\n")
        (stubs / tool).chmod(0o755)
    r = run(stubs, out)
    assert r.returncode == 0, r.stderr
    assert apt_calls(stubs) == []
    assert (stubs / ".qemu-system-aarch64.args").exists()


def test_a_missing_ssh_client_alone_is_installed(tmp_path):
    stubs, out = fake_machine(tmp_path, preinstalled=["netcat-openbsd"])
    (stubs / "qemu-system-aarch64").write_text("#!/bin/sh\nexit 0\n")
    (stubs / "qemu-system-aarch64").chmod(0o755)
    r = run(stubs, out)
    assert r.returncode == 0, r.stderr
    installs = [c.split()[1:] for c in apt_calls(stubs) if c.startswith("install")]
    assert [[p for p in c if not p.startswith("-")] for c in installs] == \
        [["openssh-client"]]
