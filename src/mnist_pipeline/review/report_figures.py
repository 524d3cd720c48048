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

from mnist_pipeline.fileio import atomic_file

DPI = 100
SIDE_STYLES = (("tab:gray", "base"), ("tab:blue", "workspace"))  # colour per side
SPLIT_DASHES = {"train": "-", "valid": "--"}


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text), delimiter="\t" if "\t" in text else ","))


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})


def curve(text: str | None, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(epochs, values) of one split's column in a training-log TSV (epoch, train, valid),
    or None if the text is missing or has another layout (an older log)."""
    if text is None:
        return None
    rows = _rows(text)
    if not rows or "epoch" not in rows[0] or split not in rows[0]:
        return None
    return (
        np.array([float(row["epoch"]) for row in rows]),
        np.array([float(row[split]) for row in rows]),
    )


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
                    ax.plot(*data, SPLIT_DASHES[split], color=color, label=f"{label} {split}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
    return True


def confusion_from_predictions(text: str, num_classes: int) -> np.ndarray:
    """Counts (C, C), rows the label, from predictions CSV text (label, predicted, ...)."""
    rows = _rows(text)
    labels = np.array([int(row["label"]) for row in rows], dtype=np.int64)
    predicted = np.array([int(row["predicted"]) for row in rows], dtype=np.int64)
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
    fig = Figure(figsize=(13, 6), layout="constrained")  # keeps the panels' labels apart
    axes = fig.subplots(1, 2)
    for ax, label, text in zip(axes, labels, predictions, strict=True):
        ax.set_title(f"{label}: test confusion (row %)")
        if text is None:
            ax.axis("off")
            ax.text(0.5, 0.5, "no predictions_test.csv", ha="center", va="center")
            continue
        counts = confusion_from_predictions(text, count)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (row, col), n in np.ndenumerate(counts):
            if n:
                color = "white" if shares[row, col] > 0.5 else "black"
                text_ = f"{100 * shares[row, col]:.1f}"
                ax.text(col, row, text_, ha="center", va="center", color=color, fontsize=7)
        ax.set_xticks(range(count), class_names, rotation=45, ha="right")
        ax.set_yticks(range(count), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
    _save(fig, path)
    return True


def per_class_f1(
    per_class: tuple[str | None, str | None], labels: tuple[str, str], path: Path
) -> bool:
    """Grouped horizontal bars of per-class F1 (per_class_test.csv: class, ..., f1)."""
    tables = [None if text is None else _rows(text) for text in per_class]
    present = [table for table in tables if table]
    if not present:
        return False
    classes = [row["class"] for row in present[-1]]
    fig = Figure(figsize=(7, 0.45 * len(classes) + 1.5))
    ax = fig.add_subplot()
    positions = np.arange(len(classes))
    height = 0.4
    for offset, (color, _), label, table in zip(
        (-height / 2, height / 2), SIDE_STYLES, labels, tables, strict=True
    ):
        if not table:
            continue
        f1 = {row["class"]: float(row["f1"]) for row in table}
        values = [f1.get(name, np.nan) for name in classes]
        ax.barh(positions + offset, values, height, color=color, label=label)
    ax.set_yticks(positions, classes)
    ax.invert_yaxis()  # class 0 on top, as in the confusion matrices
    low = min(float(row["f1"]) for table in present for row in table)
    ax.set_xlim(max(0.0, low - 0.05), 1.0)
    ax.set_xlabel("F1 (test)")
    ax.set_title("per-class F1")
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
    tables = [_rows(text) for text in per_class if text is not None]
    class_names = [row["class"] for row in tables[-1]] if tables else []
    if not class_names and predictions != (None, None):
        text = predictions[1] if predictions[1] is not None else predictions[0]
        class_names = [str(i) for i in range(1 + max(_label_values(text or "")))]
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


def _label_values(text: str) -> list[int]:
    rows = _rows(text)
    return [int(row[key]) for row in rows for key in ("label", "predicted")] or [0]
