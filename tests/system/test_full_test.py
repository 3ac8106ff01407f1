"""full-test.sh when things go wrong (the test.sh stage full-test runs it
when they go right): a failed check fails the run, whatever the checks'
order; and QEMU never outlives it, on failure, Ctrl-C or SIGTERM."""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from qemu_guest import TOP, free_port

FULL_TEST = os.path.join(TOP, "full-test.sh")
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.M)
KEPT = re.compile(r"^full-test: console log and files kept in (\S+)$", re.M)


def qemu_pids(port):
    """Pids of the processes forwarding 127.0.0.1:port to a guest."""
    rule = f"hostfwd=tcp:127.0.0.1:{port}-:9000".encode()
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if rule in f.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def full_test_env(image_env, host_port, tmp_path):
    # A failed run keeps its console log and files for the user, in a
    # directory of its own under TMPDIR: here the test's, which pytest
    # cleans up, not /tmp (three directories left behind per run)
    return dict(os.environ, **image_env, AESD_HOST_PORT=str(host_port),
                TMPDIR=str(tmp_path))


def assert_failed_run(stdout, returncode, tmp_path):
    assert returncode == 1, stdout
    summaries = SUMMARY.findall(stdout)
    assert len(summaries) == 1, stdout
    assert stdout.rstrip("\n").splitlines()[-1] == "%s passed, %s failed" % summaries[0]
    assert int(summaries[0][1]) > 0, stdout
    # it says where it kept the console log, and kept it there
    kept = KEPT.findall(stdout)
    assert len(kept) == 1, stdout
    assert os.path.dirname(kept[0]) == str(tmp_path), stdout
    assert os.path.isfile(os.path.join(kept[0], "full-test-console.log")), stdout


def test_a_failed_boot_fails_the_run(image_env, tmp_path):
    # The forwarded port is taken: runqemu.sh does not start QEMU, and says
    # why
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = subprocess.run([FULL_TEST], env=full_test_env(image_env, port, tmp_path),
                           capture_output=True, text=True, timeout=300, check=False)
    assert_failed_run(r.stdout, r.returncode, tmp_path)
    assert "FAIL: boot" in r.stdout
    assert f"port {port} on 127.0.0.1, forwarded to the guest's port 9000, is in use" \
        in r.stdout
    # the checks that need the guest fail too, none is skipped
    assert r.stdout.count("not run: no guest") == 5, r.stdout
    assert qemu_pids(port) == []


@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
def test_qemu_does_not_outlive_an_interrupted_run(image_env, how, tmp_path):
    port = free_port()
    # As from a terminal: a process group of its own, and SIGINT not
    # ignored (as it is when the tests run in the background: `cmd &`)
    proc = subprocess.Popen([FULL_TEST], env=full_test_env(image_env, port, tmp_path),
                            stdout=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # Interrupt once QEMU runs
        deadline = time.monotonic() + 300
        while not qemu_pids(port):
            assert proc.poll() is None, "full-test.sh ended before QEMU started"
            assert time.monotonic() < deadline, "QEMU did not start"
            time.sleep(0.1)
        if how == "Ctrl-C":
            # what a terminal does: SIGINT to the whole foreground group
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 10
    while qemu_pids(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = qemu_pids(port)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "QEMU still runs"
    assert_failed_run(stdout, proc.returncode, tmp_path)
    assert "FAIL: interrupted" in stdout
