"""The pull request comment: the report's verdict and tables on their own (no figures, no
relative links), a link to the run's artifact, GitHub's size limit, and text from files
kept as text (no live HTML, links or @mentions)."""

import re

import pytest

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.review.comment import (
    GITHUB_COMMENT_LIMIT,
    MARKER,
    build_comment,
    check_url,
    fit,
    shorten,
    size,
)
from mnist_pipeline.review.markdown import escape_text, inline_code
from mnist_pipeline.review.report import build_report, report_sections

URL = "https://github.com/o/r/actions/runs/123"
PARAMS = ("params.yaml", {"model": {"dropout": 0.2}}, {"model": {"dropout": 0.3}})
PREDICTIONS = "label,predicted\n" + "1,1\n" * 150 + "1,2\n" * 50
BETTER = "label,predicted\n" + "1,1\n" * 190 + "1,2\n" * 10


def _seeds(mean):
    stat = {"mean": mean, "std": 0.002, "min": mean - 0.003, "max": mean + 0.003, "n": 5}
    return {"k": 5, "seeds": [0, 1, 2, 3, 4], "metrics": {"test.accuracy": stat}}


def _sections(new_metrics=None, params=PARAMS, title="abc1234 baseline"):
    new_metrics = new_metrics or {"test": {"accuracy": 0.95}}
    return report_sections(
        "abc1234",
        title,
        params,
        {"metrics/evaluate.json": {"test": {"accuracy": 0.75}}},
        {"metrics/evaluate.json": new_metrics},
        ("metrics/evaluate/predictions_test.csv", PREDICTIONS, BETTER),
        ("metrics/seeds.json", _seeds(0.89), _seeds(0.9)),
        "`abc1234`, as given (--rev)",
    )


def _relative_links(markdown: str) -> list[str]:
    return re.findall(r"\]\((?!https?://)[^)]*\)", markdown)


def test_the_comment_has_the_verdict_and_tables_and_links_only_to_the_run():
    comment = build_comment(_sections(), URL)
    for title in ("### Is it real?", "### Over seeds", "### Metrics", "### Params"):
        assert title in comment
    assert "significant at 0.05 (new is better)**" in comment
    assert "| test.accuracy | 0.75 | 0.95 | +0.2 |" in comment
    assert "| model.dropout | 0.2 | 0.3 |" in comment
    assert comment.startswith(f"{MARKER}\n## Workspace against `abc1234` (abc1234 baseline)\n")
    assert comment.endswith(
        "the `review-report` artifact (report.md, report/, metrics/, figures/) of "
        f"[this workflow run]({URL}).\n"
    )
    assert _relative_links(comment) == [] and "![" not in comment
    # The report, for contrast, embeds and links files next to it.
    images = [("training curves", "report/training_curves.png")]
    report = build_report("abc1234", "t", PARAMS, {}, {}, ["metrics/a.png"], images=images)
    assert _relative_links(report) == ["](report/training_curves.png)", "](metrics/a.png)"]


def test_a_huge_metrics_file_is_cut_by_whole_rows_under_githubs_limit():
    huge = {f"class_{i:05d}": {"f1": i / 20_000, "precision": 0.5} for i in range(20_000)}
    sections = _sections(new_metrics=huge)
    assert size("\n\n".join(sections)) > 10 * GITHUB_COMMENT_LIMIT
    comment = build_comment(sections, URL)
    assert size(comment) <= GITHUB_COMMENT_LIMIT and len(comment) <= GITHUB_COMMENT_LIMIT
    # The small sections are whole; the metrics table lost rows, whole ones, and says so.
    for whole in sections[:4] + sections[5:]:  # all but the metrics
        assert whole in comment
    rows = [line for line in comment.splitlines() if line.startswith("| class_")]
    assert 500 < len(rows) < 20_000
    assert all(re.fullmatch(r"\| class_\d{5}\.\w+ \| — \| [\d.e-]+ \| — \|", r) for r in rows)
    cut = 40_001 - len(rows)  # and test.accuracy, last by name
    assert (
        f"*Cut here to fit GitHub's comment size limit: this section's last {cut:,} table "
        "rows. The full report is report.md in the `review-report` artifact of "
        f"[this workflow run]({URL}).*"
    ) in comment
    assert comment.endswith(f"[this workflow run]({URL}).\n")


def test_fit_keeps_small_sections_whole_and_shares_the_rest():
    table = "### Big\n\n| a | b |\n| --- | --- |\n" + "\n".join(f"| {i} | x |" for i in range(999))
    sections = ["## Title", table, "### Small\n\nshort", table]
    fitted = fit(sections, 4000, URL)
    assert fitted[0] == "## Title" and fitted[2] == "### Small\n\nshort"
    assert sum(size(s) + 2 for s in fitted) <= 4000
    assert abs(size(fitted[1]) - size(fitted[3])) < 20  # an equal share each
    assert fitted[1].splitlines()[-3].startswith("| ")  # rows, then a blank line
    # A table's header without rows is cut with them.
    assert shorten(table, 240, URL).startswith("### Big\n\n*Cut here")
    assert shorten(table, 10, URL) == ""
    assert fit(sections[:1], 10, URL) == ["## Title"]


def test_the_figures_url_must_be_http_and_cannot_break_the_link():
    assert check_url("https://x.test/a b)c") == "https://x.test/a%20b%29c"
    for bad in ("report/", "javascript:alert(1)", "ftp://x.test/"):
        with pytest.raises(PipelineError, match="expected an absolute http"):
            build_comment(_sections(), bad)


HOSTILE = (
    "a|b\nc <img src=x onerror=alert(1)> [x](https://e.test) ![t](https://e.test/t.png) "
    "@octocat &lt;"
)


def test_text_from_files_stays_text_in_the_comment_and_the_report():
    metrics = {HOSTILE: 1.0, "test": {"accuracy": 0.95}}
    params = ("params.yaml", {"x": "old"}, {"x": HOSTILE, "<!-- hide": "@team"})
    title = "abc1234 <details><summary>@octocat</summary>"
    for text in (
        build_comment(_sections(metrics, params, title), URL),
        build_report("abc`1|<b>", title, params, {}, {"m.json": metrics}, []),
    ):
        # No live HTML (a tag or a comment), link, image or mention outside code spans,
        # but the comment's own hidden marker, its first line.
        text = text.removeprefix(MARKER + "\n")
        text = re.sub(r"(`+).*?\1", "", text)
        assert not re.search(r"<[a-z!/]", text)
        assert not re.search(r"(?<!\\)\[(x|t)\]\(", text)
        assert not re.search(r"@(?!&#8203;)\w", text)
        # ... but all of it still shown, on one line per row.
        # A bare URL is broken up by a zero-width space, as GitHub would link it.
        assert "a\\|b c &lt;img src=x onerror=alert(1)&gt; \\[x\\](https:&#8203;//e.test)" in text
        assert "@&#8203;octocat &amp;lt;" in text
        assert "| &lt;!-- hide | — | @&#8203;team |" in text
    report = build_report("abc`1|<b>", title, params, {}, {"m.json": metrics}, [])
    assert report.startswith("## Workspace against ``abc`1|<b>`` (abc1234 &lt;details&gt;")
    assert "| metric | ``abc`1\\|<b>`` | workspace | change |" in report  # a code span


def test_markdown_helpers():
    assert escape_text("a\r\nb") == "a b"
    assert escape_text("C:\\data `x`") == "C:\\\\data \\`x\\`"
    assert inline_code("HEAD~1") == "`HEAD~1`"
    assert inline_code("a``b") == "```a``b```"
    assert inline_code("`x") == "`` `x ``"
