"""Release the models: push their files to the default DVC remote and tag HEAD for each
artifact in dvc.yaml (`mnist-classifier@v1.0.0`, `mnist-classifier-onnx@v1.0.0`), so that
`dvc artifacts get REPO NAME --rev v1.0.0` downloads that version anywhere
(export/release.py says what is checked first).

Example (what `make release VERSION=v1.0.0` runs):
  python scripts/release.py --version v1.0.0
"""

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.config.strict import load_yaml_mapping
from mnist_pipeline.dvc_cli import run_dvc
from mnist_pipeline.export.release import release

parser = stage_parser(__doc__.split("\n\n")[0])
parser.add_argument("--version", required=True, help="the version to release, e.g. v1.0.0")


def main(args: argparse.Namespace) -> None:
    repo = Path.cwd()
    print(release(repo, load_yaml_mapping(repo / "dvc.yaml"), args.version, run_dvc))


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
