"""The metric formulas of the evaluation stage against scikit-learn as an outside reference.

Random logits (several seeds, N=500, C=10) and edge cases: a class never predicted, a class
absent from both labels and predictions, saturated softmax rows (confidence exactly 1.0), two
and three classes, float32 logits. ECE has no scikit-learn counterpart; it is checked against a
plain numpy re-implementation of the same binning: bin b holds confidences in (b/bins, (b+1)/bins].
"""

import inspect
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

from mnist_pipeline.evaluate.metrics import (
    classification_metrics,
    confusion_matrix,
    per_class_scores,
    reliability_table,
)


@dataclass(frozen=True)
class Case:
    """Logits (N, C) and labels (N,) as numpy; `rel` is the tolerance their dtype allows."""

    logits: np.ndarray
    labels: np.ndarray
    rel: float = 1e-10

    @property
    def num_classes(self) -> int:
        return self.logits.shape[1]

    @property
    def probs(self) -> np.ndarray:
        """Softmax in float64 numpy, computed apart from the code under test."""
        shifted = self.logits.astype(np.float64) - self.logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(axis=1)


def random_case(seed: int, n_images: int = 500, num_classes: int = 10) -> Case:
    """Noisy logits with a push towards the true class: roughly 70-80% accuracy."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n_images)
    logits = rng.normal(0.0, 2.0, (n_images, num_classes))
    logits[np.arange(n_images), labels] += 2.5
    return Case(logits, labels)


def never_predicted_case() -> Case:
    """Class 9 occurs in the labels but no row ever predicts it: precision 0/0 -> 0."""
    case = random_case(10)
    logits = case.logits.copy()
    # Not more: scikit-learn's log_loss clips probabilities to float eps (~2e-16), which would
    # make the reference, not the code, wrong on the class-9 rows.
    logits[:, 9] -= 15.0
    return Case(logits, case.labels)


def absent_class_case() -> Case:
    """Class 8 is neither a label nor a prediction: its F1 is 0/0 -> 0 and, as with
    scikit-learn given labels=range(C), it counts as 0 in the macro mean."""
    case = random_case(11)
    labels = np.where(case.labels == 8, 3, case.labels)
    logits = case.logits.copy()
    logits[:, 8] -= 50.0
    return Case(logits, labels)


def saturated_case() -> Case:
    """A fifth of the rows have a logit 60 above the rest on the true class: their softmax
    confidence rounds to exactly 1.0, the top edge of the last bin."""
    case = random_case(12)
    logits = case.logits.copy()
    rows = np.arange(0, len(logits), 5)
    logits[rows, case.labels[rows]] = logits[rows].max(axis=1) + 60.0
    return Case(logits, case.labels)


def float32_case() -> Case:
    """The dtype the models produce; the metrics come out with float32 rounding."""
    case = random_case(13)
    return Case(case.logits.astype(np.float32), case.labels, rel=1e-5)


CASES = {
    **{f"random-seed{seed}": random_case(seed) for seed in range(5)},
    "never-predicted": never_predicted_case(),
    "absent-class": absent_class_case(),
    "saturated": saturated_case(),
    "two-classes": random_case(20, n_images=300, num_classes=2),
    "three-classes-tiny": random_case(21, n_images=9, num_classes=3),
    "float32": float32_case(),
}


@pytest.fixture(params=list(CASES.values()), ids=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    value: Case = request.param
    return value


def test_the_edge_cases_are_what_they_claim() -> None:
    assert 9 in CASES["never-predicted"].labels
    assert 9 not in CASES["never-predicted"].predicted
    assert CASES["never-predicted"].probs.min() > 1e-12  # above log_loss's clipping
    assert 8 not in CASES["absent-class"].labels
    assert 8 not in CASES["absent-class"].predicted
    assert (CASES["saturated"].probs.max(axis=1) == 1.0).sum() >= 50


def test_confusion_matrix_matches_sklearn(case: Case) -> None:
    confusion = confusion_matrix(
        torch.from_numpy(case.labels), torch.from_numpy(case.predicted), case.num_classes
    )
    expected = sklearn_confusion_matrix(case.labels, case.predicted, labels=range(case.num_classes))
    np.testing.assert_array_equal(confusion.numpy(), expected)


def test_per_class_scores_match_sklearn(case: Case) -> None:
    confusion = confusion_matrix(
        torch.from_numpy(case.labels), torch.from_numpy(case.predicted), case.num_classes
    )
    scores = per_class_scores(confusion)
    precision, recall, f1, support = precision_recall_fscore_support(
        case.labels, case.predicted, labels=range(case.num_classes), zero_division=0
    )
    np.testing.assert_allclose(scores["precision"].numpy(), precision, rtol=1e-12)
    np.testing.assert_allclose(scores["recall"].numpy(), recall, rtol=1e-12)
    np.testing.assert_allclose(scores["f1"].numpy(), f1, rtol=1e-12)
    np.testing.assert_array_equal(scores["support"].numpy(), support)


def reference_brier(labels: np.ndarray, probs: np.ndarray, num_classes: int) -> float:
    """Mean over rows of sum over classes of (p - one-hot)^2: scikit-learn's multiclass Brier
    (scale_by_half=False keeps the [0, 2] range, from 1.7 on), numpy before that."""
    if "scale_by_half" in inspect.signature(brier_score_loss).parameters:
        return float(
            brier_score_loss(labels, probs, labels=range(num_classes), scale_by_half=False)
        )
    one_hot = np.eye(num_classes)[labels]
    return float(((probs - one_hot) ** 2).sum(axis=1).mean())


def reference_reliability(
    probs: np.ndarray, labels: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per bin count, mean confidence, accuracy (0 when empty), and ECE, bin by bin with
    interval tests instead of the code's ceil(confidence * bins) index."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    count = np.zeros(bins)
    mean_confidence = np.zeros(bins)
    accuracy = np.zeros(bins)
    for b in range(bins):
        in_bin = (confidence > b / bins) & (confidence <= (b + 1) / bins)
        count[b] = in_bin.sum()
        if count[b]:
            mean_confidence[b] = confidence[in_bin].mean()
            accuracy[b] = correct[in_bin].mean()
    assert count.sum() == len(labels)  # every softmax confidence lies in (0, 1]
    ece = float((count * np.abs(accuracy - mean_confidence)).sum() / len(labels))
    return count, mean_confidence, accuracy, ece


@pytest.mark.parametrize("bins", [10, 15])
def test_classification_metrics_match_sklearn(case: Case, bins: int) -> None:
    metrics = classification_metrics(
        torch.from_numpy(case.logits), torch.from_numpy(case.labels), bins
    )
    labels, probs, predicted = case.labels, case.probs, case.predicted
    class_range = range(case.num_classes)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted), rel=1e-12)
    macro_f1 = f1_score(labels, predicted, average="macro", labels=class_range, zero_division=0)
    assert metrics["macro_f1"] == pytest.approx(macro_f1, rel=1e-12)
    if case.num_classes > 2:
        top2 = top_k_accuracy_score(labels, case.logits, k=2, labels=class_range)
        assert metrics["top2_accuracy"] == pytest.approx(top2, rel=1e-12)
    else:  # scikit-learn warns that k >= C is trivially perfect
        assert metrics["top2_accuracy"] == 1.0
    nll = log_loss(labels, probs, labels=class_range)
    assert metrics["loss"] == pytest.approx(nll, rel=case.rel)  # the loss is the NLL
    assert "nll" not in metrics  # once is enough
    brier = reference_brier(labels, probs, case.num_classes)
    assert metrics["brier"] == pytest.approx(brier, rel=case.rel)
    ece = reference_reliability(probs, labels, bins)[3]
    assert metrics["ece"] == pytest.approx(ece, rel=case.rel, abs=1e-12)


@pytest.mark.parametrize("bins", [10, 15])
def test_reliability_table_matches_numpy_binning(case: Case, bins: int) -> None:
    # Random confidences never sit on a bin edge (k/bins) up to rounding, so both ways of
    # binning must agree exactly; the saturated case puts many at the edge 1.0.
    table = reliability_table(torch.from_numpy(case.probs), torch.from_numpy(case.labels), bins)
    count, mean_confidence, accuracy, _ = reference_reliability(case.probs, case.labels, bins)
    np.testing.assert_array_equal(table["count"].numpy(), count)
    np.testing.assert_allclose(table["confidence"].numpy(), mean_confidence, rtol=1e-12)
    np.testing.assert_allclose(table["accuracy"].numpy(), accuracy, rtol=1e-12)


def test_reliability_table_puts_edge_confidences_in_the_lower_bin() -> None:
    # Dyadic probabilities, so confidence * bins is exact: 5/8 and 6/8 sit on bin edges and
    # belong to the bin they close, (4/8, 5/8] and (5/8, 6/8]; 1.0 closes the last bin.
    probs = np.array([[0.625, 0.375], [0.25, 0.75], [0.75, 0.25], [1.0, 0.0], [0.5625, 0.4375]])
    labels = np.array([0, 0, 0, 0, 1])
    table = reliability_table(torch.from_numpy(probs), torch.from_numpy(labels), 8)
    count, mean_confidence, accuracy, _ = reference_reliability(probs, labels, 8)
    np.testing.assert_array_equal(count, [0, 0, 0, 0, 2, 2, 0, 1])  # 0.5625 and 0.625 in bin 4
    np.testing.assert_array_equal(table["count"].numpy(), count)
    np.testing.assert_allclose(table["confidence"].numpy(), mean_confidence, rtol=1e-12)
    np.testing.assert_allclose(table["accuracy"].numpy(), accuracy, rtol=1e-12)
    np.testing.assert_array_equal(accuracy, [0, 0, 0, 0, 0.5, 0.5, 0, 1])
