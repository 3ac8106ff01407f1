"""Shutdown and the next boot: poweroff runs the stop scripts (aesdsocket
deletes its data file) and QEMU exits 0; the next boot has no stale data.
The ssh host key: made at the first connection, never shipped in the image;
the Buildroot image keeps it on its disk for the next boots, the fast image
(in RAM) makes a new one at every boot. What persists: the Buildroot
image's disk (runqemu.sh's copy of rootfs.ext4), unless --snapshot; never
the image files themselves."""

import subprocess

from qemu_guest import DATA_FILE, INIT_SCRIPT, booted_files, send_packets, sha256


def host_key(guest):
    """The guest's ed25519 host key, as ssh-keyscan reads it."""
    r = subprocess.run(["ssh-keyscan", "-T", "30", "-t", "ed25519", "-p",
                        str(guest.ssh_port), "127.0.0.1"],
                       capture_output=True, text=True, timeout=60, check=False)
    keys = [line.split()[1:] for line in r.stdout.splitlines()
            if line and not line.startswith("#")]
    assert len(keys) == 1, r.stdout + r.stderr
    return keys[0]


def test_poweroff_stops_service_then_fresh_boot(make_guest):
    first = make_guest("first-boot")
    first.boot(measure=True)
    # (after the boot time probe's packet)
    assert send_packets(first.host_port, b"from the first boot\n").endswith(
        b"probe\nfrom the first boot\n")
    first.check(f"test -f {DATA_FILE}")
    first_key = host_key(first)

    status = first.poweroff()
    assert status == 0, f"QEMU exited {status}"
    # rcK ran the init script's stop, before the kernel powered off
    assert first.stopped_then_powered_off(), first.console_log()[-2000:]

    second = make_guest("second-boot")
    second.boot()
    # No data: the file is absent, or empty if aesdsocket made it at start
    second.check(f"! test -s {DATA_FILE}")
    rc, out = second.run(f"{INIT_SCRIPT} status")
    assert rc == 0, out
    assert send_packets(second.host_port, b"second\n") == b"second\n"

    if second.env["AESD_IMAGE"] == "buildroot":
        assert host_key(second) == first_key, "a new host key after a reboot"
    else:
        assert host_key(second) != first_key, "the same key in two RAM boots"
    # (and frees the module's disk for the next test's boots)
    assert second.poweroff() == 0


def test_boots_leave_the_image_as_built(make_guest, image_env):
    """A --snapshot boot starts from the image as built, not from the disk
    that persistent boots write to (the Buildroot image's; the fast image
    has none, it runs in RAM; test_poweroff_stops_service_then_fresh_boot
    shows what persists), and no boot changes a byte of the image."""
    persistent = make_guest("persistent")
    # What a --snapshot boot boots: the image files as built
    image = booted_files(dict(persistent.env, AESD_QEMU_SNAPSHOT="1"))
    assert len(image) == 2, image
    before = {f: sha256(f) for f in image}

    persistent.boot()
    persistent.check("echo persistent > /root/mark && sync")
    if image_env["AESD_IMAGE"] == "buildroot":
        # booted from its own disk, not rootfs.ext4
        assert booted_files(persistent.env)[-1] not in image
    assert persistent.poweroff() == 0

    throwaway = make_guest("snapshot", args=["--snapshot"])
    throwaway.boot()
    throwaway.check("! test -e /root/mark")
    throwaway.check("echo snapshot > /root/mark && sync")
    assert throwaway.poweroff() == 0

    assert {f: sha256(f) for f in image} == before
