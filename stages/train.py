"""Train the classifier that params.yaml describes; write the checkpoint and dvclive logs.

With distributed.nproc_per_node * nnodes > 1 this script starts torchrun, which
runs it once per rank; rank 0 alone prints progress and writes the outputs.

With --state-dir (one machine), the full training state is saved there after every
epoch, and a run killed part-way resumes from it on the next start: the checkpoint comes
out byte-identical to an uninterrupted run's (train/resume.py). A completed run deletes it.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.config.params import load_params, to_dict
from mnist_pipeline.data.prepared import MANIFEST_FILE, load_splits, read_manifest
from mnist_pipeline.model.checkpoint import save_checkpoint
from mnist_pipeline.model.networks import build_model, count_parameters, input_spec_from_manifest
from mnist_pipeline.runtime import configure_torch, resolve_device, run_info
from mnist_pipeline.train import distributed, resume, worker_errors
from mnist_pipeline.train.live_log import epoch_logger
from mnist_pipeline.train.loop import fit

parser = stage_parser(__doc__)
parser.add_argument("--data", required=True, type=Path, help="prepared data directory")
parser.add_argument("--model", required=True, type=Path, help="checkpoint to write")
parser.add_argument("--live", required=True, type=Path, help="dvclive directory (metrics, plots)")
parser.add_argument("--state-dir", type=Path, help="where to save the state to resume from")


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    if distributed.needs_launch(params.distributed):  # this process only starts the ranks
        return distributed.launch(params.distributed, params.train.threads, sys.argv)
    rank = distributed.current_rank(params.distributed)
    # Before any work: a missing GPU fails fast.
    device = distributed.rank_device(resolve_device(params.train.device), rank)
    configure_torch(params.seed, params.train.threads, device)
    manifest, data = read_manifest(args.data), load_splits(args.data, ("train", "valid"))
    spec = input_spec_from_manifest(manifest)
    model = build_model(params.model, spec).to(device)
    distributed.seed_rank(params.seed, rank)
    train, valid = data["train"], data["valid"]
    if rank.is_main:
        print(
            f"train: {params.model.name} with {count_parameters(model):,} parameters on "
            f"{device} x {rank.world_size} process(es), {len(train[1]):,} train / "
            f"{len(valid[1]):,} valid images"
        )
    started_s = time.perf_counter()
    # Every rank reads the state file: one machine only.
    state_dir = args.state_dir if params.distributed.nnodes == 1 else None
    key = resume.run_key(
        {k: v for k, v in to_dict(params).items() if k in resume.TRAIN_SECTIONS},
        args.data / MANIFEST_FILE,
        device,
        torch.get_num_threads(),
    )
    # Every rank decides the same: the file changes only after the first epoch, which
    # needs every rank, each of them past this point.
    state, extra, why = resume.read_state(state_dir, key) if state_dir else (None, {}, "")
    if why and rank.is_main:
        print(f"train: {why}")
    if state is not None:
        state = resume.for_rank(state, extra, rank)
    earlier_s = float(extra.get("train_seconds", 0.0))  # trained before the resume
    save_state = (
        None if state_dir is None else resume.saver(state_dir, key, started_s, earlier_s, rank)
    )

    group = distributed.process_group(rank, device, params.distributed.timeout_s)
    with group, epoch_logger(args.live, rank) as log_epoch:
        if state is not None and rank.is_main:
            print(f"train: resuming after epoch {state.epoch} from {state_dir}")
            for log in state.history:  # the dvclive logs start afresh: replayed
                log_epoch(log)
        result = fit(
            model,
            train,
            valid,
            params.train,
            params.seed,
            log_epoch,
            rank,
            resume=state,
            save_state=save_state,
        )
        log_epoch.summary(
            best_epoch=result.best_epoch,
            train_seconds=earlier_s + time.perf_counter() - started_s,
        )
        if rank.is_main:  # inside the block: a failed save leaves no dvclive logs either
            run = {
                **run_info(device),
                "world_size": rank.world_size,
                "epochs_run": len(result.history),
                "best_epoch": result.best_epoch,
                "stopped_early": result.stopped_early,
            }
            classes = manifest["class_names"]
            save_checkpoint(args.model, model, params.model, spec, classes, params, run)
            best_loss = result.history[result.best_epoch - 1]["valid/loss"]
            print(
                f"train: wrote {args.model} (best epoch {result.best_epoch}, "
                f"valid loss {best_loss:.4f})"
            )
    if state_dir is not None and rank.is_main:  # only now: the checkpoint and logs exist
        resume.remove_state(state_dir)


if __name__ == "__main__":
    sys.exit(run_stage(main, parser, on_error=worker_errors.record))
