"""The sweep report's figures (PNG, matplotlib's Agg backend): the optimization history,
the param importances, one slice per param (objective against its value), and the
confirmation (each candidate's search score beside its seed mean ± std). matplotlib's
object API, as the other figures: no pyplot, no backend switched at import, no global
state."""

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from mnist_pipeline.review.report_figures import plain
from mnist_pipeline.sweep.spec import Dimension

DPI = 100
MAX_SLICES_PER_ROW = 3
MAX_LABELLED_DECADES = 1.5  # a log axis over more shows its powers of ten only


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def history(
    numbers: Sequence[int],
    values: Sequence[float | None],
    maximize: bool,
    metric: str,
    path: Path,
) -> None:
    """Each trial's objective by trial number (failed trials as x at the bottom) and
    the best so far."""
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    done = [(n, v) for n, v in zip(numbers, values, strict=True) if v is not None]
    failed = [n for n, v in zip(numbers, values, strict=True) if v is None]
    if done:
        xs, ys = zip(*done, strict=True)
        ax.scatter(xs, ys, s=18, color="tab:blue", label="trial")
        best, bests = None, []
        for y in ys:
            best = y if best is None or (y > best if maximize else y < best) else best
            bests.append(best)
        ax.step(xs, bests, where="post", color="tab:orange", label="best so far")
        if failed:
            low = min(ys) if maximize else max(ys)
            ax.scatter(failed, [low] * len(failed), marker="x", color="tab:red", label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel(plain(metric))
    ax.set_title("Optimization history")
    ax.grid(alpha=0.3)
    if done:
        ax.legend(loc="lower right" if maximize else "upper right", fontsize=8)
    _save(fig, path)


def importances(values: Mapping[str, float], path: Path) -> None:
    """Horizontal bars, the most important param on top."""
    ranked = sorted(values.items(), key=lambda item: item[1])
    fig = Figure(figsize=(6, 0.5 * len(ranked) + 1.2))
    ax = fig.add_subplot()
    ax.barh([plain(k) for k, _ in ranked], [v for _, v in ranked], color="tab:blue")
    ax.set_xlabel("importance (PED-ANOVA, normalized to sum to 1)")
    ax.set_title("Param importances")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def slices(
    dimensions: Sequence[Dimension],
    points: Sequence[tuple[Mapping[str, Any], float]],
    metric: str,
    path: Path,
) -> None:
    """`slices_figure` written to `path`."""
    _save(slices_figure(dimensions, points, metric), path)


def slices_figure(
    dimensions: Sequence[Dimension],
    points: Sequence[tuple[Mapping[str, Any], float]],
    metric: str,
) -> Figure:
    """One panel per param: each complete trial's objective against the param's value
    (choices on a categorical axis, log ranges on a log axis)."""
    count = len(dimensions)
    cols = min(count, MAX_SLICES_PER_ROW)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(4 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for index, dimension in enumerate(dimensions):
        ax = axes[index // cols][index % cols]
        ys = [value for _, value in points]
        xs: list[float]
        if dimension.kind == "choice":
            labels = [plain(str(c), 20) for c in dimension.choices]
            position = {str(c): i for i, c in enumerate(dimension.choices)}
            xs = [float(position.get(str(params[dimension.key]), -1)) for params, _ in points]
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
        else:
            xs = [float(params[dimension.key]) for params, _ in points]
            if dimension.log:
                ax.set_xscale("log")
                # matplotlib labels every minor tick (2x10^-3, 3x10^-3, ...) of a range
                # within about a decade, and they overlap in a 4-inch panel: plain
                # numbers at the powers of ten, and at 2 and 5 of each decade only
                # where the range spans at most 1.5 decades.
                plain_number = FuncFormatter(lambda value, _: f"{value:g}")
                ax.xaxis.set_major_formatter(plain_number)
                if math.log10(dimension.high / dimension.low) <= MAX_LABELLED_DECADES:
                    ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
                    ax.xaxis.set_minor_formatter(plain_number)
                else:
                    ax.xaxis.set_minor_formatter(NullFormatter())
        ax.scatter(xs, ys, s=16, c=range(len(xs)), cmap="viridis")
        ax.set_xlabel(plain(dimension.key))
        ax.set_ylabel(plain(metric))
        ax.grid(alpha=0.3)
    for index in range(count, rows * cols):
        axes[index // cols][index % cols].axis("off")
    fig.suptitle("Slices (colour: trial order, dark first)")
    return fig


def confirmation(
    labels: Sequence[str],
    search_values: Sequence[float | None],
    means: Sequence[float],
    stds: Sequence[float],
    metric: str,
    path: Path,
) -> None:
    """Per candidate: its single search run (the maximum of many noisy draws) beside
    its mean ± std over fresh seeds; the gap is the optimism of the maximum."""
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    xs = list(range(len(labels)))
    ax.errorbar(
        xs,
        means,
        yerr=[0 if math.isnan(s) else s for s in stds],
        fmt="o",
        color="tab:blue",
        capsize=4,
        label="mean ± std over fresh seeds",
    )
    searched = [(x, v) for x, v in zip(xs, search_values, strict=True) if v is not None]
    if searched:
        sx, sy = zip(*searched, strict=True)
        ax.scatter(sx, sy, marker="D", color="tab:orange", label="its search run", zorder=3)
    ax.set_xticks(xs, [plain(label, 20) for label in labels])
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_ylabel(plain(metric))
    ax.set_title("Confirmation: search score vs fresh seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
