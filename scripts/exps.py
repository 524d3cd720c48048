"""Print HEAD's experiments as a table that fits a terminal: test accuracy with its 95%
interval, the change against HEAD's committed results with McNemar's paired test, and
the params that differ (experiments/table.py).

Example (what `make exps` runs):
  python scripts/exps.py --limit 20
"""

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import run_stage, stage_parser, whole_number
from mnist_pipeline.dvc_cli import run_dvc
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.experiments.table import MAX_ROWS, experiments_table

parser = stage_parser(__doc__.split("\n\n")[0])
parser.add_argument(
    "--limit", default=str(MAX_ROWS), help="experiments shown (%(default)s), best first"
)


def main(args: argparse.Namespace) -> None:
    args.limit = whole_number("--limit", args.limit)
    if not 1 <= args.limit <= 1000:
        raise PipelineError(f"--limit {args.limit}: must be in [1, 1000]")
    sys.stdout.write(experiments_table(Path.cwd(), run_dvc, args.limit))


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
