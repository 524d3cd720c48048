"""The README's and docs/*.md's links land somewhere, and presets cite real README sections.

Anchors follow GitHub's rule: the heading's text lowercased, punctuation other than `-` and
`_` removed, spaces turned into `-`, and `-1`, `-2`, ... appended to repeated headings.
"""

import re
from pathlib import Path

import pytest

from mnist_pipeline.testing.dvc_repo import committed_text
from tests.support import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# The files whose comments cite README sections as `(README: Section name[, more])`.
# params.yaml as committed: the working copy holds a user's edits (tests/conftest.py).
CITING = [
    "params.yaml",
    *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "presets").glob("*.yaml")),
]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CITATION = re.compile(r"\(README: ([^)]*)\)")
TABLE_RULE = re.compile(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?")


def _prose(text: str) -> list[str]:
    """The lines of Markdown `text` outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in _prose(page.read_text()):
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = anchor(match.group(1))
            count = counts.get(base, 0)
            counts[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def headings(page: Path) -> set[str]:
    return {
        m.group(1).strip()
        for line in _prose(page.read_text())
        if (m := re.match(r"#{1,6} (.+)", line))
    }


def links(page: Path) -> list[str]:
    return [
        target
        for line in _prose(page.read_text())
        for target in LINK.findall(line)
        if not re.match(r"[a-z]+:", target)  # http(s):, mailto: ...
    ]


def test_anchor_follows_github():
    assert anchor("Quickstart on Fashion-MNIST") == "quickstart-on-fashion-mnist"
    assert anchor("Results and performance (as measured)") == "results-and-performance-as-measured"
    assert anchor("Is it real?") == "is-it-real"
    assert anchor("Share results: DVC remote and CI") == "share-results-dvc-remote-and-ci"
    assert anchor("The tutorial's `make_step`") == "the-tutorials-make_step"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_link_lands(page):
    broken = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO)}")
        elif fragment and (dest.suffix != ".md" or fragment not in anchors(dest)):
            broken.append(f"{target}: no heading with anchor #{fragment}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_table_has_its_header_rule(page):
    """A table's first row is its header, and the next line the `| --- |` rule; without the
    rule GitHub shows the rows as plain text, and without the header the rule as a row."""
    lines = _prose(page.read_text())
    bad = []
    for i, line in enumerate(lines):
        starts_table = line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))
        if starts_table:
            rule_next = i + 1 < len(lines) and TABLE_RULE.fullmatch(lines[i + 1].strip())
            if TABLE_RULE.fullmatch(line.strip()) or not rule_next:
                bad.append(line[:60])
    assert not bad, f"{page.name}: tables without a header row and rule: {bad}"


def test_cited_readme_sections_exist():
    readme = headings(REPO / "README.md")
    cited = []
    for name in CITING:
        # Comment text joined across lines: a citation may wrap.
        lines = committed_text(REPO, name).splitlines()
        comments = " ".join(line.partition("#")[2].strip() for line in lines if "#" in line)
        for citation in CITATION.findall(comments):
            cited.append((name, re.split(r"[,;]", citation)[0].strip()))
    assert cited, "no `(README: Section)` citation found: has the pattern changed?"
    missing = [f"{name}: README {section!r}" for name, section in cited if section not in readme]
    assert not missing, f"no such README heading: {missing}"
