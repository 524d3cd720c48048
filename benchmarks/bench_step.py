"""Does the hand-written MLP step still pay for itself? Epoch times side by side.

Alternates epochs of the same model with `train.manual_mlp_step` true and false (the
one switch `step.make_step` reads) in one process, on the same data and threads, in
two settings: the committed params.yaml (AdamW, one-cycle, batch 256, dropout 0.2) and
the tutorial preset (SGD, batch 64, no dropout). Reports the median train-pass seconds per
epoch of each and their ratio (manual / autograd; below 1: the manual step is faster).

    .venv/bin/python -m benchmarks.bench_step --prepared data/prepared

Timings are meaningful on a quiet machine only: with more runnable threads than cores, the
hand-written step's many small parallel operations wait on each other far longer than
autograd's few large ones (both slow down; the manual step several times more).
"""

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import train_support as ts
from mnist_pipeline.config.params import ModelConfig, TrainConfig
from mnist_pipeline.data.prepared import load_splits
from mnist_pipeline.train.distributed import SINGLE_PROCESS
from mnist_pipeline.train.loop import train_one_epoch
from mnist_pipeline.train.optim import make_optimizer, make_scheduler
from mnist_pipeline.train.run import new_model
from mnist_pipeline.train.step import make_step, uses_manual_step


def settings() -> dict[str, tuple[ModelConfig, TrainConfig]]:
    """The committed params and the tutorial preset, as the pipeline would run them."""
    return {"default": ts.cpu_configs(), "tutorial": ts.tutorial_configs()}


def _epoch_seconds(data: dict[str, Any], model_cfg: ModelConfig, cfg: TrainConfig) -> float:
    model = new_model(model_cfg, ts.input_spec(data["train"][0]), 0, cfg.threads, ts.CPU)
    step = make_step(model, cfg, SINGLE_PROCESS)
    assert uses_manual_step(model, cfg, SINGLE_PROCESS) == cfg.manual_mlp_step
    optimizer = make_optimizer(step.params, cfg)
    scheduler = make_scheduler(optimizer, cfg, len(data["train"][1]) // cfg.batch_size + 1)
    order = torch.randperm(len(data["train"][1]), generator=torch.Generator().manual_seed(0))
    train_one_epoch(step, optimizer, scheduler, data["train"], order, cfg.batch_size)  # warm-up
    started = time.perf_counter()
    train_one_epoch(step, optimizer, scheduler, data["train"], order, cfg.batch_size)
    return time.perf_counter() - started


def prepared_data(prepared: Path) -> dict[str, Any]:
    """The train and valid splits exactly as the train stage reads them."""
    splits = load_splits(prepared, ("train", "valid"))
    return {"name": f"{prepared} (prepared)", **splits}


def run(
    raw: Path | None,
    rounds: int = 5,
    rows: tuple[int, int, int] = ts.FULL_ROWS,
    prepared: Path | None = None,
) -> dict[str, Any]:
    data = prepared_data(prepared) if prepared else ts.load_data(raw, rows, seed=0)
    load = ts.load_start("bench_step")
    results: dict[str, Any] = {"data": data["name"], "threads": torch.get_num_threads()}
    for name, (model_cfg, cfg) in settings().items():
        times: dict[bool, list[float]] = {True: [], False: []}
        for index in range(rounds):  # alternate the order each round
            for manual in (True, False) if index % 2 == 0 else (False, True):
                variant = dataclasses.replace(cfg, manual_mlp_step=manual)
                times[manual].append(_epoch_seconds(data, model_cfg, variant))
        manual_s, autograd_s = ts.median(times[True]), ts.median(times[False])
        results[name] = {
            "manual_s": manual_s,
            "autograd_s": autograd_s,
            "ratio": manual_s / autograd_s,
        }
        print(
            f"{name}: manual {manual_s:.3f} s/epoch, autograd {autograd_s:.3f} s/epoch, "
            f"ratio {manual_s / autograd_s:.2f} ({rounds} rounds, {data['name']})",
            flush=True,
        )
    results["load"] = [load, ts.load_now()]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idx-dir", type=Path, help="four idx .gz files (e.g. Fashion-MNIST)")
    parser.add_argument("--dataset", default="mnist", help="data set name for --idx-dir")
    parser.add_argument("--prepared", type=Path, help="a prepared directory (data/prepared)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.prepared:
        run(None, args.rounds, prepared=args.prepared)
    else:
        ts.with_raw_dir(args.idx_dir, args.dataset, lambda raw: run(raw, args.rounds))


if __name__ == "__main__":
    main()
