"""Faithfulness and time-to-result: the project against the tutorial's whole run.

`faithfulness`: the tutorial setting (SGD lr 0.001, batch 64, its MLP, unit
pixels) for N epochs in both loops, side by side on the same data: per-epoch
validation loss of both and the absolute difference at the first and last
epoch (target: within 0.03; the two differ only in the shuffling order and in
pixels k/255 versus the pickle's k/256).

`time_to_result`: the tutorial's wall time for its epochs and its final valid
accuracy, then the project's DEFAULT config (params.yaml model + train) until
its valid accuracy first passes that; the ratio of the two times (target <= 1/20).
"""

import dataclasses
from typing import Any

from benchmarks import train_support as ts
from benchmarks import tutorial_loop
from mnist_pipeline.config.params import Params


def run_tutorial(data: dict[str, Any], epochs: int, batch_size: int, seed: int) -> list[dict]:
    ts.seed_torch(seed)
    lr = ts.tutorial_configs()[1].lr
    return tutorial_loop.run_epochs(data["train"], data["valid"], epochs, batch_size, lr)


def faithfulness(data: dict[str, Any], epochs: int, seed: int) -> dict[str, Any]:
    load = ts.load_start("faithfulness")
    model_cfg, tutorial_cfg = ts.tutorial_configs()
    tutorial = run_tutorial(data, epochs, tutorial_cfg.batch_size, seed)
    cfg = dataclasses.replace(tutorial_cfg, epochs=epochs)
    project = ts.run_project(data, model_cfg, cfg, seed)
    diffs = [abs(p["valid/loss"] - t["valid/loss"]) for t, p in zip(tutorial, project, strict=True)]
    result = {
        "epochs": epochs,
        "tutorial": _compact(tutorial),
        "project": _compact(project),
        "abs_diff_first": diffs[0],
        "abs_diff_last": diffs[-1],
        "abs_diff_max": max(diffs),
        "load_start": load,
        "load_end": ts.load_now(),
    }
    _print_faithfulness(result)
    return result


def time_to_result(
    data: dict[str, Any], tutorial: list[dict], params: Params, seed: int
) -> dict[str, Any]:
    """`tutorial`: the records of the tutorial's full run (e.g. from `faithfulness`);
    `params`: the project's setting to time (bench_train: the committed params.yaml)."""
    load = ts.load_start("time to result")
    target = tutorial[-1]["valid/accuracy"]
    epoch_s = [r["epoch_seconds"] for r in tutorial]
    tutorial_s = sum(epoch_s)
    project = ts.run_project(
        data, params.model, params.train, seed, stop_when=lambda r: r["valid/accuracy"] > target
    )
    reached = next((r for r in project if r["valid/accuracy"] > target), None)
    result = {
        "tutorial_epochs": len(tutorial),
        "tutorial_seconds": tutorial_s,
        "tutorial_valid_accuracy": target,
        "tutorial_valid_loss": tutorial[-1]["valid/loss"],
        "project_config": {
            "model": dataclasses.asdict(params.model),
            "train": dataclasses.asdict(params.train),
        },
        "project_epoch": reached and reached["epoch"],
        "project_seconds": reached and reached["elapsed_s"],
        "project_valid_accuracy": reached and reached["valid/accuracy"],
        "ratio": reached and reached["elapsed_s"] / tutorial_s,
        # Epochs x median epoch: less skewed by other processes' bursts than the sum.
        "tutorial_seconds_median_based": len(tutorial) * ts.median(epoch_s),
        "load_start": load,
        "load_end": ts.load_now(),
    }
    _print_time_to_result(result, params.train.epochs)
    return result


def _compact(records: list[dict]) -> list[dict]:
    keys = ("epoch", "epoch_seconds", "valid/loss", "valid/accuracy")
    return [{k: r[k] for k in keys} for r in records]


def _print_faithfulness(result: dict[str, Any]) -> None:
    print(f"\nFaithfulness: tutorial setting, {result['epochs']} epochs, both loops")
    print(
        f"{'epoch':>5} {'tutorial loss':>13} {'project loss':>12} {'|diff|':>7} "
        f"{'tut acc':>7} {'proj acc':>8} {'tut s':>6} {'proj s':>6}"
    )
    for t, p in zip(result["tutorial"], result["project"], strict=True):
        print(
            f"{t['epoch']:>5} {t['valid/loss']:>13.4f} {p['valid/loss']:>12.4f} "
            f"{abs(t['valid/loss'] - p['valid/loss']):>7.4f} {t['valid/accuracy']:>7.4f} "
            f"{p['valid/accuracy']:>8.4f} {t['epoch_seconds']:>6.2f} {p['epoch_seconds']:>6.2f}"
        )
    print(
        f"|valid loss difference|: first epoch {result['abs_diff_first']:.4f}, last epoch "
        f"{result['abs_diff_last']:.4f}, max {result['abs_diff_max']:.4f} (target <= 0.03); "
        f"load {result['load_start']} -> {result['load_end']}"
    )


def _print_time_to_result(result: dict[str, Any], configured_epochs: int) -> None:
    print(
        f"\nTime to the tutorial's result: tutorial {result['tutorial_epochs']} epochs "
        f"{result['tutorial_seconds']:.1f} s (epochs x median epoch: "
        f"{result['tutorial_seconds_median_based']:.1f} s) -> valid accuracy "
        f"{result['tutorial_valid_accuracy']:.4f} (loss {result['tutorial_valid_loss']:.4f})"
    )
    if result["project_epoch"] is None:
        print(f"project default config: never passed it in {configured_epochs} epochs")
    else:
        print(
            f"project default config: passed it after epoch {result['project_epoch']} "
            f"(of {configured_epochs}) at {result['project_seconds']:.1f} s, valid accuracy "
            f"{result['project_valid_accuracy']:.4f}; ratio {result['ratio']:.3f} "
            f"(1/{1 / result['ratio']:.0f}; target <= 1/20)"
        )
    print(f"load {result['load_start']} -> {result['load_end']}")
