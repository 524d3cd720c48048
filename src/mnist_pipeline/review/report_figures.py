"""PNG figures that the review report embeds: both revisions side by side or overlaid.

Inputs are file texts (a revision's via `git show`, the workspace's from disk), None where
a side lacks the file; each function writes one PNG and returns False, writing nothing,
when neither side has data. Object API of matplotlib (no pyplot, no global state).
"""

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mnist_pipeline.data.registry import MAX_CLASSES
from mnist_pipeline.fileio import atomic_file
from mnist_pipeline.review.markdown import one_line
from mnist_pipeline.review.report import (
    MAX_CLASS_ROWS,
    largest_changes,
    per_class_scores,
)

DPI = 100
SIDE_STYLES = (("tab:gray", "base"), ("tab:blue", "workspace"))  # colour per side
SPLIT_DASHES = {"train": "-", "valid": "--"}
# Past this many classes a confusion matrix's cells are too small for their numbers and
# its axes for the class names: it is drawn without them (each number was one text
# object: 5,000 classes took minutes).
MAX_LABELLED_CLASSES = 30
MAX_LABEL_CHARS = 40  # of a class name on an axis


def plain(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """Text from a file as matplotlib shows it literally: on one line, at most `limit`
    characters, `$` escaped (a pair of them starts mathtext, which fails on `$\\foo$`)."""
    text = one_line(text)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text), delimiter="\t" if "\t" in text else ","))


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})


def curve(text: str | None, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(epochs, values) of one split's column in a training-log TSV (epoch, train, valid),
    or None if the text is missing or has another layout (an older log); ValueError
    naming the line of a value that is not a number."""
    if text is None:
        return None
    rows = _rows(text)
    if not rows or "epoch" not in rows[0] or split not in rows[0]:
        return None
    epochs, values = [], []
    for line, row in enumerate(rows, start=2):
        try:
            epochs.append(float(row["epoch"]))
            values.append(float(row[split]))
        except (TypeError, ValueError):  # TypeError: a short row's missing field (None)
            raise ValueError(f"line {line}: epoch or {split} is not a number") from None
    return np.array(epochs), np.array(values)


def training_curves(
    curves: Mapping[str, tuple[str | None, str | None]], labels: tuple[str, str], path: Path
) -> bool:
    """One panel per metric (name -> (TSV text at the base, in the workspace)): train solid,
    valid dashed, one colour per side (labels: the base's name, the workspace's)."""
    panels = {
        name: [[curve(text, split) for split in SPLIT_DASHES] for text in texts]
        for name, texts in curves.items()
    }
    if all(c is None for sides in panels.values() for side in sides for c in side):
        return False
    fig = Figure(figsize=(5.2 * len(panels), 4))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (name, sides) in zip(axes, panels.items(), strict=True):
        for (color, _), label, side in zip(SIDE_STYLES, labels, sides, strict=True):
            for split, data in zip(SPLIT_DASHES, side, strict=True):
                if data is not None:
                    ax.plot(
                        *data, SPLIT_DASHES[split], color=color, label=f"{plain(label)} {split}"
                    )
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
    return True


def confusion_from_predictions(text: str, num_classes: int) -> np.ndarray:
    """Counts (C, C), rows the label, from predictions CSV text (label, predicted, ...);
    ValueError for a class index outside 0..C-1 (C at most MAX_CLASSES)."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"{num_classes} classes: expected 1 to {MAX_CLASSES}")
    rows = _rows(text)
    labels = np.array([int(row["label"]) for row in rows], dtype=np.int64)
    predicted = np.array([int(row["predicted"]) for row in rows], dtype=np.int64)
    for name, values in (("label", labels), ("predicted", predicted)):
        if len(values) and not 0 <= values.min() <= values.max() < num_classes:
            raise ValueError(f"a {name} outside the {num_classes} classes 0-{num_classes - 1}")
    flat = np.bincount(labels * num_classes + predicted, minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes)


def confusion_side_by_side(
    predictions: tuple[str | None, str | None],
    class_names: Sequence[str],
    labels: tuple[str, str],
    path: Path,
) -> bool:
    """The test confusion matrices of both sides as row shares in percent, zero cells
    blank; a side without predictions gets a note instead."""
    if predictions == (None, None):
        return False
    count = len(class_names)
    labelled = count <= MAX_LABELLED_CLASSES
    fig = Figure(figsize=(13, 6), layout="constrained")  # keeps the panels' labels apart
    axes = fig.subplots(1, 2)
    for ax, label, text in zip(axes, labels, predictions, strict=True):
        ax.set_title(f"{plain(label)}: test confusion (row %)")
        if text is None:
            ax.axis("off")
            ax.text(0.5, 0.5, "no predictions_test.csv", ha="center", va="center")
            continue
        counts = confusion_from_predictions(text, count)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        if labelled:
            for row, col in zip(*np.nonzero(counts), strict=True):
                color = "white" if shares[row, col] > 0.5 else "black"
                text_ = f"{100 * shares[row, col]:.1f}"
                ax.text(col, row, text_, ha="center", va="center", color=color, fontsize=7)
            names = [plain(name) for name in class_names]
            ax.set_xticks(range(count), names, rotation=45, ha="right")
            ax.set_yticks(range(count), names)
        ax.set_xlabel("predicted" + ("" if labelled else f" (class index, {count} classes)"))
        ax.set_ylabel("actual")
    _save(fig, path)
    return True


def per_class_f1(
    per_class: tuple[str | None, str | None], labels: tuple[str, str], path: Path
) -> bool:
    """Grouped horizontal bars of per-class F1 (per_class_test.csv: class, ..., f1) of
    the MAX_CLASS_ROWS classes whose F1 changed most (all, if there are no more)."""
    tables = [None if text is None else per_class_scores(text) for text in per_class]
    present = [table for table in tables if table]
    if not present:
        return False
    old, new = tables if tables[1] else (None, tables[0])
    shown, left_out = largest_changes(old, new or [], MAX_CLASS_ROWS)
    if not left_out:  # all of them: in the table's order
        order = {name: i for i, (name, _) in enumerate(new or [])}
        shown.sort(key=lambda row: order.get(row[0], len(order)))
    classes = [name for name, _, _ in shown]
    fig = Figure(figsize=(7, 0.45 * len(classes) + 1.5))
    ax = fig.add_subplot()
    positions = np.arange(len(classes))
    height = 0.4
    for offset, (color, _), label, table in zip(
        (-height / 2, height / 2), SIDE_STYLES, labels, tables, strict=True
    ):
        if not table:
            continue
        f1 = dict(table)
        values = [f1.get(name, np.nan) for name in classes]
        ax.barh(positions + offset, values, height, color=color, label=plain(label))
    ax.set_yticks(positions, [plain(name) for name in classes])
    ax.invert_yaxis()  # class 0 on top, as in the confusion matrices
    low = min(f1 for table in present for name, f1 in table if name in classes)
    ax.set_xlim(max(0.0, low - 0.05), 1.0)
    ax.set_xlabel("F1 (test)")
    total = len(classes) + left_out
    more = f": the {len(classes)} of {total} classes that changed most" if left_out else ""
    ax.set_title("per-class F1" + more)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: bars reach 1.0
    _save(fig, path)
    return True


def render_all(
    out_dir: Path,
    labels: tuple[str, str],
    curves: Mapping[str, tuple[str | None, str | None]],
    predictions: tuple[str | None, str | None],
    per_class: tuple[str | None, str | None],
) -> list[tuple[str, Path]]:
    """Every figure that has data on some side into out_dir; (title, path) of each."""
    tables = [per_class_scores(text) for text in per_class if text is not None]
    class_names = [name for name, _ in tables[-1]] if tables else []
    # Classes past the table's (or all, without one) are named by their index.
    count = max((1 + _largest_class(text) for text in predictions if text is not None), default=0)
    class_names += [str(i) for i in range(len(class_names), count)]
    written = [
        ("training curves", out_dir / "training_curves.png"),
        ("test confusion matrices", out_dir / "confusion_test.png"),
        ("per-class F1 (test)", out_dir / "per_class_f1.png"),
    ]
    done = [
        training_curves(curves, labels, written[0][1]),
        confusion_side_by_side(predictions, class_names, labels, written[1][1]),
        per_class_f1(per_class, labels, written[2][1]),
    ]
    return [figure for figure, wrote in zip(written, done, strict=True) if wrote]


def _largest_class(text: str) -> int:
    """The largest class index in predictions CSV text (0 if none); ValueError past
    MAX_CLASSES - 1, before anything the size of the classes is made."""
    rows = _rows(text)
    largest = max((int(row[key]) for row in rows for key in ("label", "predicted")), default=0)
    if not 0 <= largest < MAX_CLASSES:
        raise ValueError(f"class index {largest}: expected 0 to {MAX_CLASSES - 1}")
    return largest
