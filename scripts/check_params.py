"""Pre-flight check of params.yaml, run by `make repro` before `dvc repro`: at most 1 MB,
no YAML anchors or aliases (DVC's loader would expand them before any stage runs), valid
as the stages read it, and 1 GB of free disk (config/preflight.py says why).

Usage: python scripts/check_params.py [params.yaml]; exit 0 if fine, else 1 and one line.
"""

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.config.preflight import check_params_file

parser = stage_parser(__doc__.split("\n\n")[0])
parser.add_argument("file", nargs="?", type=Path, help="params file (default: --params)")


def main(args: argparse.Namespace) -> None:
    check_params_file(args.file or Path(args.params))


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
