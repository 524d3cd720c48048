"""The sweep report's slices: readable tick labels on log ranges (matplotlib labels every
minor tick of a range within about a decade, and they overlapped)."""

import itertools

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from mnist_pipeline.sweep.figures import slices_figure
from mnist_pipeline.sweep.spec import Dimension

MIN_GAP_PX = 4  # between two tick labels: a gap the eye sees


def _visible_labels(axis):
    low, high = sorted(axis.get_view_interval())
    ticks = [*axis.get_major_ticks(), *axis.get_minor_ticks()]
    return [
        tick.label1
        for tick in ticks
        if tick.label1.get_visible() and tick.label1.get_text() and low <= tick.get_loc() <= high
    ]


@pytest.mark.parametrize(
    ("low", "high"),
    [(0.002, 0.015), (0.003, 0.08), (0.001, 0.1), (1e-5, 1e-1), (0.3, 0.9)],
)
def test_log_range_labels_are_plain_and_never_overlap(low, high):
    dimension = Dimension("train.lr", "float", low=low, high=high, log=True)
    values = [low * (high / low) ** (i / 15) for i in range(16)]
    points = [({"train.lr": value}, 0.9 + i / 1000) for i, value in enumerate(values)]
    figure = slices_figure([dimension], points, "valid.accuracy")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    axis = figure.axes[0].xaxis
    labels = _visible_labels(axis)
    assert len(labels) >= 2  # a log axis says where it is
    for label in labels:  # plain numbers, not 2x10^-3
        assert float(label.get_text()) > 0, label.get_text()
    boxes = sorted(
        (label.get_window_extent(canvas.get_renderer()) for label in labels), key=lambda b: b.x0
    )
    for left, right in itertools.pairwise(boxes):
        assert left.x1 + MIN_GAP_PX <= right.x0, "tick labels touch or overlap"
