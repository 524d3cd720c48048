"""A Markdown review report: the workspace's metrics, params and figures against a
git revision, ready to paste into a pull request.

Every function takes plain data (parsed JSON/YAML, file names) and returns text;
reading files and asking git is review/assemble.py's job, so this stays easy to test.
Text from files (metric keys, param values, paths, revisions) is escaped where it enters
the Markdown (review/markdown.py): a report is pasted into, or posted as, a PR comment.
"""

import csv
import heapq
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mnist_pipeline.data.registry import MAX_CLASS_NAME_CHARS, MAX_CLASSES
from mnist_pipeline.review.comment import fit
from mnist_pipeline.review.markdown import escape_text, inline_code, link_target, one_line
from mnist_pipeline.review.significance import (
    BoolArray,
    SeedStat,
    compare_accuracy,
    format_mean_std,
)

MISSING = "—"  # a value one side does not have (a new or a removed metric or param)
NEW_LABEL = "workspace"
# A table cell shows at most this many characters of its text (a long list param, a
# name): a row stays readable and a table's size follows from its number of rows.
MAX_CELL_CHARS = 200
# The per-class table shows the classes whose F1 changed most, and says how many more
# there are: 20 rows read at a glance, while a model may have up to MAX_CLASSES (1000).
MAX_CLASS_ROWS = 20
# report.md past this is cut like the comment (whole table rows, with a line saying so).
# The largest inputs the limits of review/inputs.py let through make ~3 MB of tables
# (5,000 metric rows of 200-character names, per metrics file); ours make ~5 kB.
MAX_REPORT_BYTES = 1_000_000


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


def shortened(text: str, limit: int = MAX_CELL_CHARS) -> str:
    """`text` on one line, cut to `limit` characters (the last one an ellipsis)."""
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: int) -> str:
    """A GitHub table; the last `numeric` columns are right-aligned. The header is
    Markdown as given (code spans); the rows are text, escaped."""
    align = ["---"] * (len(header) - numeric) + ["---:"] * numeric
    lines = [[_cell(c) for c in header], align]
    lines += [[_cell(escape_text(shortened(c))) for c in row] for row in rows]
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


def per_class_scores(text: str) -> list[tuple[str, float]]:
    """(class, F1) of each row of per-class CSV text (evaluate's per_class_test.csv:
    class, precision, recall, f1, support), in order. ValueError unless every row has a
    class name of at most MAX_CLASS_NAME_CHARS, given once, and an F1 in [0, 1], and
    there are at most MAX_CLASSES rows."""
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:  # a field over csv's own limit (128 kB) too
        raise ValueError(f"not valid CSV: {exc}") from None
    header = rows[0] if rows else []
    if "class" not in header or "f1" not in header:
        raise ValueError(f"expected class and f1 columns, got {header[:10]}")
    if len(rows) - 1 > MAX_CLASSES:
        raise ValueError(f"{len(rows) - 1:,} classes, over the limit of {MAX_CLASSES}")
    name_at, f1_at = header.index("class"), header.index("f1")
    scores: list[tuple[str, float]] = []
    seen: set[str] = set()
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"line {line}: {len(row)} fields, expected {len(header)}")
        name, f1_text = row[name_at], row[f1_at]
        if len(name) > MAX_CLASS_NAME_CHARS:
            raise ValueError(
                f"line {line}: a class name of {len(name):,} characters, over the limit "
                f"of {MAX_CLASS_NAME_CHARS}"
            )
        if name in seen:
            raise ValueError(f"line {line}: class {shortened(name, 40)!r} is there twice")
        seen.add(name)
        try:
            f1 = float(f1_text)
        except ValueError:
            f1 = math.nan
        if not 0 <= f1 <= 1:
            raise ValueError(f"line {line}: f1 {shortened(f1_text, 20)!r} is not in [0, 1]")
        scores.append((name, f1))
    return scores


def largest_changes(
    old: Sequence[tuple[str, float]] | None,
    new: Sequence[tuple[str, float]],
    limit: int = MAX_CLASS_ROWS,
) -> tuple[list[tuple[str, float | None, float | None]], int]:
    """The `limit` classes whose F1 changed most as (class, F1 in old, F1 in new), a
    class on one side only first, then by the size of the change, ties in the order of
    `new` (then of `old`); and how many classes are left out. O(n log limit)."""
    old_f1 = dict(old or ())
    new_f1 = dict(new)
    names = list(new_f1) + [name for name in old_f1 if name not in new_f1]

    def change(name: str) -> float:
        before, after = old_f1.get(name), new_f1.get(name)
        return math.inf if before is None or after is None else abs(after - before)

    shown = heapq.nlargest(limit, names, key=change)  # stable: ties keep their order
    return [(name, old_f1.get(name), new_f1.get(name)) for name in shown], len(names) - len(shown)


def per_class_section(rev: str, path: str, old: str | None, new: str | None) -> str:
    """Test F1 per class at `rev` and in the workspace (per-class CSV texts, None where a
    side lacks the file): the MAX_CLASS_ROWS classes that changed most, and a line for
    the rest; a line for each side without the file."""
    title = "### Per class"
    missing = [
        f"{inline_code(path)} is not in {where}: no per-class comparison."
        for where, text in ((inline_code(rev), old), (f"the {NEW_LABEL}", new))
        if text is None
    ]
    if old is None or new is None:
        return "\n\n".join([title, *missing])
    try:
        old_scores, new_scores = per_class_scores(old), per_class_scores(new)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    shown, left_out = largest_changes(old_scores, new_scores)
    rows = [
        [name, format_value(before), format_value(after), format_delta(before, after)]
        for name, before, after in shown
    ]
    table = markdown_table(["class", inline_code(rev), NEW_LABEL, "change"], rows, numeric=3)
    total = len(shown) + left_out
    intro = (
        f"Test F1 ({inline_code(path)}) of the {len(shown)} classes of {total:,} that changed most:"
        if left_out
        else f"Test F1 ({inline_code(path)}):"
    )
    parts = [title, intro, table]
    if left_out:
        parts.append(f"{left_out:,} more classes changed less; {inline_code(path)} has them all.")
    return "\n\n".join(parts)


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
    per_class: tuple[str, str | None, str | None] | None = None,
) -> list[str]:
    """The sections the report and the PR comment share, in order: the heading, the base,
    "Is it real?", "Over seeds", metrics, "Per class" and params (see `build_report`;
    `per_class`: path, CSV text at rev, in the workspace). `base_reason` is Markdown
    (revisions already in code spans)."""
    path, old_params, new_params = params
    sections = [f"## Workspace against {inline_code(rev)} ({escape_text(rev_title)})"]
    if base_reason is not None:
        sections.append(f"Base: {one_line(base_reason)}.")
    if predictions is not None:
        sections.append(significance_section(rev, *predictions))
    if seeds is not None:
        sections.append(seeds_section(rev, *seeds))
    sections.append(metrics_section(rev, old_metrics, new_metrics))
    if per_class is not None:
        sections.append(per_class_section(rev, *per_class))
    sections.append(params_section(rev, path, old_params, new_params))
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
    per_class: tuple[str, str | None, str | None] | None = None,
) -> str:
    """The whole report. `params` is (path, data at rev or None, workspace data);
    `rev_title` says which commit `rev` named (e.g. "1a2b3c4 Tune lr"). `predictions`
    (path, CSV text at rev, in the workspace) and `seeds` (path, seeds.json data at rev,
    in the workspace), None where not there, add their sections; `base_reason` says why
    `rev` is the base; `images` (title, path) are embedded before the figure links;
    `per_class` (path, CSV text at rev, in the workspace) adds the per-class table."""
    sections = report_sections(
        rev,
        rev_title,
        params,
        old_metrics,
        new_metrics,
        predictions,
        seeds,
        base_reason,
        per_class,
    )
    return join_sections([*sections, *figure_sections(figures, images)])


def figure_sections(
    figures: Sequence[str], images: Sequence[tuple[str, str]], missing: Sequence[str] = ()
) -> list[str]:
    """The report's own sections after `report_sections`: the embedded images, if any,
    and the figure links (`missing`: figures folders not in the workspace); a PR comment
    has neither (files next to the report)."""
    return ([images_section(images)] if images else []) + [figures_section(figures, missing)]


def _report_cut_notice(rows: int, other: int) -> str:
    what = [f"{rows:,} table rows"] if rows else []
    what += [f"{other:,} other lines"] if other else []
    return (
        f"*Cut here to keep the report under {MAX_REPORT_BYTES:,} bytes: this section's "
        f"last {' and '.join(what)}. The files compared hold everything.*"
    )


def join_sections(sections: Sequence[str], limit: int = MAX_REPORT_BYTES) -> str:
    """The report: the sections, at most `limit` bytes in all (the large ones lose whole
    table rows from their end, with a line saying so, as the PR comment does)."""
    fitted = fit(sections, limit - 1, "", _report_cut_notice)  # 1: the final newline
    return "\n\n".join(fitted) + "\n"
