"""BENCHMARKS.md is a page for readers (issue 20, section 2): the figures,
not the raw result lines, which live in BENCHMARKS.raw beside it; no path
of the machine that ran the benchmark (the binaries are named by commit or
label); under 15 KB; and exactly what bench/run.sh -i renders from its raw
lines, so that it was not edited by hand and goes on matching them."""

import pathlib
import re
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]
PAGE = REPO / "BENCHMARKS.md"
RAW = REPO / "BENCHMARKS.raw"
# An absolute path: a slash at the start of a word or of a `code span`,
# then a directory (not "conn/s" or "µs/request", which have a word before
# their slash).
ABSOLUTE_PATH = re.compile(r"(?:^|[\s`(\[|])/[\w.-]+/")


def test_page_is_small_and_holds_no_raw_line():
    text = PAGE.read_text()
    assert len(text.encode()) < 15 * 1024
    assert not re.search(r"^run=\d+ label=", text, re.M)
    assert "[BENCHMARKS.raw](BENCHMARKS.raw)" in text


def test_page_and_raw_lines_name_no_path_of_the_machine():
    for path in (PAGE, RAW):
        found = ABSOLUTE_PATH.findall(path.read_text())
        assert not found, f"{path.name}: {found}"


def test_page_is_what_run_sh_renders_from_the_raw_lines(tmp_path):
    """Rendered into another directory under the same names, since the
    page names its raw file."""
    out = tmp_path / "BENCHMARKS.md"
    subprocess.run(["bash", str(REPO / "bench" / "run.sh"), "-i", str(RAW),
                    "-o", str(out)], check=True, capture_output=True,
                   timeout=120)
    assert out.read_text() == PAGE.read_text()
    assert (tmp_path / "BENCHMARKS.raw").read_text() == RAW.read_text()
