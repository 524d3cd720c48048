"""The pull request comment: the report's tables and verdict, readable on its own.

A comment cannot show the report's figures (they are files next to report.md, and a
relative link in a comment points nowhere), so it has none of them and no relative link;
one line links to the workflow run, whose artifact holds report.md, report/, metrics/ and
figures/.

GitHub refuses a comment over 65,536 characters. The comment is measured in UTF-8 bytes,
never fewer than characters or UTF-16 units, however GitHub counts; when the sections do
not fit, small ones stay whole and the large ones share what is left, losing table rows
(whole lines) from their end, with a line that says what was cut and where the full
report is.

The comment's first line is a hidden marker (MARKER): the review workflow finds the
comment it wrote before by it (comment_to_update) and edits that one, so a pull request
has one review comment however often it is pushed to.
"""

import json
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from mnist_pipeline.errors import PipelineError

GITHUB_COMMENT_LIMIT = 65_536
SEPARATOR = "\n\n"
ARTIFACT = "review-report"
MARKER = "<!-- mnist-pipeline-review -->"

# The line that replaces what `shorten` cut: (table rows cut, other lines cut) -> Markdown.
CutNotice = Callable[[int, int], str]


def size(text: str) -> int:
    return len(text.encode("utf-8"))


def check_url(url: str) -> str:
    """An absolute http(s) URL, percent-encoded where Markdown would end the link."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise PipelineError(f"--figures-url {url!r}: expected an absolute http(s) URL")
    return urllib.parse.quote(url, safe=":/?#[]@!$&'*+,;=%~")


def figures_line(url: str) -> str:
    return (
        "Figures (training curves, confusion matrices, per-class F1) and the full report: "
        f"the `{ARTIFACT}` artifact (report.md, report/, metrics/, figures/) of "
        f"[this workflow run]({url})."
    )


def _kinds(lines: Sequence[str]) -> list[str]:
    """Per line: "header" and "align" (a table's first two lines), "row" or "text"."""
    kinds = []
    for line in lines:
        if not line.startswith("|"):
            kinds.append("text")
        elif not kinds or kinds[-1] == "text":
            kinds.append("header")
        else:
            kinds.append("align" if kinds[-1] == "header" else "row")
    return kinds


def _cut_notice(rows: int, other: int, url: str) -> str:
    what = [f"{rows:,} table rows"] if rows else []
    what += [f"{other:,} other lines"] if other else []
    return (
        "*Cut here to fit GitHub's comment size limit: this section's last "
        f"{' and '.join(what)}. The full report is report.md in the `{ARTIFACT}` artifact "
        f"of [this workflow run]({url}).*"
    )


def shorten(section: str, budget: int, url: str, cut_notice: CutNotice | None = None) -> str:
    """`section` if it fits in `budget` bytes; else its first lines (never ending in a
    table's header) and a line saying what was cut (`cut_notice`, by default the
    comment's, which links to `url`); "" if not even that fits."""
    if size(section) <= budget:
        return section
    lines = section.split("\n")
    kinds = _kinds(lines)
    rows_after = [0] * (len(lines) + 1)  # table rows from line i on
    for i in reversed(range(len(lines))):
        rows_after[i] = rows_after[i + 1] + (kinds[i] == "row")

    def notice(keep: int) -> str:
        rows = rows_after[keep]
        if cut_notice is None:
            return _cut_notice(rows, len(lines) - keep - rows, url)
        return cut_notice(rows, len(lines) - keep - rows)

    used, keep = 0, 0
    for line in lines:  # as many whole lines as fit with the notice for the rest
        if used + size(line) + 1 + size(SEPARATOR + notice(keep + 1)) > budget:
            break
        used += size(line) + 1
        keep += 1
    while True:
        while keep > 0 and (kinds[keep - 1] in ("header", "align") or not lines[keep - 1]):
            keep -= 1  # a table without rows, or a blank line
        kept = "\n".join(lines[:keep])
        text = (kept + SEPARATOR if kept else "") + notice(keep)
        if size(text) <= budget:
            return text
        if keep == 0:
            return ""
        keep -= 1


def fit(
    sections: Sequence[str], budget: int, url: str, cut_notice: CutNotice | None = None
) -> list[str]:
    """The sections, shortened so that they and a separator after each take at most
    `budget` bytes: each gets an equal share of what the smaller ones leave over
    (`url`, `cut_notice`: as `shorten`'s)."""
    sizes = [size(section) + size(SEPARATOR) for section in sections]
    if sum(sizes) <= budget:
        return list(sections)
    shares = [0] * len(sections)
    remaining = budget
    by_size = sorted(range(len(sections)), key=lambda i: sizes[i])
    for done, i in enumerate(by_size):
        shares[i] = min(sizes[i], remaining // (len(sections) - done))
        remaining -= shares[i]
    fitted = [
        shorten(s, share - size(SEPARATOR), url, cut_notice)
        for s, share in zip(sections, shares, strict=True)
    ]
    return [section for section in fitted if section]


def build_comment(
    sections: Sequence[str], figures_url: str, limit: int = GITHUB_COMMENT_LIMIT
) -> str:
    """The comment: `sections` (review.report.report_sections), then the line linking to
    the workflow run at `figures_url`; at most `limit` bytes."""
    url = check_url(figures_url)
    header = MARKER + "\n"
    footer = figures_line(url) + "\n"
    budget = limit - size(header) - size(footer)
    if budget < 0:
        raise PipelineError(f"a comment limit of {limit} bytes leaves no room for the report")
    body = "".join(section + SEPARATOR for section in fit(sections, budget, url))
    return header + body + footer


def comment_to_update(listing: str, author: str, marker: str = MARKER) -> int | None:
    """The id of the comment to edit: the first one by `author` whose body starts with
    `marker`, from `listing`, the output of `gh api --paginate .../issues/N/comments` (one
    JSON list per page, one after another); None if there is none (create one then).
    Another user's comment with the marker is never chosen: the token could not edit it."""
    decoder = json.JSONDecoder()
    comments: list[Any] = []
    position, text = 0, listing.strip()
    while position < len(text):
        try:
            page, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise PipelineError(f"the comments listing is not JSON: {exc}") from None
        if not isinstance(page, list):
            raise PipelineError("the comments listing is not a JSON list of comments")
        comments += page
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    for comment in comments:
        if not isinstance(comment, dict):
            continue
        user = comment.get("user") or {}
        body = comment.get("body") or ""
        if user.get("login") == author and body.lstrip().startswith(marker):
            return int(comment["id"])
    return None
