"""Put params.yaml, dvc.lock and every pipeline output back as the last commit (HEAD) has
them, after a failed or unwanted experiment: git-tracked outputs from git, cached ones
from DVC's cache (experiments/reset.py says why `git checkout && dvc checkout` is not
enough). Code and other files are left alone.

Example (what `make reset` runs):
  python scripts/reset.py
"""

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.dvc_cli import run_dvc
from mnist_pipeline.experiments.reset import reset_to_head

parser = stage_parser(__doc__.split("\n\n")[0])


def main(args: argparse.Namespace) -> None:
    print(reset_to_head(Path.cwd(), run_dvc, params=args.params))


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
