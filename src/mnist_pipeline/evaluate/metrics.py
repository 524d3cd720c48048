"""Classification metrics, calibration and Monte-Carlo dropout uncertainty.

Everything here takes tensors and returns numbers or tensors; files are the
stage script's business. Shapes: probs (N, C) float, labels (N,) int64.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from mnist_pipeline.model.networks import has_dropout

COVERAGE = 0.9  # keep the 90% most confident predictions for "accuracy at coverage"


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, batch_size: int, hflip: bool = False
) -> torch.Tensor:
    """Logits (N, C) float32 of the model in its current mode on images (N, H, W), computed
    in batches. With `hflip` (test-time flip), the log of the mean of each image's and its
    mirror image's probabilities: logits whose softmax is that mean."""
    logits = torch.cat(
        [
            model(images[start : start + batch_size]).float()
            for start in range(0, len(images), batch_size)
        ]
    )
    if not hflip:
        return logits
    mirrored = predict_logits(model, images.flip(-1), batch_size)
    return torch.logaddexp(logits.log_softmax(dim=1), mirrored.log_softmax(dim=1)) - math.log(2)


def confusion_matrix(
    labels: torch.Tensor, predicted: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Counts (C, C): row = actual class, column = predicted class."""
    flat = labels * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_scores(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Precision, recall, F1 and support per class (C,); 0 where undefined (no predictions)."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    predicted = confusion.sum(dim=0)
    actual = confusion.sum(dim=1)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp(min=1), 0.0)
    recall = torch.where(actual > 0, true_positive / actual.clamp(min=1), 0.0)
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp(min=1e-12), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual.long()}


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - confidence| * bin share."""
    table = reliability_table(probs, labels, bins)
    gaps = (table["accuracy"] - table["confidence"]).abs()
    return float((gaps * table["count"]).sum() / len(labels))


def reliability_table(
    probs: torch.Tensor, labels: torch.Tensor, bins: int
) -> dict[str, torch.Tensor]:
    """Per confidence bin (bins,): sample count, mean confidence, accuracy (0 when empty)."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    # Bin b holds confidences in (b/bins, (b+1)/bins]; confidence 0 cannot occur for softmax.
    index = (confidence.double() * bins).ceil().long().clamp(1, bins) - 1
    count = torch.bincount(index, minlength=bins).double()
    confidence_sum = torch.bincount(index, weights=confidence.double(), minlength=bins)
    correct_sum = torch.bincount(index, weights=correct, minlength=bins)
    safe = count.clamp(min=1)
    return {"count": count, "confidence": confidence_sum / safe, "accuracy": correct_sum / safe}


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, bins: int
) -> dict[str, float]:
    """Loss (the NLL: cross-entropy without label smoothing), accuracy, macro F1, top-2
    accuracy and calibration (ECE, Brier)."""
    num_classes = logits.shape[1]
    probs = logits.softmax(dim=1)
    predicted = probs.argmax(dim=1)
    nll = F.cross_entropy(logits, labels).item()
    one_hot = F.one_hot(labels, num_classes).to(probs.dtype)
    scores = per_class_scores(confusion_matrix(labels, predicted, num_classes))
    top2 = logits.topk(min(2, num_classes), dim=1).indices
    return {
        "loss": nll,
        "accuracy": (predicted == labels).double().mean().item(),
        "macro_f1": scores["f1"].mean().item(),
        "top2_accuracy": (top2 == labels[:, None]).any(dim=1).double().mean().item(),
        "ece": expected_calibration_error(probs, labels, bins),
        "brier": ((probs - one_hot) ** 2).sum(dim=1).mean().item(),
    }


# Temperature scaling: T in [MIN_TEMPERATURE, MAX_TEMPERATURE], found by a golden-section
# search over log T; TEMPERATURE_STEPS shrink the bracket (log 400 wide) to ~1e-15.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0
TEMPERATURE_STEPS = 80


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimizing the NLL of softmax(logits / T) on (logits (N, C),
    labels (N,)): temperature scaling (Guo et al., 2017), which changes the confidence of
    every prediction and none of them. The NLL is convex in 1/T, so unimodal in log T: a
    golden-section search finds its minimum; in float64, the same T on every run."""
    logits64, labels = logits.double().cpu(), labels.cpu()

    def nll(log_t: float) -> float:
        return F.cross_entropy(logits64 / math.exp(log_t), labels).item()

    shrink = (math.sqrt(5) - 1) / 2
    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    left, right = high - shrink * (high - low), low + shrink * (high - low)
    nll_left, nll_right = nll(left), nll(right)
    for _ in range(TEMPERATURE_STEPS):
        if nll_left <= nll_right:  # the minimum is left of `right`
            high, right, nll_right = right, left, nll_left
            left = high - shrink * (high - low)
            nll_left = nll(left)
        else:
            low, left, nll_left = left, right, nll_right
            right = low + shrink * (high - low)
            nll_right = nll(right)
    return math.exp((low + high) / 2)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of each row of probs (N, C) -> (N,)."""
    return -(probs * probs.clamp(min=1e-12).log()).sum(dim=1)


def enable_mc_dropout(model: nn.Module) -> None:
    """Eval mode everywhere (batch norm uses running stats) except dropout layers."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train()


def mc_dropout_probs(
    model: nn.Module, images: torch.Tensor, samples: int, batch_size: int, seed: int
) -> torch.Tensor | None:
    """Probabilities (T, N, C) of T stochastic passes, or None if the model has no dropout."""
    if not has_dropout(model):
        return None
    enable_mc_dropout(model)
    torch.manual_seed(seed)
    try:
        return torch.stack(
            [predict_logits(model, images, batch_size).softmax(dim=1) for _ in range(samples)]
        )
    finally:
        model.eval()


def mc_dropout_metrics(mc_probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean-prediction accuracy, predictive entropy, mutual information (the part of the
    uncertainty that disagreement between dropout masks explains), accuracy at 90% coverage."""
    mean_probs = mc_probs.mean(dim=0)
    predictive_entropy = entropy(mean_probs)
    mutual_info = mutual_information(mc_probs)
    correct = mean_probs.argmax(dim=1) == labels
    return {
        "mc_accuracy": correct.double().mean().item(),
        "mc_entropy_mean": predictive_entropy.mean().item(),
        "mc_mutual_info_mean": mutual_info.mean().item(),
        "mc_accuracy_at_90_coverage": accuracy_at_coverage(correct, predictive_entropy, COVERAGE),
    }


def mutual_information(mc_probs: torch.Tensor) -> torch.Tensor:
    """Per sample (N,): predictive entropy minus the mean entropy of the passes, the
    part of the uncertainty that disagreement between dropout masks explains (>= 0)."""
    expected_entropy = torch.stack([entropy(p) for p in mc_probs]).mean(dim=0)
    return (entropy(mc_probs.mean(dim=0)) - expected_entropy).clamp(min=0)


def accuracy_at_coverage(
    correct: torch.Tensor, uncertainty: torch.Tensor, coverage: float
) -> float:
    """Accuracy on the `coverage` share of samples with the lowest uncertainty."""
    keep = max(1, math.ceil(coverage * len(correct)))
    order = torch.sort(uncertainty, stable=True).indices[:keep]
    return correct[order].double().mean().item()


def accuracy_coverage(
    correct: torch.Tensor, uncertainty: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage k/N and the accuracy of the k least uncertain samples, for k = 1..N
    (ties kept in input order). Its mean over k is the area under the curve."""
    order = torch.sort(uncertainty, stable=True).indices
    kept = torch.arange(1, len(correct) + 1, dtype=torch.float64)
    accuracy = correct[order].double().cumsum(dim=0) / kept
    return kept / len(correct), accuracy


def most_confident_errors(probs: torch.Tensor, labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` most confident wrong predictions, most confident first."""
    confidence, predicted = probs.max(dim=1)
    wrong = (predicted != labels).nonzero().squeeze(1)
    order = torch.sort(confidence[wrong], descending=True, stable=True).indices
    return wrong[order[:count]]
