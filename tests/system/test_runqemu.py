"""runqemu.sh without booting anything, with stand-ins for dpkg-query,
apt-get and qemu-system-aarch64: on a fresh machine (a PATH with no QEMU, no
netcat and no ssh client) it must install what it and the hints it prints
need, and only what is missing; the Buildroot image's disk persists across
boots in a copy of rootfs.ext4, made again after a rebuild, or is thrown
away with --snapshot; and rootfs.ext4 itself is never written."""

import hashlib
import os
import shlex
import socket
import subprocess
import time

from qemu_guest import RUNQEMU, free_port

# What runqemu.sh itself runs besides the stand-ins
HOST_TOOLS = ["bash", "cat", "cp", "dirname", "find", "grep", "id", "mkdir",
              "mv", "realpath", "sed", "stat"]

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


def run(stubs, out, *args, **env_extra):
    """runqemu.sh ARGS on the fake machine, on free ports unless given."""
    env = {"PATH": str(stubs), "STUBS": str(stubs), "RECORDER": RECORDER,
           "AESD_IMAGE": "fast",
           "AESD_IMAGE_OUT": str(out), "AESD_HOST_PORT": str(free_port()),
           "AESD_SSH_PORT": str(free_port()), "HOME": str(stubs.parent), **env_extra}
    return subprocess.run([RUNQEMU, *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def qemu_args(stubs):
    """The arguments the stand-in QEMU got at its last start, and forget them."""
    recorded = stubs / ".qemu-system-aarch64.args"
    args = recorded.read_text().splitlines()
    recorded.unlink()
    return args


def drive(args):
    return dict(o.split("=", 1) for o in args[args.index("-drive") + 1].split(","))


def apt_calls(stubs):
    log = stubs / ".apt-get.log"
    return log.read_text().splitlines() if log.exists() else []


def test_fresh_machine_gets_qemu_netcat_and_ssh(tmp_path):
    stubs, out = fake_machine(tmp_path)
    port, ssh_port = free_port(), free_port()
    r = run(stubs, out, AESD_HOST_PORT=str(port), AESD_SSH_PORT=str(ssh_port))
    assert r.returncode == 0, r.stderr
    installs = [c for c in apt_calls(stubs) if c.startswith("install")]
    assert len(installs) == 1, apt_calls(stubs)
    assert set(installs[0].split()) >= {"qemu-system-arm", "netcat-openbsd",
                                        "openssh-client"}, installs
    # then it booted, with the forwards on 127.0.0.1 only and restrict=on
    args = (stubs / ".qemu-system-aarch64.args").read_text().splitlines()
    netdev = args[args.index("-netdev") + 1]
    assert "restrict=on" in netdev.split(",")
    assert f"hostfwd=tcp:127.0.0.1:{port}-:9000" in netdev.split(",")
    # and printed hints for exactly the tools it installed; ssh and scp
    # neither keep nor check the guest's host key, which changes with every
    # fast-image boot and every Buildroot rebuild
    assert f"echo hello | nc -N 127.0.0.1 {port}" in r.stderr
    no_host_keys = "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no"
    assert f"ssh {no_host_keys} -o LogLevel=ERROR -p {ssh_port} root@127.0.0.1" in r.stderr
    assert f"scp {no_host_keys} -o LogLevel=ERROR -P {ssh_port} FILE " in r.stderr


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


def buildroot_machine(tmp_path):
    """A machine with everything installed, a stand-in rootfs.ext4 and
    where runqemu.sh is to keep the guest's disk."""
    stubs, out = fake_machine(tmp_path, preinstalled=["netcat-openbsd"])
    for tool in ("qemu-system-aarch64", "nc", "ssh", "scp"):
        (stubs / tool).write_text(RECORDER + "\n")
        (stubs / tool).chmod(0o755)
    rootfs = tmp_path / "images" / "rootfs.ext2"
    rootfs.parent.mkdir()
    rootfs.write_bytes(b"as built" * 1000)
    # Buildroot's rootfs.ext4 is a link to rootfs.ext2
    (rootfs.parent / "rootfs.ext4").symlink_to("rootfs.ext2")
    env = {"AESD_IMAGE": "buildroot", "AESD_ROOTFS": str(rootfs.parent / "rootfs.ext4"),
           "AESD_DISK": str(tmp_path / "output" / "aesd-disk.ext4")}
    return stubs, out, env, rootfs


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_buildroot_disk_persists_until_the_image_is_rebuilt(tmp_path):
    stubs, out, env, rootfs = buildroot_machine(tmp_path)
    disk = tmp_path / "output" / "aesd-disk.ext4"
    built = sha256(rootfs)

    r = run(stubs, out, **env)
    assert r.returncode == 0, r.stderr
    assert drive(qemu_args(stubs)) == {"file": str(disk), "if": "none", "format": "raw",
                                       "id": "hd0"}
    assert disk.read_bytes() == rootfs.read_bytes()
    assert "persists across boots" in r.stderr

    # what the guest wrote is there at the next boot
    disk.write_bytes(b"the guest wrote this")
    r = run(stubs, out, **env)
    assert r.returncode == 0, r.stderr
    assert drive(qemu_args(stubs))["file"] == str(disk)
    assert disk.read_bytes() == b"the guest wrote this"
    assert sha256(rootfs) == built

    # a rebuild (a new file, as Buildroot's mkfs makes) gives a new disk
    rootfs.unlink()
    rootfs.write_bytes(b"rebuilt" * 1000)
    future = time.time() + 10
    os.utime(rootfs, (future, future))
    r = run(stubs, out, **env)
    assert r.returncode == 0, r.stderr
    assert "changed since the guest's disk was made" in r.stderr
    assert drive(qemu_args(stubs))["file"] == str(disk)
    assert disk.read_bytes() == rootfs.read_bytes()


def test_snapshot_boots_the_image_and_keeps_nothing(tmp_path):
    stubs, out, env, rootfs = buildroot_machine(tmp_path)
    for how in (["--snapshot"], ["--snapshot", "--"]):
        r = run(stubs, out, *how, "-s", **env)
        assert r.returncode == 0, r.stderr
        args = qemu_args(stubs)
        assert drive(args)["file"] == env["AESD_ROOTFS"]
        assert drive(args)["snapshot"] == "on"
        # what follows the options goes to QEMU
        assert args[-1] == "-s", args
    # the environment variable of old does the same
    r = run(stubs, out, AESD_QEMU_SNAPSHOT="1", **env)
    assert r.returncode == 0, r.stderr
    assert drive(qemu_args(stubs))["snapshot"] == "on"
    # after --, an argument that looks like ours is QEMU's
    r = run(stubs, out, "--", "--snapshot", **env)
    assert r.returncode == 0, r.stderr
    args = qemu_args(stubs)
    assert "snapshot" not in drive(args) and args[-1] == "--snapshot", args
    assert not (tmp_path / "output" / "aesd-disk.ext4.tmp").exists()


def test_dry_run_prints_the_command_and_starts_nothing(tmp_path):
    stubs, out, env, rootfs = buildroot_machine(tmp_path)
    r = run(stubs, out, "--dry-run", "--snapshot", **env)
    assert r.returncode == 0, r.stderr
    assert not (stubs / ".qemu-system-aarch64.args").exists()
    words = shlex.split(r.stdout)
    assert words[0] == "qemu-system-aarch64"
    assert drive(words) == {"file": env["AESD_ROOTFS"], "snapshot": "on", "if": "none",
                            "format": "raw", "id": "hd0"}
    assert "-nographic" in words and "-kernel" in words


def test_help_names_the_flags_and_starts_nothing(tmp_path):
    stubs, out, env, rootfs = buildroot_machine(tmp_path)
    r = run(stubs, out, "--help", **env)
    assert r.returncode == 0, r.stderr
    for flag in ("--snapshot", "--dry-run", "AESD_QEMU_SNAPSHOT", "AESD_DISK",
                 "What persists across boots"):
        assert flag in r.stdout
    assert not (stubs / ".qemu-system-aarch64.args").exists()


def test_a_busy_port_is_named_with_the_variable_that_moves_it(tmp_path):
    stubs, out = fake_machine(tmp_path, preinstalled=["netcat-openbsd"])
    for tool in ("qemu-system-aarch64", "nc", "ssh", "scp"):
        (stubs / tool).write_text(RECORDER + "\n")
        (stubs / tool).chmod(0o755)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        for variable, guest_port in (("AESD_HOST_PORT", 9000), ("AESD_SSH_PORT", 22)):
            r = run(stubs, out, **{variable: str(port)})
            assert r.returncode == 2, r.stderr
            assert f"port {port} on 127.0.0.1, forwarded to the guest's port " \
                f"{guest_port}, is in use" in r.stderr
            assert f"{variable}={port + 1} ./runqemu.sh" in r.stderr
            # said before anything else: no greeting, no QEMU
            assert "booting" not in r.stderr
            assert not (stubs / ".qemu-system-aarch64.args").exists()
