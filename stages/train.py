"""Train the classifier that params.yaml describes; write the checkpoint and training log.

With distributed.nproc_per_node * nnodes > 1 this script starts torchrun, which
runs it once per rank; rank 0 alone prints progress and writes the outputs.

With --state-dir (one machine), the full training state is saved there after every
epoch, and a run killed part-way resumes from it on the next start: the checkpoint comes
out byte-identical to an uninterrupted run's (train/resume.py). A completed run deletes it.
"""

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import require_own_library, run_stage, stage_parser
from mnist_pipeline.config.params import load_params
from mnist_pipeline.runtime import resolve_device
from mnist_pipeline.train import distributed, resume, worker_errors
from mnist_pipeline.train.run import TrainOutputs
from mnist_pipeline.train.run import run_stage as train_stage

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
    outputs = TrainOutputs(args.model, args.log_dir, args.state_dir, args.timings)
    train_stage(params, args.data, outputs, device)


if __name__ == "__main__":
    sys.exit(
        run_stage(
            main,
            parser,
            on_error=worker_errors.record,
            on_interrupt=lambda args: resume.interrupted_note(args.state_dir),
        )
    )
