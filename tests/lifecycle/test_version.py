"""One version: what `aesdsocket --version` prints (AESD_VERSION in
server/src/options.h, the one place the server states it), the Buildroot
package's version (AESD_ASSIGNMENTS_VERSION, which also names its build
directory) and the man page's (`.Os aesdsocket VERSION`, shown in the page's
footer) are the same, so a release changes all three or fails here."""

import pathlib
import re
import shutil
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGE_MK = REPO / "base_external" / "package" / "aesd-assignments" / \
    "aesd-assignments.mk"
MANPAGE = REPO / "server" / "aesdsocket.8"


def package_version():
    found = re.findall(r"^AESD_ASSIGNMENTS_VERSION = (\S+)$",
                       PACKAGE_MK.read_text(), re.M)
    assert len(found) == 1, f"AESD_ASSIGNMENTS_VERSION in {PACKAGE_MK}: " \
        f"{found}"
    return found[0]


def binary_version(server_dir):
    r = subprocess.run([str(server_dir / "aesdsocket"), "--version"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(r"aesdsocket (\S+)\n", r.stdout)
    assert m, f"--version printed {r.stdout!r}"
    return m.group(1)


def manpage_version():
    found = re.findall(r"^\.Os aesdsocket (\S+)$", MANPAGE.read_text(), re.M)
    assert len(found) == 1, f"'.Os aesdsocket VERSION' in {MANPAGE}: {found}"
    return found[0]


def test_the_version_is_major_minor_patch():
    assert re.fullmatch(r"\d+\.\d+\.\d+", package_version())


def test_aesdsocket_prints_the_package_version(static_server):
    assert binary_version(static_server) == package_version(), \
        f"aesdsocket --version (server/src/options.h) and {PACKAGE_MK.name} " \
        "differ"


def test_the_man_page_states_the_package_version():
    assert manpage_version() == package_version(), \
        f"{MANPAGE.name} (.Os) and {PACKAGE_MK.name} differ"


def test_the_man_page_footer_shows_it():
    mandoc = shutil.which("mandoc")
    # tests/packages/lifecycle.txt lists it: its absence is a failure
    assert mandoc, \
        "mandoc is not installed (tests/install-deps.sh installs it)"
    r = subprocess.run([mandoc, "-T", "ascii", str(MANPAGE)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    footer = [line for line in r.stdout.splitlines() if line.strip()][-1]
    assert footer.split()[:2] == ["aesdsocket", package_version()], footer
