"""Train the classifier that params.yaml describes; write the checkpoint and training log.

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

from mnist_pipeline.cli import require_own_library, run_stage, stage_parser
from mnist_pipeline.config.params import load_params, to_dict
from mnist_pipeline.data.prepared import MANIFEST_FILE, load_splits, read_manifest
from mnist_pipeline.fileio import atomic_dir
from mnist_pipeline.model.checkpoint import save_checkpoint
from mnist_pipeline.model.networks import build_model, count_parameters, input_spec_from_manifest
from mnist_pipeline.runtime import configure_torch, resolve_device, run_info
from mnist_pipeline.train import distributed, resume, worker_errors
from mnist_pipeline.train.augment import make_augment
from mnist_pipeline.train.loop import fit, state_expectation
from mnist_pipeline.train.training_log import (
    epoch_printer,
    learning_rates,
    saved_summary,
    write_timings,
    write_training_log,
)

parser = stage_parser(__doc__)
parser.add_argument("--data", required=True, type=Path, help="prepared data directory")
parser.add_argument("--model", required=True, type=Path, help="checkpoint to write")
parser.add_argument(
    "--log-dir", required=True, type=Path, help="training log directory (metrics, plots)"
)
parser.add_argument("--state-dir", type=Path, help="where to save the state to resume from")
parser.add_argument(
    "--timings", type=Path, help="JSON of the run's seconds (an untracked log, not an output)"
)


def main(args: argparse.Namespace) -> None:
    distributed.die_with_launcher()  # first: an orphaned worker must not even start
    require_own_library(__file__)
    params = load_params(args.params)
    # Before any work: a missing GPU fails fast.
    device = resolve_device(params.train.device)
    if distributed.needs_launch(params.distributed):  # this process only starts the ranks
        return distributed.launch(params.distributed, params.train.threads, sys.argv, device)
    rank = distributed.current_rank(params.distributed)
    device = distributed.rank_device(device, rank)
    configure_torch(params.seed, params.train.threads, device)
    manifest, data = read_manifest(args.data), load_splits(args.data, ("train", "valid"))
    spec = input_spec_from_manifest(manifest)
    augment = make_augment(params.train.augment, manifest["dataset"])
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
    manifest_file = args.data / MANIFEST_FILE
    expected = state_expectation(model, params.train, len(train[1]), rank.world_size)
    state = resume.prepare(
        args.state_dir, to_dict(params), manifest_file, device, rank, started_s, expected
    )
    if state.message and rank.is_main:
        print(f"train: {state.message}")
    group = distributed.process_group(rank, device, params.distributed.timeout_s)
    with group:
        log_epoch = epoch_printer(rank)
        result = fit(
            model,
            train,
            valid,
            params.train,
            params.seed,
            log_epoch,
            rank,
            resume=state.state,
            save_state=state.save_state,
            augment=augment,
        )
        train_seconds = state.earlier_s + time.perf_counter() - started_s
        if rank.is_main:  # a failed save leaves no training log either
            epochs_run = len(result.history)
            run = {
                **run_info(device),
                "world_size": rank.world_size,
                "epochs_run": epochs_run,
                "saved_epoch": result.saved_epoch,
                "lowest_valid_loss_epoch": result.best_epoch,
                "stopped_early": result.stopped_early,
            }
            classes = manifest["class_names"]
            lrs = learning_rates(params.train, len(train[1]), rank.world_size, epochs_run)
            distributed.check_launcher_alive()  # an orphaned rank 0 must not write
            with atomic_dir(args.log_dir) as log_dir:
                write_training_log(
                    log_dir, result.history, result.saved_epoch, result.best_epoch, lrs
                )
                save_checkpoint(args.model, model, params.model, spec, classes, params, run)
            if args.timings is not None:
                write_timings(args.timings, result.history, train_seconds)
            saved = saved_summary(result.history, result.saved_epoch, result.best_epoch)
            print(f"train: wrote {args.model}: {saved}; {train_seconds:.1f} s of training")
    if args.state_dir is not None and rank.is_main:  # only now: the outputs are written
        resume.remove_state(args.state_dir)


if __name__ == "__main__":
    sys.exit(
        run_stage(
            main,
            parser,
            on_error=worker_errors.record,
            on_interrupt=lambda args: resume.interrupted_note(args.state_dir),
        )
    )
