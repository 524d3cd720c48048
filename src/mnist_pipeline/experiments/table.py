"""The experiments of HEAD in one table that fits a terminal (`make exps`): name, test
accuracy with its 95% interval, the change against the baseline (HEAD's committed
results) with McNemar's paired test, as the review report judges it, and the params that
differ from the baseline.

`dvc exp show` lists every param and metric; no experiments table of DVC, MLflow or
Hydra says whether a difference is more than noise. Here each row is paired with the
baseline on the same test images (the git-tracked per-image predictions of both).
"""

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.experiments.start import changed_leaves
from mnist_pipeline.gitrepo import file_at, git
from mnist_pipeline.review.report import correctness, flatten
from mnist_pipeline.review.significance import BoolArray, mcnemar_exact, wilson_interval

Runner = Callable[[Sequence[str]], str]  # dvc arguments -> its stdout
MAX_WIDTH = 120  # characters per line
MAX_ROWS = 20  # experiments shown; the rest are counted
NAME_WIDTH = 24
ACCURACY_WIDTH = 22  # "89.70% [89.10, 90.29]"
VERDICT_WIDTH = 25  # "+0.21 p=0.031 better" (points, McNemar's p, its reading at 0.05)
ALPHA = 0.05
MAX_PREDICTIONS_BYTES = 50_000_000  # ~4.5 million rows of "label,predicted,confidence"
METRICS_FILE = "metrics/evaluate.json"
PREDICTIONS_FILE = "metrics/evaluate/predictions_test.csv"
PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class Record:
    """One experiment (or the baseline) as `dvc exp show` and git have it."""

    name: str
    rev: str  # the commit holding its results; "" while it has none (queued, running)
    state: str  # "done", or DVC's state of a queued, running or failed experiment
    params: Mapping[str, Any]  # params.yaml data
    test_accuracy: float | None  # metrics/evaluate.json test.accuracy


def records_from_exp_show(
    shown: Sequence[Mapping[str, Any]], head: str
) -> tuple[Record, list[Record]]:
    """The baseline (HEAD's row) and its experiments from `dvc exp show --json` output."""
    baseline_row = next((row for row in shown if row.get("rev") == head), None)
    if baseline_row is None:
        raise PipelineError(f"dvc exp show lists no row for HEAD ({head[:7]})")
    baseline = _record("HEAD", head, "done", baseline_row.get("data") or {})
    experiments = []
    for entry in baseline_row.get("experiments") or []:
        revs = entry.get("revs") or [{}]
        data = revs[0].get("data") or {}
        executor = entry.get("executor") or {}
        state = str(executor.get("state") or "done") if isinstance(executor, dict) else "done"
        state = "done" if state == "success" else state
        rev = str(revs[0].get("rev") or "") if data.get("metrics") else ""
        name = str(entry.get("name") or revs[0].get("name") or rev[:7] or "?")
        experiments.append(_record(name, rev, state, data))
    return baseline, experiments


def _record(name: str, rev: str, state: str, data: Mapping[str, Any]) -> Record:
    params = _file_data(data.get("params"), PARAMS_FILE)
    metrics = _file_data(data.get("metrics"), METRICS_FILE)
    test = metrics.get("test") if isinstance(metrics, Mapping) else None
    accuracy = test.get("accuracy") if isinstance(test, Mapping) else None
    if isinstance(accuracy, bool) or not isinstance(accuracy, int | float):
        accuracy = None
    return Record(name, rev, state, params, None if accuracy is None else float(accuracy))


def _file_data(files: Any, path: str) -> Any:
    entry = files.get(path) if isinstance(files, Mapping) else None
    data = entry.get("data") if isinstance(entry, Mapping) else None
    return data if isinstance(data, Mapping) else {}


def accuracy_cell(correct: BoolArray | None, accuracy: float | None) -> str:
    """ "89.70% [89.10, 90.29]": the accuracy with its 95% Wilson interval, from the
    per-image results (or the metric alone when they are missing)."""
    if correct is None or len(correct) == 0:
        return "—" if accuracy is None else f"{100 * accuracy:.2f}%"
    right = int(np.count_nonzero(correct))
    low, high = wilson_interval(right, len(correct))
    return f"{100 * right / len(correct):.2f}% [{100 * low:.2f}, {100 * high:.2f}]"


def verdict_cell(baseline: BoolArray | None, correct: BoolArray | None) -> str:
    """ "+0.21 p=0.031 better": the change in points against the baseline, McNemar's
    exact p on the same images and what it means at ALPHA."""
    if baseline is None:
        return "no baseline results"
    if correct is None:
        return "—"
    if len(baseline) != len(correct):
        return "other test images"
    test = mcnemar_exact(baseline, correct)
    delta = 100 * (test.c - test.b) / len(correct)
    p = "p<0.0001" if test.p_value < 1e-4 else f"p={test.p_value:.2g}"
    reading = "n.s."
    if test.p_value < ALPHA:
        reading = "better" if delta > 0 else "worse"
    return f"{delta:+z.2f} {p} {reading}"


def params_cell(baseline: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """`key=value` for every param that differs from the baseline's; a key by its last
    part where params.yaml has no other of that name (`lr`, but `train.batch_size`)."""
    changes = changed_leaves(baseline, params)
    names = [key.rsplit(".", 1)[-1] for key in flatten(baseline)]
    cells = []
    for key, (_, new) in changes.items():
        last = key.rsplit(".", 1)[-1]
        cells.append(f"{last if names.count(last) == 1 else key}={_value(new)}")
    return " ".join(cells) or "(same)"


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def printable(text: str, width: int) -> str:
    """`text` safe for a terminal (control characters as '?', so no escape sequence from
    a file reaches it) and cut to `width` characters with a trailing '…'."""
    safe = "".join(char if char.isprintable() else "?" for char in text)
    return safe if len(safe) <= width else safe[: width - 1] + "…"


def format_table(
    baseline: Record,
    baseline_correct: BoolArray | None,
    rows: Sequence[tuple[Record, BoolArray | None]],
    hidden: int = 0,
    width: int = MAX_WIDTH,
) -> str:
    """The table, one line per experiment, at most `width` characters each; `hidden`
    experiments not shown are counted in a last line."""
    params_width = width - NAME_WIDTH - ACCURACY_WIDTH - VERDICT_WIDTH - 3
    header = ("experiment", "test accuracy [95% CI]", "vs HEAD (McNemar)", "params that differ")

    def line(cells: Sequence[str]) -> str:
        widths = (NAME_WIDTH, ACCURACY_WIDTH, VERDICT_WIDTH, params_width)
        parts = [printable(cell, w).ljust(w) for cell, w in zip(cells, widths, strict=True)]
        return " ".join(parts).rstrip()

    lines = [line(header)]
    base_name = f"HEAD {baseline.rev[:7]}"
    lines.append(line((base_name, accuracy_cell(baseline_correct, baseline.test_accuracy), "", "")))
    for record, correct in rows:
        if record.state != "done":
            cells = (
                record.name,
                f"({record.state})",
                "",
                params_cell(baseline.params, record.params),
            )
        else:
            cells = (
                record.name,
                accuracy_cell(correct, record.test_accuracy),
                verdict_cell(baseline_correct, correct),
                params_cell(baseline.params, record.params),
            )
        lines.append(line(cells))
    if not rows:
        lines.append("(no experiments of HEAD: dvc exp run ... or make exp PRESET=...)")
    if hidden:
        lines.append(f"({hidden} more, of lower test accuracy: --limit {len(rows) + hidden})")
    return "\n".join(lines) + "\n"


def predictions_at(repo: Path, rev: str) -> BoolArray | None:
    """The per-image correctness committed at `rev`; None where there is none. A file
    larger than MAX_PREDICTIONS_BYTES or of another layout is an error naming it."""
    size = git(repo, "cat-file", "-s", f"{rev}:{PREDICTIONS_FILE}")
    if size.returncode != 0:
        return None
    if int(size.stdout.strip() or 0) > MAX_PREDICTIONS_BYTES:
        raise PipelineError(
            f"{PREDICTIONS_FILE} at {rev[:7]}: larger than {MAX_PREDICTIONS_BYTES} bytes"
        )
    text = file_at(repo, rev, PREDICTIONS_FILE)
    try:
        return None if text is None else correctness(text)
    except (ValueError, csv.Error) as exc:
        raise PipelineError(f"{PREDICTIONS_FILE} at {rev[:7]}: {exc}") from None


def experiments_table(repo: Path, dvc: Runner, limit: int = MAX_ROWS) -> str:
    """The table of HEAD's experiments in `repo`, best test accuracy first."""
    head = git(repo, "rev-parse", "HEAD")
    if head.returncode != 0:
        raise PipelineError(f"{repo}: no commit (HEAD) to compare experiments with")
    shown = json.loads(dvc(["exp", "show", "--json"]))
    baseline, experiments = records_from_exp_show(shown, head.stdout.strip())
    ranked = sorted(experiments, key=lambda r: (r.test_accuracy is None, -(r.test_accuracy or 0)))
    rows = [(r, predictions_at(repo, r.rev) if r.rev else None) for r in ranked[:limit]]
    baseline_correct = predictions_at(repo, baseline.rev)
    return format_table(baseline, baseline_correct, rows, hidden=len(ranked) - len(rows))
