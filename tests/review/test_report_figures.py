"""The report's side-by-side PNGs: written when some side has data, skipped otherwise,
and an older log layout counts as no data (not an error)."""

from pathlib import Path

from mnist_pipeline.review.report_figures import (
    confusion_from_predictions,
    curve,
    per_class_f1,
    render_all,
    training_curves,
)

LOSS = "epoch\ttrain\tvalid\n1\t0.9\t0.8\n2\t0.5\t0.6\n"
OLD_DVCLIVE_LOSS = "step\tloss\n0\t0.9\n1\t0.5\n"  # metrics/train/plots/metrics/train/loss.tsv
PREDICTIONS = "label,predicted,confidence\n0,0,0.9000\n0,1,0.6000\n1,1,0.8000\n2,1,0.5000\n"
PER_CLASS = (
    "class,precision,recall,f1,support\nzero,1,0.5,0.667,2\none,0.5,1,0.667,1\ntwo,0,0,0,1\n"
)
LABELS = ("main", "workspace")


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curve_reads_the_training_log_and_ignores_an_older_layout():
    epochs, valid = curve(LOSS, "valid")
    assert epochs.tolist() == [1, 2] and valid.tolist() == [0.8, 0.6]
    assert curve(OLD_DVCLIVE_LOSS, "valid") is None and curve(None, "train") is None


def test_confusion_from_predictions_counts_label_rows():
    assert confusion_from_predictions(PREDICTIONS, 3).tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_each_figure_is_written_only_when_a_side_has_data(tmp_path):
    path = tmp_path / "curves.png"
    assert training_curves({"loss": (OLD_DVCLIVE_LOSS, None)}, LABELS, path) is False
    assert not path.exists()
    assert training_curves({"loss": (None, LOSS), "accuracy": (None, LOSS)}, LABELS, path)
    assert _is_png(path)
    assert per_class_f1((None, None), LABELS, tmp_path / "f1.png") is False
    assert per_class_f1((PER_CLASS, PER_CLASS), LABELS, tmp_path / "f1.png")


def test_render_all_names_what_it_wrote(tmp_path):
    written = render_all(
        tmp_path / "report",
        LABELS,
        {"loss": (LOSS, LOSS)},
        (None, PREDICTIONS),  # the base predates predictions_test.csv
        (None, PER_CLASS),
    )
    assert [title for title, _ in written] == [
        "training curves",
        "test confusion matrices",
        "per-class F1 (test)",
    ]
    assert all(_is_png(path) for _, path in written)
    assert render_all(tmp_path / "none", LABELS, {}, (None, None), (None, None)) == []
    assert not (tmp_path / "none").exists()
