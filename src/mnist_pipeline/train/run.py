"""Training as a library call: the train stage's run in one process (`run_stage`), and
the same setup and fit in-process without any output (`train`), which benchmarks and
tests call.

Both set torch up and build the model through `new_model`, so a setting trained by either
starts from the same weights and sees the same batches: a benchmark measures what the
stage runs.
"""

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mnist_pipeline.config.params import ModelConfig, Params, to_dict
from mnist_pipeline.data.prepared import MANIFEST_FILE, load_splits, read_manifest
from mnist_pipeline.fileio import atomic_dir
from mnist_pipeline.model.checkpoint import save_checkpoint
from mnist_pipeline.model.networks import (
    InputSpec,
    build_model,
    count_parameters,
    input_spec_from_manifest,
)
from mnist_pipeline.runtime import configure_torch, run_info, slow_precision_warning
from mnist_pipeline.train import distributed, resume
from mnist_pipeline.train.augment import make_augment
from mnist_pipeline.train.distributed import Rank
from mnist_pipeline.train.loop import EpochLog, FitResult, Split, fit, state_expectation
from mnist_pipeline.train.training_log import (
    epoch_printer,
    learning_rates,
    saved_summary,
    write_timings,
    write_training_log,
)


@dataclass(frozen=True)
class TrainOutputs:
    """Where the train stage writes (the paths of dvc.yaml's cmd)."""

    model: Path  # the checkpoint
    log_dir: Path  # the training log: metrics and per-epoch curves
    state_dir: Path | None = None  # the state a killed run resumes from (one machine)
    timings: Path | None = None  # JSON of the run's seconds (an untracked log)


@dataclass
class Trained:
    model: nn.Module  # trained in place; on the device it trained on
    result: FitResult


def new_model(
    model_cfg: ModelConfig, spec: InputSpec, seed: int, threads: int, device: torch.device
) -> nn.Module:
    """Torch set up as every training run sets it (seed, `threads`, deterministic kernels)
    and a new model on `device`: the same initial weights for the same config and seed."""
    configure_torch(seed, threads, device)
    return build_model(model_cfg, spec).to(device)


def train(
    params: Params,
    data: Mapping[str, Split],
    spec: InputSpec,
    dataset: str,
    device: torch.device,
    log_epoch: Callable[[EpochLog], None] = lambda log: None,
) -> Trained:
    """Train `params`' model on `data`'s train split (validating on its valid split) in
    this process, as one process of the train stage does, without resume or outputs."""
    model = new_model(params.model, spec, params.seed, params.train.threads, device)
    augment = make_augment(params.train.augment, dataset)
    result = fit(
        model, data["train"], data["valid"], params.train, params.seed, log_epoch, augment=augment
    )
    return Trained(model, result)


def run_stage(params: Params, data_dir: Path, outputs: TrainOutputs, device: torch.device) -> None:
    """This process's part of the train stage (all of it, without torchrun): train on the
    prepared data in `data_dir`, resuming from `outputs.state_dir` when it holds a killed
    run's state, and (rank 0) write the checkpoint and the training log."""
    rank = distributed.current_rank(params.distributed)
    device = distributed.rank_device(device, rank)
    manifest, data = read_manifest(data_dir), load_splits(data_dir, ("train", "valid"))
    spec = input_spec_from_manifest(manifest)
    augment = make_augment(params.train.augment, manifest["dataset"])
    model = new_model(params.model, spec, params.seed, params.train.threads, device)
    distributed.seed_rank(params.seed, rank)
    train_split, valid_split = data["train"], data["valid"]
    train_rows = len(train_split[1])
    if rank.is_main:
        print(
            f"train: {params.model.name} with {count_parameters(model):,} parameters on "
            f"{device} x {rank.world_size} process(es), {train_rows:,} train / "
            f"{len(valid_split[1]):,} valid images"
        )
        slow = slow_precision_warning(device, params.train.precision, "train.precision")
        if slow is not None:
            print(f"train: warning: {slow}", file=sys.stderr)
    started_s = time.perf_counter()
    expected = state_expectation(model, params.train, train_rows, rank.world_size)
    state = resume.prepare(
        outputs.state_dir,
        to_dict(params),
        data_dir / MANIFEST_FILE,
        device,
        rank,
        started_s,
        expected,
    )
    if state.message and rank.is_main:
        print(f"train: {state.message}")
    with distributed.process_group(rank, device, params.distributed.timeout_s):
        result = fit(
            model,
            train_split,
            valid_split,
            params.train,
            params.seed,
            epoch_printer(rank),
            rank,
            resume=state.state,
            save_state=state.save_state,
            augment=augment,
        )
        train_s = state.earlier_s + time.perf_counter() - started_s
        if rank.is_main:  # a failed save leaves no training log either
            classes = manifest["class_names"]
            lrs = learning_rates(params.train, train_rows, rank.world_size, len(result.history))
            _write_outputs(params, classes, spec, model, result, lrs, rank, device, outputs)
            if outputs.timings is not None:
                write_timings(outputs.timings, result.history, train_s)
            saved = saved_summary(result.history, result.saved_epoch, result.best_epoch)
            print(f"train: wrote {outputs.model}: {saved}; {train_s:.1f} s of training")
    if outputs.state_dir is not None and rank.is_main:  # only now: the outputs are written
        resume.remove_state(outputs.state_dir)


def _write_outputs(
    params: Params,
    class_names: list[str],
    spec: InputSpec,
    model: nn.Module,
    result: FitResult,
    lrs: list[tuple[float, float]],
    rank: Rank,
    device: torch.device,
    outputs: TrainOutputs,
) -> None:
    """The checkpoint (with the model config and what the run was) and the training log,
    the log only once the checkpoint is saved."""
    run = {
        **run_info(device),
        "world_size": rank.world_size,
        "epochs_run": len(result.history),
        "saved_epoch": result.saved_epoch,
        "lowest_valid_loss_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
    }
    distributed.check_launcher_alive()  # an orphaned rank 0 must not write
    with atomic_dir(outputs.log_dir) as log_dir:
        write_training_log(log_dir, result.history, result.saved_epoch, result.best_epoch, lrs)
        save_checkpoint(outputs.model, model, params.model, spec, class_names, params, run)
