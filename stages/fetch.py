"""Stage `fetch`: download and verify the raw data set files into --out.

The output appears only once every file has verified (built in a temporary
sibling directory and renamed), so a failed fetch leaves no output behind.
"""

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import require_own_library, run_stage, stage_parser
from mnist_pipeline.config.params import load_params
from mnist_pipeline.data.download import fetch_dataset
from mnist_pipeline.fileio import atomic_dir

parser = stage_parser("Download and verify the raw data set files.")
parser.add_argument("--out", required=True, help="output directory (from dvc.yaml)")


def main(args: argparse.Namespace) -> None:
    require_own_library(__file__)
    params = load_params(Path(args.params))
    with atomic_dir(Path(args.out)) as tmp:
        description = fetch_dataset(params.fetch, tmp)
    names = ", ".join(description["files"])
    print(f"{args.out}: {description['dataset']} ({description['format']}): {names}")


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
