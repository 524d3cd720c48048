"""Evaluate a model on each split and write what reviewers read and DVC diffs.

Tables (small, tracked by git: DVC's plots and the review report read them at any
revision, in any clone):
    predictions_test.csv           label,predicted,confidence per test image, labels as
                                   class indices (test only: it grows with the split): the
                                   review report and `make exps` compare two revisions image
                                   by image with it
    confusion_test.csv             actual, predicted, count for every pair of classes, by
                                   name: DVC's confusion plot of the counts
    per_class_<split>.csv          precision, recall, F1, support per class
Figures (PNGs, each a DVC-cached output rather than committed: ~60 KB each would make
every result commit ~650 KB; `dvc pull` or `dvc repro` brings them back):
    confusion_<split>.png          counts heatmap; confusion_<split>_normalized.png row shares
    reliability_<split>.png        reliability diagram
    uncertainty_<split>.png        accuracy vs coverage, one curve per uncertainty measure
    worst_<split>.png              most confidently wrong images
Metrics are one flat-ish JSON (`{split: {name: number}}`) that `dvc metrics diff` shows.
"""

import csv
import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnist_pipeline.config.params import EvaluateConfig
from mnist_pipeline.evaluate import figures, metrics
from mnist_pipeline.fileio import atomic_dir, atomic_file, write_json

PREDICTION_SPLITS = ("test",)
CONFIDENCE_DECIMALS = 4


@dataclass
class SplitResult:
    metrics: dict[str, float]
    labels: torch.Tensor  # (N,) int64
    probs: torch.Tensor  # (N, C) softmax of the deterministic (eval-mode) pass, calibrated
    mc_probs: torch.Tensor | None  # (T, N, C), None without MC dropout
    logits: torch.Tensor  # (N, C) float32 of the deterministic pass, before calibration
    # (N, C) softmax of `logits` when `probs` are calibrated (evaluate.calibrate), else None
    uncalibrated_probs: torch.Tensor | None = None


def evaluate_split(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: EvaluateConfig,
    seed: int,
    hflip: bool = False,
) -> SplitResult:
    """All metrics of one split; MC dropout ones only when enabled and the model has dropout.
    `hflip`: average each image's probabilities with its mirror image's (evaluate.tta_hflip,
    resolved for the data set); MC dropout passes see the images as they are."""
    model.eval()
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)
    logits = metrics.predict_logits(model, images, cfg.batch_size, hflip)
    values = metrics.classification_metrics(logits, labels, cfg.calibration_bins)
    mc_probs = None
    if cfg.mc_samples > 0:
        mc_probs = metrics.mc_dropout_probs(model, images, cfg.mc_samples, cfg.batch_size, seed)
        if mc_probs is not None:
            values.update(metrics.mc_dropout_metrics(mc_probs, labels))
    return SplitResult(
        values,
        labels.cpu(),
        logits.softmax(dim=1).cpu(),
        None if mc_probs is None else mc_probs.cpu(),
        logits.cpu(),
    )


def calibrated(result: SplitResult, temperature: float, bins: int) -> SplitResult:
    """`result` with its deterministic pass's probabilities softmax(logits / temperature)
    and the metrics of those (accuracy is unchanged: the argmax is); `temperature`, and
    the ECE and loss before, are added. MC dropout figures stay as they were."""
    scaled = result.logits / temperature
    values = {**result.metrics, **metrics.classification_metrics(scaled, result.labels, bins)}
    values.update(
        temperature=temperature,
        ece_uncalibrated=result.metrics["ece"],
        loss_uncalibrated=result.metrics["loss"],
    )
    return dataclasses.replace(
        result, metrics=values, probs=scaled.softmax(dim=1), uncalibrated_probs=result.probs
    )


def evaluate_splits(
    model: nn.Module,
    data: dict[str, tuple[torch.Tensor, torch.Tensor]],
    cfg: EvaluateConfig,
    seed: int,
    hflip: bool = False,
) -> dict[str, SplitResult]:
    """`evaluate_split` for each split of data {split: (images, labels)}; with
    `cfg.calibrate`, every split `calibrated` by the temperature fitted on the valid split
    (never the test split: it stays unseen)."""
    results = {
        split: evaluate_split(model, *tensors, cfg, seed, hflip) for split, tensors in data.items()
    }
    if not cfg.calibrate:
        return results
    valid = results["valid"]
    temperature = metrics.fit_temperature(valid.logits, valid.labels)
    return {
        split: calibrated(result, temperature, cfg.calibration_bins)
        for split, result in results.items()
    }


# The figures of each split ({} is the split): dvc.yaml declares each file.
FIGURES = (
    "confusion_{}",
    "confusion_{}_normalized",
    "reliability_{}",
    "uncertainty_{}",
    "worst_{}",
)


def figure_files(splits: tuple[str, ...]) -> list[str]:
    """The PNG names the stage writes for `splits`."""
    return [f"{figure.format(split)}.png" for split in splits for figure in FIGURES]


def write_outputs(
    results: dict[str, SplitResult],
    data: dict[str, tuple[torch.Tensor, torch.Tensor]],
    class_names: list[str],
    cfg: EvaluateConfig,
    tables_dir: Path,
    figures_dir: Path,
    metrics_path: Path,
) -> None:
    """Tables and figures of every split, then the metrics. The tables directory is
    replaced whole; each figure is written whole (atomically) into figures_dir, where
    dvc.yaml declares them one by one: a clone without DVC's cache then misses single
    images, and `dvc plots diff` still draws every other plot (a missing directory
    output makes it draw nothing)."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    with atomic_dir(tables_dir) as tables:
        for split, result in results.items():
            write_split_outputs(
                result, split, data[split][0], class_names, cfg, tables, figures_dir
            )
    write_json(metrics_path, rounded({split: r.metrics for split, r in results.items()}))


def write_split_outputs(
    result: SplitResult,
    split: str,
    images: torch.Tensor,
    class_names: list[str],
    cfg: EvaluateConfig,
    tables_dir: Path,
    figures_dir: Path,
) -> None:
    """The CSV tables and PNG figures of one split (file names in the module docstring)."""
    predicted = result.probs.argmax(dim=1)
    confusion = metrics.confusion_matrix(result.labels, predicted, len(class_names))
    if split in PREDICTION_SPLITS:
        _write_csv(
            tables_dir / f"predictions_{split}.csv",
            ["label", "predicted", "confidence"],
            prediction_rows(result.labels, result.probs),
        )
        _write_csv(
            tables_dir / f"confusion_{split}.csv",
            ["actual", "predicted", "count"],
            confusion_rows(confusion, class_names),
        )
    scores = metrics.per_class_scores(confusion)
    score_rows = [
        (
            name,
            *(round(float(scores[k][i]), 6) for k in ("precision", "recall", "f1")),
            int(scores["support"][i]),
        )
        for i, name in enumerate(class_names)
    ]
    _write_csv(
        tables_dir / f"per_class_{split}.csv",
        ["class", "precision", "recall", "f1", "support"],
        score_rows,
    )
    for normalize, suffix in ((False, ""), (True, "_normalized")):
        title = f"{split}: confusion matrix" + (" (% of each actual class)" if normalize else "")
        path = figures_dir / f"confusion_{split}{suffix}.png"
        figures.confusion_heatmap(confusion.numpy(), class_names, path, normalize, title)
    _write_uncertainty_figures(result, split, images, class_names, cfg, figures_dir)


def confusion_rows(confusion: torch.Tensor, class_names: list[str]) -> list[tuple[str, str, int]]:
    """(actual, predicted, count) for every pair of classes, classes as "index name"
    (zero-padded: they sort in class order), for DVC's plot of the counts
    (.dvc/plots/confusion_counts.json), which shows names where the per-image table has
    indices."""
    width = len(str(len(class_names) - 1))
    labels = [
        name if name == str(index) else f"{index:0{width}d} {name}"  # digits name themselves
        for index, name in enumerate(class_names)
    ]
    return [
        (labels[actual], labels[predicted], int(confusion[actual, predicted]))
        for actual in range(len(labels))
        for predicted in range(len(labels))
    ]


def prediction_rows(labels: torch.Tensor, probs: torch.Tensor) -> list[tuple[int, int, str]]:
    """(label, predicted, confidence) per image; labels are class indices (names would
    double the bytes a result commit adds to git)."""
    confidence, predicted = probs.max(dim=1)
    rows = zip(labels.tolist(), predicted.tolist(), confidence.tolist(), strict=True)
    return [(label, guess, f"{p:.{CONFIDENCE_DECIMALS}f}") for label, guess, p in rows]


def _write_uncertainty_figures(
    result: SplitResult,
    split: str,
    images: torch.Tensor,
    class_names: list[str],
    cfg: EvaluateConfig,
    out_dir: Path,
) -> None:
    """Reliability diagram, rejection curve and the most confidently wrong images."""
    labels, probs = result.labels, result.probs
    tables = [(metrics.reliability_table(probs, labels, cfg.calibration_bins), result.metrics)]
    if result.uncalibrated_probs is not None:  # before calibration, beside
        before = metrics.reliability_table(result.uncalibrated_probs, labels, cfg.calibration_bins)
        tables.insert(0, (before, {"ece": result.metrics["ece_uncalibrated"]}))
    figures.reliability_diagrams(
        [
            ({k: v.numpy() for k, v in table.items()}, values["ece"], label)
            for (table, values), label in zip(tables, _reliability_labels(result), strict=True)
        ],
        out_dir / f"reliability_{split}.png",
        f"{split}: reliability",
    )
    figures.coverage_plot(
        coverage_curves(result),
        out_dir / f"uncertainty_{split}.png",
        _uncertainty_title(split, result, cfg),
    )
    worst = metrics.most_confident_errors(probs, labels, cfg.worst_examples)
    predicted = probs.argmax(dim=1)
    captions = [
        f"true {class_names[labels[i]]}\npred {class_names[predicted[i]]} ({probs[i].max():.2%})"
        for i in worst.tolist()
    ]
    figures.image_grid(
        images[worst].cpu().numpy(),
        captions,
        out_dir / f"worst_{split}.png",
        f"{split}: most confidently wrong",
    )


def _reliability_labels(result: SplitResult) -> list[str]:
    if result.uncalibrated_probs is None:
        return ["as trained"]
    return ["before calibration", f"temperature {result.metrics['temperature']:.3f}"]


def coverage_curves(result: SplitResult) -> list[figures.CoverageCurve]:
    """Accuracy–coverage curves of each uncertainty measure: max softmax probability and
    softmax entropy of the deterministic pass; with MC dropout, the predictive entropy and
    the mutual information of the mean prediction (which they then rank)."""
    correct = result.probs.argmax(dim=1) == result.labels
    measures = [
        ("max softmax", correct, -result.probs.max(dim=1).values),
        ("softmax entropy", correct, metrics.entropy(result.probs)),
    ]
    if result.mc_probs is not None:
        mean_probs = result.mc_probs.mean(dim=0)
        mc_correct = mean_probs.argmax(dim=1) == result.labels
        measures += [
            ("MC predictive entropy", mc_correct, metrics.entropy(mean_probs)),
            ("MC mutual information", mc_correct, metrics.mutual_information(result.mc_probs)),
        ]
    curves = []
    for label, right, uncertainty in measures:
        coverage, accuracy = metrics.accuracy_coverage(right, uncertainty)
        curves.append((label, coverage.numpy(), accuracy.numpy(), float(accuracy.mean())))
    return curves


def _uncertainty_title(split: str, result: SplitResult, cfg: EvaluateConfig) -> str:
    if result.mc_probs is not None:
        return f"{split}: accuracy vs coverage ({cfg.mc_samples} MC dropout passes)"
    reason = "disabled (evaluate.mc_samples: 0)" if cfg.mc_samples == 0 else "model has no dropout"
    return f"{split}: accuracy vs coverage (MC dropout {reason})"


def _write_csv(path: Path, header: list[str], rows: Iterable[Sequence[object]]) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def rounded(metrics: dict[str, dict[str, float]], digits: int = 6) -> dict[str, dict[str, float]]:
    """Round for stable, readable JSON (float noise below 1e-6 is not a change)."""
    return {
        split: {k: float(np.round(v, digits)) for k, v in m.items()} for split, m in metrics.items()
    }
