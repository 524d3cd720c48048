"""What the training benchmarks share: data, the tutorial setting, seeding, load checks.

Both loops run in this process on the same tensors with the same thread
count, and each starts from `seed_torch(seed)` (the pipeline's own seeding:
manual_seed + deterministic kernels), so both models start from identical
weights (the project's normalization and Flatten layers have no parameters).
"""

import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnist_pipeline.config.params import ModelConfig, Params, TrainConfig
from mnist_pipeline.data.prepared import pixel_mean_std
from mnist_pipeline.data.raw_formats import read_raw
from mnist_pipeline.experiments.start import plan_start
from mnist_pipeline.model.networks import InputSpec
from mnist_pipeline.runtime import configure_torch
from mnist_pipeline.testing import synthetic
from mnist_pipeline.testing.dvc_repo import committed_text
from mnist_pipeline.train.run import train

FULL_ROWS = (50_000, 10_000, 10_000)  # train, valid, test: MNIST's size
BUSY_LOAD = 1.5  # 1-minute load average above which timings are suspect (2-core machine)
CPU = torch.device("cpu")
Split = tuple[torch.Tensor, torch.Tensor]  # images uint8 (N, 28, 28), labels int64 (N,)
EpochRecord = dict[str, float]

REPO = Path(__file__).resolve().parents[1]


def committed_params(*presets: str) -> Params:
    """params.yaml as committed (HEAD's: working edits never change a benchmark) with
    presets/NAME.yaml applied in order: the settings the pipeline itself would run."""
    head_text = committed_text(REPO, "params.yaml")
    return plan_start(head_text, None, REPO / "presets", presets).params


def cpu_configs(*presets: str) -> tuple[ModelConfig, TrainConfig]:
    """The model and train configs of `committed_params(*presets)`, training on the CPU."""
    params = committed_params(*presets)
    return params.model, dataclasses.replace(params.train, device="cpu")


def tutorial_configs() -> tuple[ModelConfig, TrainConfig]:
    """The tutorial's setting in the project's terms: presets/tutorial.yaml."""
    return cpu_configs("tutorial")


def load_data(raw: Path | None, rows: tuple[int, int, int], seed: int) -> dict[str, Any]:
    """{"name", "dataset", "train", "valid", "test"}: a raw dir as the fetch stage leaves
    it (the first `rows` of each split), or synthetic data (MNIST's layout) of `rows`
    (train, valid, test) rows."""
    if raw is None:
        train, valid, test = synthetic.make_splits(rows, seed)
        name = f"synthetic {rows[0]}/{rows[1]}"
        return {"name": name, "dataset": "mnist", "train": train, "valid": valid, "test": test}
    splits, description = read_raw(raw)
    tensors = {
        name: (torch.from_numpy(np.array(x[:n])), torch.from_numpy(np.array(y[:n])))
        for name, n in zip(("train", "valid", "test"), rows, strict=True)
        for x, y in [splits[name]]
    }
    dataset = description["dataset"]
    return {"name": dataset, "dataset": dataset, **tensors}


def with_raw_dir(idx_dir: Path | None, dataset: str, run: Callable[[Path | None], Any]) -> Any:
    """run(raw dir): one built from four idx .gz files (e.g. Debian's Fashion-MNIST), or None."""
    if idx_dir is None:
        return run(None)
    from benchmarks.bench_prepare import raw_dir_from_idx

    with tempfile.TemporaryDirectory(prefix="bench-raw-") as tmp:
        return run(raw_dir_from_idx(idx_dir, Path(tmp), dataset))


def set_threads(threads: int) -> int:
    """Give every measurement the same intra-op thread count; 0 keeps torch's default."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def seed_torch(seed: int) -> None:
    configure_torch(seed, torch.get_num_threads(), CPU)


def load_start(label: str) -> list[float]:
    """The load averages now; warns when the machine is already busy."""
    load = [round(x, 2) for x in os.getloadavg()]
    if load[0] > BUSY_LOAD:
        sys.stdout.flush()  # keep the warning next to the output it concerns
        print(
            f"WARNING: {label}: 1-min load average {load[0]} > {BUSY_LOAD} before starting; "
            "other processes compete for the CPU and the timings will be noisy",
            file=sys.stderr,
        )
    return load


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def input_spec(images: torch.Tensor) -> InputSpec:
    mean, std = pixel_mean_std(images.numpy())
    return InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=mean, pixel_std=std)


class _Stop(Exception):
    """Raised by a log_epoch callback to end `fit` early."""


def run_project(
    data: dict[str, Any],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    seed: int,
    stop_when: Callable[[EpochRecord], bool] = lambda record: False,
) -> list[EpochRecord]:
    """The project's training (`mnist_pipeline.train.run.train`) on CPU, with the
    committed params but `model_cfg`, `train_cfg` and `seed`; per epoch: fit's
    epoch_seconds (train + valid pass), valid loss/accuracy, `elapsed_s` since fit was
    called, and the process CPU seconds since the previous epoch (`epoch_cpu_seconds`:
    less skewed by other processes than wall time when running one thread)."""
    cfg = dataclasses.replace(train_cfg, device="cpu", threads=torch.get_num_threads())
    params = dataclasses.replace(committed_params(), seed=seed, model=model_cfg, train=cfg)
    records: list[EpochRecord] = []

    def log_epoch(log: dict[str, float]) -> None:
        cpu_s = time.process_time()
        previous_cpu_s = records[-1]["cpu_s"] if records else started_cpu_s
        record = {**log, "elapsed_s": time.perf_counter() - started, "cpu_s": cpu_s}
        records.append({**record, "epoch_cpu_seconds": cpu_s - previous_cpu_s})
        if stop_when(records[-1]):
            raise _Stop

    started, started_cpu_s = time.perf_counter(), time.process_time()
    with contextlib.suppress(_Stop):
        train(params, data, input_spec(data["train"][0]), data["dataset"], CPU, log_epoch)
    return records


def median(values: list[float]) -> float:
    return float(np.median(values))
