"""A Markdown review report: the workspace's metrics, params and figures against a
git revision, ready to paste into a pull request.

Every function takes plain data (parsed JSON/YAML, file names) and returns text;
reading files and asking git is `scripts/report.py`'s job, so this stays easy to test.
"""

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

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
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: int) -> str:
    """A GitHub table; the last `numeric` columns are right-aligned."""
    align = ["---"] * (len(header) - numeric) + ["---:"] * numeric
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(_cell(c) for c in line) + " |" for line in lines)


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
        parts.append(f"`{path}`" + (f" (not in `{rev}`)" if missing else ""))
        rows = metrics_rows(old.get(path), data)
        if rows:
            header = ["metric", f"`{rev}`", NEW_LABEL, "change"]
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
        return f"### Params\n\nNo param in `{path}` changed."
    table = markdown_table(["param", f"`{rev}`", NEW_LABEL], rows, numeric=2)
    return f"### Params\n\n`{path}`\n\n{table}"


def figures_section(figures: Sequence[str]) -> str:
    """Links to the figures, paths as given (relative to where the report is read)."""
    if not figures:
        return "### Figures\n\nNo figures."
    links = "\n".join(f"- [{path.rsplit('/', 1)[-1]}]({path})" for path in figures)
    return f"### Figures\n\n{links}"


def build_report(
    rev: str,
    rev_title: str,
    params: tuple[str, Mapping[str, Any] | None, Mapping[str, Any]],
    old_metrics: Mapping[str, Mapping[str, Any] | None],
    new_metrics: Mapping[str, Mapping[str, Any]],
    figures: Sequence[str],
) -> str:
    """The whole report. `params` is (path, data at rev or None, workspace data);
    `rev_title` says which commit `rev` named (e.g. "1a2b3c4 Tune lr")."""
    path, old_params, new_params = params
    sections = [
        f"## Workspace against `{rev}` ({rev_title})",
        metrics_section(rev, old_metrics, new_metrics),
        params_section(rev, path, old_params, new_params),
        figures_section(figures),
    ]
    return "\n\n".join(sections) + "\n"
