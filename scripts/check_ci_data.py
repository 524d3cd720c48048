"""Check that a CI runner can have the pipeline's data, before `make repro` needs it.

Exit 0 and one line saying where the data comes from (the DVC remote, fetch.source or
the built-in mirrors); exit 1 and one line when there is no DVC remote and fetch.source
names only local paths that this machine lacks (see mnist_pipeline.review.ci_data).
The review workflow runs it in the repository's root, as the pipeline's stages run.

Example: python scripts/check_ci_data.py --params params.yaml
"""

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.config.strict import load_yaml_mapping
from mnist_pipeline.review.ci_data import check_ci_data, configured_remotes

parser = stage_parser(__doc__.split("\n\n")[0])


def main(args: argparse.Namespace) -> None:
    root = Path.cwd()
    params = load_yaml_mapping(Path(args.params))
    where = check_ci_data(params, configured_remotes(root), root)
    print(f"check_ci_data: {where}")


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
