"""The documents link to each other and to the tree: every relative link in
every tracked *.md file must reach a tracked file (or a directory holding
some), and every #anchor must be a heading (or an explicit HTML anchor) of
the target, named as GitHub names it. So a section that moves, or a file
that is renamed, fails here until every link to it follows.

Links inside code (fenced or indented blocks, `code spans`) and HTML
comments are not links and are left alone; so are absolute URLs."""

import pathlib
import re
import subprocess
import unicodedata
import urllib.parse

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
# [text](destination "title") and ![alt](destination); the text may hold
# brackets one level deep, the destination may be <in angle brackets>
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.I)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def prose_lines(text):
    """(line number, line) outside fenced and indented code blocks, with
    HTML comments blanked (line numbers kept)."""
    text = COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    fence = None
    previous_blank = True
    in_indented = False
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if m:
            fence = m.group(1)
            continue
        blank = not line.strip()
        indented = line.startswith(("    ", "\t")) and not blank
        # an indented code block starts after a blank line (a deeper line
        # right after text is that paragraph's or list item's continuation)
        in_indented = indented and (previous_blank or in_indented)
        previous_blank = blank
        if not in_indented:
            yield number, line


def heading_text(markdown):
    """What GitHub renders of a heading's inline markdown, as plain text."""
    text = CODE_SPAN.sub(lambda m: m.group(2).strip(), markdown)
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    # emphasis markers, not the underscores inside words
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)
    return text.strip()


def github_slug(text):
    """github-slugger's rule: lower case; drop every character that is not
    a letter, a mark, a number, a connector ('_'), '-' or a space; each
    space a '-'."""
    kept = []
    for ch in text.lower():
        category = unicodedata.category(ch)
        if ch in "- " or category[0] in "LMN" or category == "Pc":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def anchors(text):
    """Every anchor a GitHub page of this markdown has: heading slugs, with
    -1, -2... for repeats, as github-slugger numbers them, and HTML anchors."""
    found, occurrences = set(), {}
    previous = None
    for _, line in prose_lines(text):
        found.update(HTML_ANCHOR.findall(line))
        m = ATX.match(line)
        heading = m.group(2) or "" if m else None
        s = SETEXT.match(line)
        if heading is None and s and previous and previous.strip() \
                and not ATX.match(previous):
            heading = previous.strip()
        previous = line
        if heading is None:
            continue
        base = slug = github_slug(heading_text(heading))
        while slug in occurrences:
            occurrences[base] += 1
            slug = f"{base}-{occurrences[base]}"
        occurrences[slug] = 0
        found.add(slug)
    return found


def links(text):
    """(line number, destination) of every link in the prose."""
    for number, line in prose_lines(text):
        line = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        for m in INLINE_LINK.finditer(line):
            yield number, m.group(1)
        m = REFERENCE_DEF.match(line)
        if m:
            yield number, m.group(1)


def problems(root, documents, tracked):
    """Every broken link in `documents` (paths relative to `root`), as
    'file:line: destination: why'; `tracked` is the set of tracked paths.
    Also returns how many relative links and anchors were checked."""
    found, checked_links, checked_anchors = [], 0, 0
    directories = {str(p) for t in tracked for p in pathlib.PurePosixPath(t).parents}
    for document in documents:
        source = pathlib.PurePosixPath(document)
        text = (root / document).read_text(encoding="utf-8")
        for number, destination in links(text):
            destination = destination.strip("<>")
            if not destination or SCHEME.match(destination):
                continue
            where = f"{document}:{number}: {destination}"
            path, _, anchor = destination.partition("#")
            path = urllib.parse.unquote(path)
            if path.startswith("/"):
                found.append(f"{where}: absolute path (GitHub resolves it "
                             "against github.com, not the repository)")
                continue
            if path:
                target = normalize(source.parent / path)
                if target is None:
                    found.append(f"{where}: outside the repository")
                    continue
            else:
                target = str(source)
            checked_links += 1
            if target not in tracked and target.rstrip("/") not in directories:
                found.append(f"{where}: no tracked file {target}")
                continue
            if not anchor:
                continue
            checked_anchors += 1
            if not target.endswith(".md"):
                found.append(f"{where}: an anchor into a file that is not markdown")
            elif urllib.parse.unquote(anchor) not in anchors(
                    (root / target).read_text(encoding="utf-8")):
                found.append(f"{where}: no heading #{anchor} in {target}")
    return found, checked_links, checked_anchors


def normalize(path):
    """'docs/../README.md' -> 'README.md'; None if it leaves the tree."""
    parts = []
    for part in pathlib.PurePosixPath(path).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def git_files(*patterns):
    r = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--", *patterns],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [name for name in r.stdout.split("\0") if name]


def test_every_link_between_documents_resolves():
    documents = git_files("*.md")
    assert "README.md" in documents and any(d.startswith("docs/") for d in documents)
    found, checked_links, checked_anchors = problems(REPO, documents,
                                                     set(git_files()))
    assert found == []
    # The parser saw the links, not nothing (which would pass)
    assert checked_links >= 20 and checked_anchors >= 5, (checked_links, checked_anchors)


def test_readme_points_into_docs_at_anchors_that_exist():
    """The README is the front door: its links into docs/ must land on the
    sections they name, which move more often than files."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    into_docs = [d for _, d in links(text) if d.startswith("docs/")]
    assert any("#" in d for d in into_docs), into_docs
    found, _, _ = problems(REPO, ["README.md"], set(git_files()))
    assert found == []


@pytest.mark.parametrize("heading, slug", [
    # as GitHub rendered this README's headings before issue 15
    ("The service: `aesdsocket`", "the-service-aesdsocket"),
    ("Lifecycle: init script and systemd", "lifecycle-init-script-and-systemd"),
    ("Booting the system: runqemu.sh and the fast image",
     "booting-the-system-runqemush-and-the-fast-image"),
    ("Source layout (`server/src/`)", "source-layout-serversrc"),
    ("The offline recipe: checking the integration where downloads are impossible",
     "the-offline-recipe-checking-the-integration-where-downloads-are-impossible"),
    # github-slugger's own cases
    ("`aesd_qemu_defconfig`", "aesd_qemu_defconfig"),
    ("**Bold** and _emphasis_", "bold-and-emphasis"),
    ("A [link](x.md) here", "a-link-here"),
    ("Two  spaces", "two--spaces"),
    ("Ünïcödé — dash", "ünïcödé--dash"),
])
def test_headings_are_named_as_github_names_them(heading, slug):
    assert github_slug(heading_text(heading)) == slug


def test_repeated_headings_are_numbered():
    text = "# Reproducible\n\n## Reproducible\n\nSetext\n------\n\n## Reproducible\n"
    assert anchors(text) == {"reproducible", "reproducible-1", "reproducible-2", "setext"}


def test_broken_links_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "# Top\n\n## A section\n\n"
        "[ok](docs/b.md#deep-part) [ok](#a-section) [ok](docs/) [ok](https://x.org/y)\n"
        "[bad anchor](docs/b.md#gone) [bad file](docs/c.md) [bad self](#nowhere)\n"
        "`[code span](docs/d.md)` and <!-- [comment](docs/e.md) -->\n\n"
        "```\n[fenced](docs/f.md)\n```\n\n    [indented](docs/g.md)\n\n"
        "[ref]: docs/h.md\n[up](../outside.md) [abs](/README.md)\n")
    (tmp_path / "docs" / "b.md").write_text(
        "# B\n\n## Deep part\n\n[back](../README.md#a-section)\n"
        "[wrong case](../README.md#A-Section)\n")
    found, checked_links, checked_anchors = problems(
        tmp_path, ["README.md", "docs/b.md"], {"README.md", "docs/b.md"})
    wrong = sorted(f.split(": ", 1)[1] for f in found)
    assert wrong == sorted([
        "docs/b.md#gone: no heading #gone in docs/b.md",
        "docs/c.md: no tracked file docs/c.md",
        "#nowhere: no heading #nowhere in README.md",
        "docs/h.md: no tracked file docs/h.md",
        "../outside.md: outside the repository",
        "/README.md: absolute path (GitHub resolves it against github.com, "
        "not the repository)",
        "../README.md#A-Section: no heading #A-Section in README.md",
    ]), found
    assert (checked_links, checked_anchors) == (9, 6)


def test_stage_list_in_the_docs_is_test_sh_s():
    """docs/testing.md's table names every stage test.sh runs (and only
    those, plus the opt-in buildroot-image), and the README and testing.md
    count them right: a stage added to test.sh alone fails here."""
    script = (REPO / "test.sh").read_text(encoding="utf-8")
    listed = re.search(r"^STAGES=\(([^)]*)\)", script, re.M)
    assert listed, "no STAGES=(...) in test.sh"
    stages = listed.group(1).split()
    assert len(stages) >= 10 and "full-test" in stages, stages
    for name in stages + ["buildroot-image"]:
        assert f"stage_{name.replace('-', '_')}()" in script, name
    table = (REPO / "docs" / "testing.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z-]+)` \|", table, re.M)
    assert rows == stages + ["buildroot-image"]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    count = len(stages)
    assert re.search(rf"\bin {count} stages\b", readme), count
    assert re.search(rf"\bThe {count} default stages\b", table), count
