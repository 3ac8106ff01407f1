"""The fast image is reproducible: a second build from the same inputs gives
bit-identical files."""

import hashlib
import os
import subprocess

import pytest

from qemu_guest import BUILD


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_rebuild_is_bit_identical(image_env, tmp_path):
    if image_env["AESD_IMAGE"] != "fast":
        pytest.skip("only the fast image is built by these tests")
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
