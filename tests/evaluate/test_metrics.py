"""Metric formulas against small hand-computed cases, and MC dropout behaviour."""

import math

import pytest
import torch
from PIL import Image

from mnist_pipeline.evaluate import figures, metrics
from mnist_pipeline.evaluate.run import confusion_rows, evaluate_splits
from mnist_pipeline.model.networks import InputSpec, build_model
from mnist_pipeline.testing.configs import evaluate_config, model_config
from mnist_pipeline.testing.synthetic import make_images

LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
PREDICTED = torch.tensor([0, 1, 1, 1, 2, 0])


def test_confusion_counts():
    confusion = metrics.confusion_matrix(LABELS, PREDICTED, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_per_class_precision_recall_f1():
    scores = metrics.per_class_scores(metrics.confusion_matrix(LABELS, PREDICTED, 3))
    # tp / predicted / actual: class 0: 1/2/2; class 1: 2/3/2; class 2: 1/1/2
    assert scores["precision"].tolist() == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert scores["recall"].tolist() == pytest.approx([1 / 2, 1.0, 1 / 2])
    assert scores["f1"].tolist() == pytest.approx([0.5, 0.8, 2 / 3])
    assert scores["support"].tolist() == [2, 2, 2]


def test_a_class_never_predicted_scores_zero_not_nan():
    scores = metrics.per_class_scores(
        metrics.confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), 2)
    )
    assert scores["precision"].tolist() == [0.5, 0.0]
    assert scores["f1"].tolist() == pytest.approx([2 / 3, 0.0])


def test_classification_metrics_by_hand():
    # Confidences sit away from bin edges, where float rounding would pick the bin.
    probs = torch.tensor(
        [[0.72, 0.18, 0.1], [0.07, 0.63, 0.3], [0.2, 0.25, 0.55], [0.55, 0.35, 0.1]],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 2, 2, 1])
    values = metrics.classification_metrics(probs.log(), labels, bins=10)
    assert values["accuracy"] == 0.5
    assert values["top2_accuracy"] == 1.0
    nll = -(math.log(0.72) + math.log(0.3) + math.log(0.55) + math.log(0.35)) / 4
    assert values["loss"] == pytest.approx(nll) and "nll" not in values
    brier = (
        (0.28**2 + 0.18**2 + 0.1**2)
        + (0.07**2 + 0.63**2 + 0.7**2)
        + (0.2**2 + 0.25**2 + 0.45**2)
        + (0.55**2 + 0.65**2 + 0.1**2)
    ) / 4
    assert values["brier"] == pytest.approx(brier)
    # confidences .72 (right), .63 (wrong), .55 (right), .55 (wrong); bins of width 0.1:
    # (0.7,0.8]: acc 1 conf .72; (0.6,0.7]: acc 0 conf .63; (0.5,0.6]: acc .5 conf .55
    ece = (abs(1 - 0.72) + abs(0 - 0.63) + 2 * abs(0.5 - 0.55)) / 4
    assert values["ece"] == pytest.approx(ece)
    # predicted [0, 1, 2, 0]: class 0 p=1/2 r=1 f=2/3; class 1 f=0; class 2 p=1 r=1/2 f=2/3
    assert values["macro_f1"] == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)


def test_perfectly_calibrated_predictions_have_zero_ece():
    probs = torch.tensor([[1.0, 0.0]] * 4)
    assert metrics.expected_calibration_error(probs, torch.zeros(4, dtype=torch.long), 15) == 0.0


def test_entropy_and_accuracy_at_coverage():
    uniform = torch.full((1, 4), 0.25)
    assert metrics.entropy(uniform).item() == pytest.approx(math.log(4))
    correct = torch.tensor([True, True, False, False])
    uncertainty = torch.tensor([0.1, 0.2, 0.9, 0.3])
    assert metrics.accuracy_at_coverage(correct, uncertainty, 0.5) == 1.0
    assert metrics.accuracy_at_coverage(correct, uncertainty, 0.75) == pytest.approx(2 / 3)
    coverage, accuracy = metrics.accuracy_coverage(correct, uncertainty)
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert accuracy.tolist() == pytest.approx([1.0, 1.0, 2 / 3, 0.5])  # 0.1, 0.2, 0.3, 0.9


def test_most_confident_errors_come_first():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.95, 0.05]])
    labels = torch.tensor([1, 1, 0, 1])
    assert metrics.most_confident_errors(probs, labels, 2).tolist() == [3, 0]


SPEC = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.2, pixel_std=0.3)
IMAGES = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8)


def test_mc_dropout_without_dropout_reports_nothing():
    model = build_model(model_config(hidden_sizes=(16,), dropout=0.0), SPEC)
    assert metrics.mc_dropout_probs(model, IMAGES, samples=5, batch_size=16, seed=0) is None


def test_mc_dropout_with_dropout_has_spread_and_leaves_eval_mode():
    torch.manual_seed(0)
    model = build_model(
        model_config(name="cnn", conv_channels=(4,), hidden_sizes=(16,), dropout=0.5), SPEC
    ).eval()
    mc = metrics.mc_dropout_probs(model, IMAGES, samples=8, batch_size=16, seed=0)
    assert mc.shape == (8, 50, 10)
    assert mc.std(dim=0).max() > 1e-3
    assert not model.training and not any(m.training for m in model.modules())
    values = metrics.mc_dropout_metrics(mc, torch.zeros(50, dtype=torch.long))
    assert values["mc_mutual_info_mean"] > 0
    assert values["mc_entropy_mean"] >= values["mc_mutual_info_mean"]
    again = metrics.mc_dropout_probs(model, IMAGES, samples=8, batch_size=16, seed=0)
    assert torch.equal(mc, again)  # seeded: the same masks each time


def test_mc_dropout_keeps_batch_norm_in_eval_mode():
    model = build_model(
        model_config(name="cnn", conv_channels=(4,), hidden_sizes=(), dropout=0.5), SPEC
    )
    metrics.enable_mc_dropout(model)
    kinds = {type(m).__name__: m.training for m in model.modules() if m is not model}
    assert kinds["Dropout"] is True and kinds["BatchNorm2d"] is False


def test_confusion_rows_name_the_classes_in_class_order():
    confusion = torch.tensor([[5, 1, 0], [0, 7, 2], [1, 0, 9]])
    rows = confusion_rows(confusion, ["T-shirt/top", "Trouser", "Bag"])
    assert rows[:2] == [("0 T-shirt/top", "0 T-shirt/top", 5), ("0 T-shirt/top", "1 Trouser", 1)]
    assert rows[-1] == ("2 Bag", "2 Bag", 9) and len(rows) == 9
    assert sorted(rows) == rows  # text order is class order: DVC's plot sorts labels so
    digits = confusion_rows(torch.eye(11, dtype=torch.long), [str(d) for d in range(11)])
    assert {row[0] for row in digits} == {str(d) for d in range(11)}  # digits name themselves
    wide = confusion_rows(torch.eye(11, dtype=torch.long), [f"c{d}" for d in range(11)])
    assert wide[0][0] == "00 c0" and sorted(wide) == wide  # zero-padded past 10 classes


def _drawn(temperature: float, rows: int = 4000, seed: int = 0):
    """Logits whose labels are drawn from softmax(logits / temperature): the temperature
    that calibrates them is `temperature` (up to sampling noise)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, 10, generator=generator) * 4
    labels = torch.multinomial((logits / temperature).softmax(dim=1), 1, generator=generator)
    return logits, labels.flatten()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_fit_temperature_finds_the_temperature_the_labels_were_drawn_with(temperature):
    logits, labels = _drawn(temperature)
    fitted = metrics.fit_temperature(logits, labels)
    assert abs(math.log(fitted / temperature)) < 0.08
    assert fitted == metrics.fit_temperature(logits, labels)  # the same on every run
    nll = [
        torch.nn.functional.cross_entropy(logits.double() / t, labels).item()
        for t in (fitted * 0.9, fitted, fitted * 1.1)
    ]
    assert nll[1] < nll[0] and nll[1] < nll[2]  # a minimum, not a bound


def test_fit_temperature_stays_within_its_bounds():
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])  # separable: NLL falls as T -> 0
    fitted = metrics.fit_temperature(logits, torch.tensor([0, 1]))
    assert metrics.MIN_TEMPERATURE <= fitted <= metrics.MIN_TEMPERATURE * 1.001
    flipped = metrics.fit_temperature(logits, torch.tensor([1, 0]))  # all wrong: T large
    assert metrics.MAX_TEMPERATURE * 0.999 <= flipped <= metrics.MAX_TEMPERATURE


def _tiny_model(dropout: float = 0.0):
    torch.manual_seed(0)
    spec = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.2, pixel_std=0.3)
    return build_model(model_config(hidden_sizes=(16,), dropout=dropout), spec).eval()


def test_calibration_fits_on_valid_only_and_keeps_every_prediction():
    """The temperature comes from the valid split (the test labels, shuffled, change
    nothing); every split's argmax and accuracy stay; the ECE and loss before are kept."""
    model = _tiny_model()
    # The untrained model's logits, scaled up: overconfident, as trained nets are.
    model[-1].weight.data *= 30
    data = {"valid": make_images(300, 1), "test": make_images(300, 2)}
    plain = evaluate_splits(model, data, evaluate_config(calibrate=False), seed=0)
    cal = evaluate_splits(model, data, evaluate_config(calibrate=True), seed=0)
    temperature = cal["valid"].metrics["temperature"]
    assert temperature > 1 and cal["test"].metrics["temperature"] == temperature
    for split in data:
        before, after = plain[split].metrics, cal[split].metrics
        assert torch.equal(cal[split].probs.argmax(1), plain[split].probs.argmax(1))
        assert after["accuracy"] == before["accuracy"]
        assert after["ece_uncalibrated"] == before["ece"]
        assert after["loss_uncalibrated"] == before["loss"]
        assert torch.equal(cal[split].uncalibrated_probs, plain[split].probs)
        assert plain[split].uncalibrated_probs is None and "temperature" not in before
    assert cal["valid"].metrics["loss"] < plain["valid"].metrics["loss"]  # what T minimizes
    images, labels = data["test"]
    shuffled = {**data, "test": (images, labels[torch.randperm(len(labels))])}
    again = evaluate_splits(model, shuffled, evaluate_config(calibrate=True), seed=0)
    assert again["test"].metrics["temperature"] == temperature


def test_the_reliability_figure_shows_before_and_after(tmp_path):

    logits, labels = _drawn(2.0, rows=500)
    panels = []
    for probs, label in ((logits.softmax(1), "before"), ((logits / 2).softmax(1), "after")):
        table = {k: v.numpy() for k, v in metrics.reliability_table(probs, labels, 10).items()}
        panels.append((table, metrics.expected_calibration_error(probs, labels, 10), label))
    figures.reliability_diagrams(panels, tmp_path / "two.png", "test: reliability")
    figures.reliability_diagrams(panels[:1], tmp_path / "one.png", "test: reliability")
    two, one = Image.open(tmp_path / "two.png"), Image.open(tmp_path / "one.png")
    assert two.height == one.height and two.width > 1.8 * one.width  # two panels
