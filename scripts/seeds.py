"""Train the current params (the workspace's params.yaml) with K seeds (0..K-1) through
DVC's experiment queue, one at a time, and write every metric's mean, std, min and max over the
seeds to a JSON file (commit it: the review report compares it between revisions).

Example (what `make seeds K=5` runs):
  python scripts/seeds.py --k 5 --out metrics/seeds.json

K is 2 to 50 (review/seeds.py says why). Stopped (Ctrl-C, SIGTERM, an error or the
timeout), it removes the runs it queued from DVC's queue, stops its running one and the
queue worker it started, and says so in one line.
"""

import argparse
import math
import sys
from pathlib import Path

from mnist_pipeline.cli import run_stage, stage_parser, whole_number
from mnist_pipeline.dvc_cli import run_dvc
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import write_json
from mnist_pipeline.review.seeds import check_seed_count, run_seeds

parser = stage_parser(__doc__.split("\n\n")[0])
parser.add_argument("--k", default="5", help="number of seeds, 2 to 50 (%(default)s)")
parser.add_argument("--out", required=True, type=Path, help="summary JSON to write")
parser.add_argument(
    "--timeout-min", type=float, default=240, help="longest wait for the queue (%(default)s)"
)
parser.add_argument(
    "--poll-s", type=float, default=2.0, help="seconds between queue checks (%(default)s)"
)


def main(args: argparse.Namespace) -> None:
    # What the run did with its queued tasks if it is stopped: the interrupted line says it.
    args.notes = []
    args.k = whole_number("--k", args.k)
    check_seed_count(args.k)  # before any work
    for option, value in (("--timeout-min", args.timeout_min), ("--poll-s", args.poll_s)):
        if not (math.isfinite(value) and value > 0):
            raise PipelineError(f"{option} {value:g}: must be a positive number")
    summary = run_seeds(
        args.k, run_dvc, timeout_s=60 * args.timeout_min, poll_s=args.poll_s, notes=args.notes
    )
    write_json(args.out, summary)
    print(f"seeds: wrote {args.out} ({args.k} seeds)")


if __name__ == "__main__":
    sys.exit(
        run_stage(
            main, parser, on_interrupt=lambda args: "; ".join(getattr(args, "notes", [])) or None
        )
    )
