"""The man page, aesdsocket.8: installed by `make install`, clean for
`mandoc -T lint` and `man -l`, and in step with `aesdsocket --help`: the same
options (short and long names, whether each takes a value, the same
defaults), compared mechanically so that a new or changed option in the
server fails here until the page follows."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

MANPAGE = pathlib.Path(__file__).resolve().parents[2] / "server" / "aesdsocket.8"
# conftest.py's static_server is built with these flags; make install must get
# the same ones, or it would rebuild
STATIC = ["LDFLAGS=-static"]
# --help: "  -p, --port PORT           text" (or "      --name" for an
# option without a letter), continued by deeper-indented lines
HELP_ENTRY = re.compile(
    r"^  (?:-(\w), |    )--([\w-]+)(?: ([A-Z]+))?\s{2,}(.*)$")
# mandoc -T ascii: "     -p, --port port" (or "     --name") then the text
# indented further
MAN_ENTRY = re.compile(r"^     (?:-(\w), )?--([\w-]+)(?: (\w+))?$")
# "(default 9000)", "(default: every address)", "(default 60, 0 = never)"
DEFAULT = re.compile(r"\(default:? ([^,;)]+)")
ANY_DEFAULT = re.compile(r"\bdefault", re.I)


def need(name):
    path = shutil.which(name)
    # tests/packages/lifecycle.txt lists both: their absence is a failure
    assert path, f"{name} is not installed (tests/install-deps.sh installs it)"
    return path


def words(text):
    return " ".join(text.split())


def help_options(binary):
    """{long name: (short letter, argument name or None, description)}."""
    r = subprocess.run([str(binary), "--help"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    options, current = {}, None
    for line in r.stdout.splitlines():
        m = HELP_ENTRY.match(line)
        if m:
            current = m.group(2)
            options[current] = [m.group(1), m.group(3), m.group(4)]
        elif current and line.startswith("    ") and line.strip():
            options[current][2] += " " + line.strip()
        else:
            current = None
    return {name: (short, arg, words(text))
            for name, (short, arg, text) in options.items()}


def rendered(manpage):
    """The page as plain text, rendered by mandoc (which does not hyphenate,
    so words stay whole)."""
    r = subprocess.run([need("mandoc"), "-T", "ascii", "-O", "width=78",
                        str(manpage)], capture_output=True, text=True,
                       timeout=30, env=dict(os.environ, LC_ALL="C"))
    assert r.returncode == 0, r.stderr
    # mandoc -T ascii marks bold and underline with backspaces
    return re.sub(r".\x08", "", r.stdout)


def section(text, name):
    m = re.search(rf"^{name}\n(.*?)(?=^[A-Z][A-Z ]+\n|\Z)", text, re.M | re.S)
    assert m, f"no {name} section"
    return m.group(1)


def man_options(manpage):
    """The OPTIONS list, in the same shape as help_options()."""
    options, current = {}, None
    for line in section(rendered(manpage), "OPTIONS").splitlines():
        m = MAN_ENTRY.match(line)
        if m:
            current = m.group(2)
            options[current] = [m.group(1), m.group(3), ""]
        elif current and line.startswith("      "):
            options[current][2] += " " + line.strip()
        else:
            current = None
    return {name: (short, arg, words(text))
            for name, (short, arg, text) in options.items()}


@pytest.fixture(scope="module")
def both(static_server):
    return help_options(static_server / "aesdsocket"), man_options(MANPAGE)


def test_help_is_parsed(both):
    helped, _ = both
    # The parser found the options, not nothing (which would match nothing)
    assert {"port", "daemon", "help", "version"} <= set(helped), helped


def test_same_long_options(both):
    helped, documented = both
    assert sorted(set(helped) - set(documented)) == [], "missing from the man page"
    assert sorted(set(documented) - set(helped)) == [], "not in --help"


def test_same_short_letters_and_arguments(both):
    helped, documented = both
    for name in set(helped) & set(documented):
        h_short, h_arg, _ = helped[name]
        m_short, m_arg, _ = documented[name]
        assert m_short == h_short, name
        # PORT in --help, port (italic) in the page
        assert (m_arg or "").lower() == (h_arg or "").lower(), name


def defaults(options):
    """{long name: [every default its description states]}, [] for none.
    A description that says "default" in any other form fails here, so a
    default cannot hide from the comparison behind other words."""
    stated = {}
    for name, (_, _, text) in options.items():
        found = DEFAULT.findall(text)
        assert len(ANY_DEFAULT.findall(text)) == len(found), \
            f"--{name}: a default not written as '(default X': {text!r}"
        stated[name] = found
    return stated


def default_differences(helped, documented):
    """Every option whose defaults differ between --help and the page,
    both ways: a different value, or a default that only one side states."""
    h, m = defaults(helped), defaults(documented)
    return [f"--{name}: --help {h.get(name)}, the page {m.get(name)}"
            for name in sorted(set(h) | set(m)) if h.get(name) != m.get(name)]


def test_same_defaults(both):
    helped, documented = both
    assert default_differences(helped, documented) == []
    # The parser saw the defaults, not nothing (which would compare equal)
    assert sum(1 for found in defaults(helped).values() if found) >= 5


DEFAULTS_FILE = MANPAGE.parent / "aesdsocket.default"
# "#   --port PORT             TCP port to listen on [9000]", continued by
# "#                           ..." lines
FILE_ENTRY = re.compile(r"^#   --([\w-]+)(?: [A-Z]+)?\s{2,}(.*)$")
FILE_DEFAULT = re.compile(r"\[([^,;\]]+)")


def defaults_file_options():
    """{long name: [the defaults its comment states, in brackets]}."""
    options, current = {}, None
    for line in DEFAULTS_FILE.read_text().splitlines():
        m = FILE_ENTRY.match(line)
        if m:
            current = m.group(1)
            options[current] = m.group(2)
        elif current and re.match(r"^#\s{20,}\S", line):
            options[current] += " " + line[1:].strip()
        else:
            current = None
    return {name: FILE_DEFAULT.findall(text) for name, text in options.items()}


def test_defaults_file_states_the_same_defaults(both):
    """/etc/default/aesdsocket explains the options with their defaults in
    brackets: each option it names exists, with the default --help gives."""
    helped, _ = both
    stated = defaults(helped)
    in_file = defaults_file_options()
    assert len(in_file) >= 8, in_file
    assert sorted(set(in_file) - set(helped)) == [], "not in --help"
    assert {name: found for name, found in in_file.items()
            if found != stated[name]} == {}


def with_text(options, name, text):
    changed = dict(options)
    short, arg, _ = changed[name]
    changed[name] = (short, arg, text)
    return changed


def test_a_default_on_one_side_only_or_changed_is_caught(both):
    helped, documented = both
    with_default = next(n for n, found in defaults(helped).items() if found)
    without = next(n for n, found in defaults(helped).items() if not found)
    text = documented[with_default][2]
    # the page drops a default that --help states
    dropped = with_text(documented, with_default,
                        DEFAULT.sub("(", text).replace("()", ""))
    assert default_differences(helped, dropped)
    assert default_differences(dropped, helped)
    # the page states one for an option that has none in --help
    added = with_text(documented, without,
                      documented[without][2] + " (default 7)")
    assert default_differences(helped, added)
    # another value
    changed = with_text(documented, with_default,
                        DEFAULT.sub("(default 12345", text, count=1))
    assert default_differences(helped, changed)
    # a default in words the comparison would not see
    with pytest.raises(AssertionError, match="not written as"):
        defaults(with_text(documented, without,
                           documented[without][2] + " It defaults to 7."))


def test_a_changed_default_in_the_page_source_is_caught(both, tmp_path):
    """The same through the renderer: bump the first numeric default in a
    copy of the page's roff source."""
    helped, _ = both
    source = MANPAGE.read_text()
    m = re.search(r"\(default (\d+)", source)
    assert m, "no numeric default in the page"
    mutated = tmp_path / "aesdsocket.8"
    mutated.write_text(source[:m.start(1)] + str(int(m.group(1)) + 1)
                       + source[m.end(1):])
    differences = default_differences(helped, man_options(mutated))
    assert len(differences) == 1 and m.group(1) in differences[0], differences


def test_synopsis_lists_every_short_option(both):
    helped, _ = both
    synopsis = section(rendered(MANPAGE), "SYNOPSIS")
    letters = set(re.findall(r"\[-(\w+)", synopsis))
    listed = {c for group in letters for c in group}
    assert listed == {short for short, _, _ in helped.values() if short}


def test_mandoc_lint_is_clean():
    # -W warning: "STYLE" messages include "referenced manual not found",
    # which depends on the pages installed on the machine running the test
    r = subprocess.run([need("mandoc"), "-T", "lint", "-W", "warning",
                        str(MANPAGE)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and not (r.stdout + r.stderr), r.stdout + r.stderr


def test_make_install_installs_the_page_and_man_reads_it(static_server, tmp_path):
    # The same flags as the build, or make would rebuild for the install
    subprocess.run(["make", "-s", "-C", str(static_server), *STATIC, "install",
                    f"DESTDIR={tmp_path}", "PREFIX=/usr"],
                   check=True, timeout=60, stdout=subprocess.DEVNULL)
    installed = tmp_path / "usr/share/man/man8/aesdsocket.8"
    assert installed.read_bytes() == MANPAGE.read_bytes()
    assert oct(installed.stat().st_mode & 0o777) == "0o644"
    r = subprocess.run([need("man"), "-l", str(installed)], capture_output=True,
                       text=True, timeout=60,
                       env=dict(os.environ, MANPAGER="cat", PAGER="cat",
                                MANWIDTH="80", LC_ALL="C"))
    assert r.returncode == 0, r.stderr
    # groff's warnings (unknown macros, bad escapes) go to stderr
    assert r.stderr == ""
    assert "aesdsocket" in r.stdout and "--max-packet" in words(r.stdout)
