"""Static checks of the lifecycle files: shellcheck, the start-script style
Buildroot's check-package enforces, the defaults file's format, and
`systemd-analyze verify` of the units (offline, against a scratch root)."""

import pathlib
import re
import shutil
import subprocess

import pytest

SERVER = pathlib.Path(__file__).resolve().parent.parent.parent / "server"
SCRIPT = SERVER / "aesdsocket-start-stop"
DEFAULT = SERVER / "aesdsocket.default"
UNITS = [SERVER / "aesdsocket.service", SERVER / "aesdsocket.socket"]
HOST_UNITS = pathlib.Path("/lib/systemd/system")


def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


# The defaults file only sets variables for the script that sources it.
@pytest.mark.parametrize("path, exclude", [(SCRIPT, []),
                                           (DEFAULT, ["--exclude=SC2034"])],
                         ids=[SCRIPT.name, DEFAULT.name])
def test_shellcheck_clean_as_posix_sh(path, exclude):
    r = subprocess.run([tool("shellcheck"), "--shell=sh", *exclude, str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_script_follows_the_buildroot_start_script_layout():
    text = SCRIPT.read_text()
    lines = text.splitlines()
    assert lines[0] == "#!/bin/sh"
    indented_with_spaces = [n for n, line in enumerate(lines, 1)
                            if re.match(r"^\t* ", line)]
    assert not indented_with_spaces, f"lines {indented_with_spaces}"
    assert 'DAEMON="aesdsocket"' in lines
    assert 'PIDFILE="/var/run/$DAEMON.pid"' in lines
    assert '[ -r "/etc/default/$DAEMON" ] && . "/etc/default/$DAEMON"' in lines
    for action in ("start", "stop", "restart", "status"):
        assert f"{action}() {{" in lines


def test_defaults_file_is_readable_by_sh_and_systemd():
    """Both the init script (sourcing it) and the service
    (EnvironmentFile=) read it: only comments and NAME="literal" lines."""
    assignments = []
    for n, line in enumerate(DEFAULT.read_text().splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([A-Z_]+)="([^"$`\\]*)"', line)
        assert m, f"line {n} is not a plain assignment: {line!r}"
        assignments.append(m.group(1))
    assert assignments == ["AESDSOCKET_ARGS"]
    # clients are served unprivileged by default (both images create aesd)
    assert re.search(r'^AESDSOCKET_ARGS="--user aesd"$', DEFAULT.read_text(),
                     re.MULTILINE)
    commented = DEFAULT.read_text()
    for option in ("--max-connections 10240", "--workers 2",
                   "--buffer-budget 33554432", "--max-packet 1048576",
                   "--idle-timeout 60", "--send-timeout 10",
                   "--bind ADDRESS"):
        assert re.search(rf'^#AESDSOCKET_ARGS=".*{option}', commented,
                         re.MULTILINE), option


def verify(root, *units):
    return subprocess.run(
        [tool("systemd-analyze"), "verify", f"--root={root}", "--man=no",
         "--generators=no", *units],
        capture_output=True, text=True, timeout=120)


def test_systemd_analyze_verify(tmp_path, static_server):
    """The units parse without a warning (unknown keys or bad values are only
    warnings, so any output fails) and ExecStart names an executable."""
    if not HOST_UNITS.is_dir():
        pytest.skip(f"no {HOST_UNITS} to verify against")
    root = tmp_path / "root"
    units = root / "usr/lib/systemd/system"
    shutil.copytree(HOST_UNITS, units, symlinks=True)
    for unit in UNITS:
        shutil.copy(unit, units)
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy(static_server / "aesdsocket", root / "usr/bin/aesdsocket")
    # A trivial unit shows whether verify works here at all (it needs no
    # running systemd, but some containers lack pieces it loads).
    (units / "lifecycle-probe.service").write_text(
        "[Service]\nExecStart=/usr/bin/aesdsocket\n")
    probe = verify(root, "lifecycle-probe.service")
    if probe.returncode != 0 or probe.stdout or probe.stderr:
        pytest.skip("systemd-analyze verify does not work offline here: "
                    + probe.stdout + probe.stderr)
    r = verify(root, *(u.name for u in UNITS))
    assert r.returncode == 0 and not r.stdout and not r.stderr, \
        r.stdout + r.stderr


@pytest.mark.parametrize("target", ["install-sysv", "install-systemd"])
def test_both_init_systems_get_the_defaults_file(tmp_path, target):
    """The systemd unit reads /etc/default/aesdsocket too (EnvironmentFile=),
    so --user aesd applies under either init system."""
    subprocess.run(["make", "-s", "-C", str(SERVER), target,
                    f"DESTDIR={tmp_path}"], check=True, timeout=60)
    installed = tmp_path / "etc/default/aesdsocket"
    assert installed.read_bytes() == DEFAULT.read_bytes()
    assert (installed.stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize("werror, expected", [(None, True), ("0", False),
                                              ("1", True)])
def test_werror_is_on_for_development_and_can_be_turned_off(tmp_path, werror,
                                                            expected):
    """Buildroot's package passes WERROR=0: a compiler we have not tried
    must not fail a package build with a new warning."""
    args = ["make", "-n", "-C", str(SERVER), f"BUILD={tmp_path}/build"]
    if werror is not None:
        args.append(f"WERROR={werror}")
    out = subprocess.run(args, capture_output=True, text=True, check=True,
                         timeout=60).stdout
    compiles = [line for line in out.splitlines() if " -c -o " in line]
    assert compiles
    assert all(("-Werror" in line) == expected for line in compiles)
    assert all("-Wall" in line and "-Wextra" in line for line in compiles)
