"""Both images are built reproducibly. The fast image: a second build from
the same inputs gives bit-identical files. The Buildroot image takes tens of
minutes to build, so two clean builds are compared by hand (README, "Full
Buildroot image"), and the buildroot-image stage checks that rebuilding the
package and the root file system gives the same bytes; here, the image under
test has what made its rootfs.ext4 reproducible: a fixed UUID and directory
hash seed, and Buildroot's SOURCE_DATE_EPOCH as the time stamps mke2fs
writes and as every time of the files, ctime included."""

import calendar
import os
import re
import subprocess
import time

from qemu_guest import BR_IMAGES, BUILD, TOP, sha256


def test_image_is_built_reproducibly(image_env, tmp_path):
    if image_env["AESD_IMAGE"] == "fast":
        fast_rebuild_is_bit_identical(image_env, tmp_path)
    else:
        buildroot_rootfs_has_fixed_identity_and_times()


def fast_rebuild_is_bit_identical(image_env, tmp_path):
    first = image_env["AESD_IMAGE_OUT"]
    second = tmp_path / "second"
    # Same inputs, different output directory (and so build directory)
    subprocess.run([BUILD], env=dict(os.environ, AESD_IMAGE_OUT=str(second),
                                     SOURCE_DATE_EPOCH=image_env["SOURCE_DATE_EPOCH"]),
                   check=True)
    for name in ("Image", "rootfs.cpio"):
        assert sha256(os.path.join(first, name)) == sha256(second / name), name
    with open(os.path.join(first, "manifest.txt")) as f:
        assert f.read() == (second / "manifest.txt").read_text()


def defconfig_value(name):
    path = os.path.join(TOP, "base_external", "configs", "aesd_qemu_defconfig")
    with open(path) as f:
        m = re.search(rf'^{name}="(.*)"$', f.read(), re.M)
    assert m, f"{name} is not in {path}"
    return m.group(1)


def buildroot_rootfs_has_fixed_identity_and_times():
    options = defconfig_value("BR2_TARGET_ROOTFS_EXT2_MKFS_OPTIONS")
    uuid = re.search(r"-U (\S+)", options).group(1)
    seed = re.search(r"hash_seed=([^\s,]+)", options).group(1)
    # The time stamp Buildroot exports: the date of its own commit
    epoch = int(subprocess.run(
        ["git", "-C", os.path.join(TOP, "buildroot"), "log", "-1", "--format=%at"],
        capture_output=True, text=True, check=True, timeout=30).stdout)
    r = subprocess.run(["dumpe2fs", "-h", os.path.join(BR_IMAGES, "rootfs.ext4")],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, TZ="UTC", LC_ALL="C"))
    assert r.returncode == 0, r.stderr
    fields = dict(re.findall(r"^([^:\n]+):\s+(.*)$", r.stdout, re.M))
    assert fields["Filesystem UUID"] == uuid
    assert fields["Directory Hash Seed"] == seed
    # Nothing ever mounted it: runqemu.sh boots a copy, or a snapshot
    assert (fields["Mount count"], fields["Last mount time"]) == ("0", "n/a"), \
        "the build output was booted read-write since it was built; rebuild it"
    created = fields["Filesystem created"]
    assert calendar.timegm(time.strptime(created, "%a %b %d %H:%M:%S %Y")) == epoch, created
    # Every time of every file, ctime included (files a boot does not touch)
    for path in ("/usr/bin/aesdsocket", "/etc/init.d/S99aesdsocket", "/etc/shadow"):
        r = subprocess.run(["debugfs", "-R", f"stat {path}",
                            os.path.join(BR_IMAGES, "rootfs.ext4")],
                           capture_output=True, text=True, timeout=60)
        times = dict(re.findall(r"^\s*(\w+): 0x([0-9a-f]+):", r.stdout, re.M))
        assert set(times) >= {"ctime", "mtime", "atime"}, r.stdout + r.stderr
        assert {int(t, 16) for t in times.values()} == {epoch}, f"{path}: {times}"
