"""PNG figures for review: confusion heatmaps, reliability, accuracy–coverage, worst errors.

Uses matplotlib's object API (no pyplot), so no global state and no GUI
backend is touched; every function takes data and a path and writes one PNG
atomically.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from mnist_pipeline.fileio import atomic_file

DPI = 100


def _save(fig: Figure, path: Path) -> None:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})


def confusion_heatmap(
    confusion: np.ndarray, class_names: Sequence[str], path: Path, normalize: bool, title: str
) -> None:
    """Heatmap of confusion (C, C) (rows actual); each non-zero cell shows its count, or
    when normalized its share of the row in percent (DVC's renderers show no numbers).
    Zero cells stay blank, so the few confusions that happen stand out."""
    counts = np.asarray(confusion, dtype=np.int64)
    row_totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    shown = 100 * counts / row_totals if normalize else counts
    size = max(5.0, 0.6 * len(class_names) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=100 if normalize else None)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("% of the actual class" if normalize else "images")
    threshold = shown.max() / 2 if shown.max() > 0 else 1
    for (row, col), count in np.ndenumerate(counts):
        if count == 0:
            continue
        text = f"{shown[row, col]:.1f}" if normalize else str(count)
        color = "white" if shown[row, col] > threshold else "black"
        ax.text(col, row, text, ha="center", va="center", color=color, fontsize=8)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    _save(fig, path)


# (reliability table, ECE, label) of one set of probabilities
Reliability = tuple[dict[str, np.ndarray], float, str]
RELIABILITY_COLORS = ("tab:gray", "tab:blue")


def reliability_diagrams(panels: Sequence[Reliability], path: Path, title: str) -> None:
    """Accuracy per confidence bin against the diagonal of perfect calibration, for each
    set of probabilities side by side (e.g. before and after calibration)."""
    fig = Figure(figsize=(5.5 * len(panels), 6))
    axes = fig.subplots(
        2, len(panels), sharex=True, sharey="row", height_ratios=[3, 1], squeeze=False
    )
    for column, (table, ece, label) in enumerate(panels):
        ax, ax_count = axes[0, column], axes[1, column]
        bins = len(table["count"])
        edges = np.linspace(0, 1, bins + 1)
        centers = (edges[:-1] + edges[1:]) / 2
        filled = table["count"] > 0
        color = RELIABILITY_COLORS[column % len(RELIABILITY_COLORS)] if len(panels) > 1 else None
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
        ax.bar(
            centers[filled],
            table["accuracy"][filled],
            width=1 / bins,
            edgecolor="black",
            alpha=0.7,
            color=color,
            label="accuracy",
        )
        ax.plot(
            centers[filled],
            table["confidence"][filled],
            "o",
            color="red",
            ms=4,
            label="mean confidence",
        )
        ax.set_ylabel("accuracy")
        heading = title if len(panels) == 1 else f"{title}, {label}"
        ax.set_title(f"{heading} (ECE {ece:.4f})")
        ax.legend(loc="upper left")
        ax_count.bar(centers, table["count"], width=1 / bins, color="gray")
        ax_count.set_yscale("log")
        # The log scale's own labels as plain numbers (1000, not TeX's 10^3, whose parser
        # costs every evaluate run a third of a second to build); minor ticks labelled
        # where the scale would label them (a range within about a decade).
        ax_count.yaxis.set_major_formatter(LogFormatter())
        ax_count.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        ax_count.set_xlabel("confidence")
        ax_count.set_ylabel("samples")
    _save(fig, path)


# (label, coverage (K,), accuracy (K,), area under the curve)
CoverageCurve = tuple[str, np.ndarray, np.ndarray, float]
MAX_CURVE_POINTS = 200  # the PNG cannot show more


def coverage_plot(curves: Sequence[CoverageCurve], path: Path, title: str) -> None:
    """Accuracy of the kept samples against the share kept (the most certain first), one
    curve per uncertainty measure, its area under the curve in the legend: the higher
    the curve, the better the measure tells right from wrong predictions."""
    fig = Figure(figsize=(6.5, 4.8))
    ax = fig.add_subplot()
    for label, coverage, accuracy, area in curves:
        every = max(1, len(coverage) // MAX_CURVE_POINTS)
        points = np.r_[np.arange(0, len(coverage), every), len(coverage) - 1]
        ax.plot(coverage[points], accuracy[points], lw=1.6, label=f"{label} (AUC {area:.4f})")
    ax.set_xlim(0, 1)
    ax.set_xlabel("coverage (share of samples kept, most certain first)")
    ax.set_ylabel("accuracy on kept samples")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    _save(fig, path)


def image_grid(images: np.ndarray, captions: Sequence[str], path: Path, title: str) -> None:
    """Images (K, H, W) uint8 in a grid with one caption each (an empty K shows a note)."""
    count = len(images)
    columns = min(8, max(count, 1))
    rows = max(1, -(-count // columns))
    fig = Figure(figsize=(1.6 * columns, 1.9 * rows + 0.5))
    fig.suptitle(title)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    if count == 0:
        axes[0].text(0.5, 0.5, "no errors", ha="center", va="center")
    for ax, image, caption in zip(axes, images, captions, strict=False):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(caption, fontsize=7)
    _save(fig, path)
