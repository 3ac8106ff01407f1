"""System tests: boot the AArch64 image in QEMU through runqemu.sh and drive it
(see qemu_guest.py). When a test that boots fails, the guest's console log is
attached to its report. No boot writes to the image under test: the fast
image runs from RAM, and the Buildroot image's guests write to a disk of
their own (below), or to nothing with --snapshot.

Environment:
  AESD_IMAGE=fast|buildroot   image to test (default: fast, built afresh by
                              image/build.sh into a temporary directory)
"""

import os
import subprocess
import time

import pytest

from qemu_guest import (BR_IMAGES, BUILD, TOP, Guest, ensure_host_packages,
                        started_guests, timings)


@pytest.fixture(scope="session")
def image_env(tmp_path_factory):
    """Environment for runqemu.sh: which image, built afresh when it is the
    fast one (so the tests never boot a stale aesdsocket)."""
    ensure_host_packages()
    choice = os.environ.get("AESD_IMAGE", "fast")
    if choice == "buildroot":
        for f in ("Image", "rootfs.ext4"):
            if not os.path.exists(os.path.join(BR_IMAGES, f)):
                pytest.fail(f"AESD_IMAGE=buildroot but {BR_IMAGES}/{f} is missing")
        return {"AESD_IMAGE": "buildroot"}
    out = tmp_path_factory.mktemp("image")
    # One timestamp for every build of this run, even if HEAD moves meanwhile
    epoch = os.environ.get("SOURCE_DATE_EPOCH") or subprocess.run(
        ["git", "-C", TOP, "log", "-1", "--format=%ct"], capture_output=True,
        text=True, check=False).stdout.strip() or "0"
    started = time.monotonic()
    subprocess.run([BUILD], env=dict(os.environ, AESD_IMAGE_OUT=str(out),
                                     SOURCE_DATE_EPOCH=epoch), check=True)
    timings.append(("image build (downloads cached)", time.monotonic() - started))
    return {"AESD_IMAGE": "fast", "AESD_IMAGE_OUT": str(out), "SOURCE_DATE_EPOCH": epoch}


@pytest.fixture(scope="module")
def make_guest(image_env, tmp_path_factory, request):
    """Factory for guests of this module; all are stopped at its end. The
    Buildroot image's guests boot, as runqemu.sh does for people, with a
    persistent disk copied from rootfs.ext4: one for this module, so that
    it persists across the module's boots and no other test sees it."""
    logdir = str(tmp_path_factory.mktemp("console"))
    env = dict(image_env, AESD_QEMU_SNAPSHOT="0",
               AESD_DISK=os.path.join(logdir, "disk.ext4"))
    started = []

    def make(name=None, args=(), **extra_env):
        guest = Guest(logdir, name or request.module.__name__,
                      dict(env, **extra_env), args=args)
        started.append(guest)
        return guest

    yield make
    for guest in started:
        guest.kill()


@pytest.fixture(scope="module")
def guest(make_guest):
    """One booted guest, logged in on the console, shared by a test module."""
    g = make_guest()
    g.boot(measure=True)
    return g


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    uses_guest = {"guest", "make_guest"} & set(getattr(item, "fixturenames", ()))
    if report.failed and uses_guest and started_guests:
        log = started_guests[-1].console_log()
        if len(log) > 200000:
            log = "[... start cut ...]\n" + log[-200000:]
        report.sections.append(("guest console log", log))


def pytest_terminal_summary(terminalreporter):
    if timings:
        terminalreporter.section("system test figures")
        for what, seconds in timings:
            terminalreporter.write_line(f"{what}: {seconds:.1f} s")
