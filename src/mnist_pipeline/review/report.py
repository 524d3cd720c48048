"""A Markdown review report: the workspace's metrics, params and figures against a
git revision, ready to paste into a pull request.

Every function takes plain data (parsed JSON/YAML, file names) and returns text;
reading files and asking git is `scripts/report.py`'s job, so this stays easy to test.
Text from files (metric keys, param values, paths, revisions) is escaped where it enters
the Markdown (review/markdown.py): a report is pasted into, or posted as, a PR comment.
"""

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mnist_pipeline.review.markdown import escape_text, inline_code, link_target, one_line
from mnist_pipeline.review.significance import (
    BoolArray,
    SeedStat,
    compare_accuracy,
    format_mean_std,
)

MISSING = "—"  # a value one side does not have (a new or a removed metric or param)
NEW_LABEL = "workspace"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaves of a nested mapping under dotted names, as `dvc metrics diff` spells them
    (`test.accuracy`, `train.lr`). Lists stay whole: a param like hidden_sizes is one value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def is_number(value: Any) -> bool:
    # bool is an int subclass, but a flag is not a metric.
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_leaves(tree: Mapping[str, Any]) -> dict[str, float]:
    return {name: value for name, value in flatten(tree).items() if is_number(value)}


def format_value(value: Any) -> str:
    """A cell: floats to 6 significant digits (enough to see a small change, short enough
    to read), ints whole, anything else as compact JSON so lists stay unambiguous."""
    if value is None:
        return MISSING
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if is_number(value):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def format_delta(old: Any, new: Any) -> str:
    if not (is_number(old) and is_number(new)):
        return MISSING
    delta = new - old
    if delta == 0:
        return "0"
    return f"{delta:+d}" if isinstance(delta, int) else f"{delta:+.6g}"


def _cell(text: str) -> str:
    # A pipe ends the cell even inside a code span; GitHub reads \| as a pipe in both.
    return one_line(text).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: int) -> str:
    """A GitHub table; the last `numeric` columns are right-aligned. The header is
    Markdown as given (code spans); the rows are text, escaped."""
    align = ["---"] * (len(header) - numeric) + ["---:"] * numeric
    lines = [[_cell(c) for c in header], align]
    lines += [[_cell(escape_text(c)) for c in row] for row in rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def metrics_rows(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[list[str]]:
    """name, old, new, delta for every numeric metric on either side, sorted by name."""
    old_flat = numeric_leaves(old or {})
    new_flat = numeric_leaves(new)
    return [
        [
            name,
            format_value(old_flat.get(name)),
            format_value(new_flat.get(name)),
            format_delta(old_flat.get(name), new_flat.get(name)),
        ]
        for name in sorted(old_flat.keys() | new_flat.keys())
    ]


def metrics_section(
    rev: str, old: Mapping[str, Mapping[str, Any] | None], new: Mapping[str, Mapping[str, Any]]
) -> str:
    """One table per metrics file (`new` maps path -> data; `old` may lack a path or
    hold None for it: the file did not exist at `rev`)."""
    parts = ["### Metrics"]
    for path, data in new.items():
        missing = old.get(path) is None
        parts.append(inline_code(path) + (f" (not in {inline_code(rev)})" if missing else ""))
        rows = metrics_rows(old.get(path), data)
        if rows:
            header = ["metric", inline_code(rev), NEW_LABEL, "change"]
            parts.append(markdown_table(header, rows, numeric=3))
        else:
            parts.append("No numeric metrics.")
    return "\n\n".join(parts)


def changed_params(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[list[str]]:
    """name, old, new for every param whose value differs (added and removed ones too)."""
    old_flat = flatten(old or {})
    new_flat = flatten(new)
    names = sorted(old_flat.keys() | new_flat.keys())
    absent = object()  # tells a param set to null apart from a param that is not there
    rows = []
    for name in names:
        before, after = old_flat.get(name, absent), new_flat.get(name, absent)
        if before != after:
            rows.append([name, _param_cell(before, absent), _param_cell(after, absent)])
    return rows


def _param_cell(value: Any, absent: object) -> str:
    if value is absent:
        return MISSING
    return "null" if value is None else format_value(value)


def params_section(
    rev: str, path: str, old: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> str:
    rows = changed_params(old, new)
    if not rows:
        return f"### Params\n\nNo param in {inline_code(path)} changed."
    table = markdown_table(["param", inline_code(rev), NEW_LABEL], rows, numeric=2)
    return f"### Params\n\n{inline_code(path)}\n\n{table}"


def images_section(images: Sequence[tuple[str, str]]) -> str:
    """Embedded images (title, path relative to the report), both revisions in each."""
    shown = "\n\n".join(f"![{escape_text(title)}]({link_target(path)})" for title, path in images)
    return f"### Side by side\n\n{shown}"


def figures_section(figures: Sequence[str], missing: Sequence[str] = ()) -> str:
    """Links to the figures, paths as given (relative to where the report is read), and a
    line for each figures folder that is not in the workspace."""
    notes = [
        f"{inline_code(folder)}: no figures in the workspace; `dvc pull` (or `dvc repro`) "
        "brings them."
        for folder in missing
    ]
    if not figures:
        return "\n\n".join(["### Figures", *(notes or ["No figures."])])
    links = "\n".join(
        f"- [{escape_text(path.rsplit('/', 1)[-1])}]({link_target(path)})" for path in figures
    )
    return "\n\n".join(["### Figures", links, *notes])


def correctness(text: str) -> BoolArray:
    """Per image: is the prediction right? From predictions CSV text with `label` and
    `predicted` columns (evaluate's predictions_test.csv). ValueError if it has neither."""
    rows = csv.DictReader(io.StringIO(text))
    if not {"label", "predicted"} <= set(rows.fieldnames or ()):
        raise ValueError(f"expected label and predicted columns, got {rows.fieldnames}")
    return np.array([row["label"] == row["predicted"] for row in rows], dtype=np.bool_)


def significance_section(rev: str, path: str, old: str | None, new: str | None) -> str:
    """Is the test accuracy change real? McNemar's test and a paired-bootstrap CI on the
    per-image predictions at `rev` (old) and in the workspace (new); CSV text or None
    where a side lacks the file (one line each, and no test)."""
    title = "### Is it real?"
    missing = [
        f"{inline_code(path)} is not in {where} (an older metrics layout, or no metrics): "
        "no paired test."
        for where, text in ((inline_code(rev), old), (f"the {NEW_LABEL}", new))
        if text is None
    ]
    if old is None or new is None:
        return "\n\n".join([title, *missing])
    try:
        correct_old, correct_new = correctness(old), correctness(new)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if len(correct_old) != len(correct_new) or len(correct_new) == 0:
        return (
            f"{title}\n\nThe two sides scored different test sets ({len(correct_old)} and "
            f"{len(correct_new)} images in {inline_code(path)}): no paired test."
        )
    comparison = compare_accuracy(correct_old, correct_new)
    rows = [
        [
            "test accuracy",
            f"{comparison.old_accuracy:.4f}",
            f"{comparison.new_accuracy:.4f}",
        ],
        ["right only here", str(comparison.mcnemar.b), str(comparison.mcnemar.c)],
    ]
    table = markdown_table(["", inline_code(rev), NEW_LABEL], rows, numeric=2)
    intro = f"Paired on the same {comparison.n_images} test images ({inline_code(path)}):"
    return f"{title}\n\n{intro}\n\n{table}\n\n**{comparison.verdict()}**"


def seed_stats(document: Mapping[str, Any]) -> dict[str, SeedStat]:
    """The `metrics` of a seeds.json (see review/seeds.py) as SeedStats; ValueError if
    it does not have that layout."""
    metrics = document.get("metrics")
    if not isinstance(metrics, Mapping):
        raise ValueError("expected a 'metrics' mapping")
    try:
        return {name: SeedStat(**entry) for name, entry in metrics.items()}
    except TypeError as exc:
        raise ValueError(f"a metric is not mean/std/min/max/n: {exc}") from None


def seeds_section(
    rev: str, path: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> str:
    """Mean ± std over training seeds of every metric both sides' seeds.json have; a
    line for each side without one (`make seeds` writes it)."""
    title = "### Over seeds"
    missing = [
        f"{inline_code(path)} is not in {where}: no multi-seed summary there "
        "(`make seeds` writes it)."
        for where, data in ((inline_code(rev), old), (f"the {NEW_LABEL}", new))
        if data is None
    ]
    if old is None or new is None:
        return "\n\n".join([title, *missing])
    try:
        old_stats, new_stats = seed_stats(old), seed_stats(new)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    rows = [
        [name, format_mean_std(old_stats[name]), format_mean_std(new_stats[name])]
        for name in new_stats
        if name in old_stats
    ]
    if not rows:
        return f"{title}\n\nThe two sides' {inline_code(path)} share no metric."
    table = markdown_table(["metric", inline_code(rev), NEW_LABEL], rows, numeric=2)
    return f"{title}\n\n{inline_code(path)}\n\n{table}"


def report_sections(
    rev: str,
    rev_title: str,
    params: tuple[str, Mapping[str, Any] | None, Mapping[str, Any]],
    old_metrics: Mapping[str, Mapping[str, Any] | None],
    new_metrics: Mapping[str, Mapping[str, Any]],
    predictions: tuple[str, str | None, str | None] | None = None,
    seeds: tuple[str, Mapping[str, Any] | None, Mapping[str, Any] | None] | None = None,
    base_reason: str | None = None,
) -> list[str]:
    """The sections the report and the PR comment share, in order: the heading, the base,
    "Is it real?", "Over seeds", metrics and params (see `build_report`). `base_reason`
    is Markdown (revisions already in code spans)."""
    path, old_params, new_params = params
    sections = [f"## Workspace against {inline_code(rev)} ({escape_text(rev_title)})"]
    if base_reason is not None:
        sections.append(f"Base: {one_line(base_reason)}.")
    if predictions is not None:
        sections.append(significance_section(rev, *predictions))
    if seeds is not None:
        sections.append(seeds_section(rev, *seeds))
    sections += [
        metrics_section(rev, old_metrics, new_metrics),
        params_section(rev, path, old_params, new_params),
    ]
    return sections


def build_report(
    rev: str,
    rev_title: str,
    params: tuple[str, Mapping[str, Any] | None, Mapping[str, Any]],
    old_metrics: Mapping[str, Mapping[str, Any] | None],
    new_metrics: Mapping[str, Mapping[str, Any]],
    figures: Sequence[str],
    predictions: tuple[str, str | None, str | None] | None = None,
    seeds: tuple[str, Mapping[str, Any] | None, Mapping[str, Any] | None] | None = None,
    base_reason: str | None = None,
    images: Sequence[tuple[str, str]] = (),
) -> str:
    """The whole report. `params` is (path, data at rev or None, workspace data);
    `rev_title` says which commit `rev` named (e.g. "1a2b3c4 Tune lr"). `predictions`
    (path, CSV text at rev, in the workspace) and `seeds` (path, seeds.json data at rev,
    in the workspace), None where not there, add their sections; `base_reason` says why
    `rev` is the base; `images` (title, path) are embedded before the figure links."""
    sections = report_sections(
        rev, rev_title, params, old_metrics, new_metrics, predictions, seeds, base_reason
    )
    return join_sections([*sections, *figure_sections(figures, images)])


def figure_sections(
    figures: Sequence[str], images: Sequence[tuple[str, str]], missing: Sequence[str] = ()
) -> list[str]:
    """The report's own sections after `report_sections`: the embedded images, if any,
    and the figure links (`missing`: figures folders not in the workspace); a PR comment
    has neither (files next to the report)."""
    return ([images_section(images)] if images else []) + [figures_section(figures, missing)]


def join_sections(sections: Sequence[str]) -> str:
    return "\n\n".join(sections) + "\n"
