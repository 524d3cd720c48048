"""Turn the fetched raw files into verified uint8 tensor shards plus a manifest."""

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import require_own_library, run_stage, stage_parser
from mnist_pipeline.config.params import load_params
from mnist_pipeline.data.prepared import write_prepared
from mnist_pipeline.data.raw_formats import read_raw
from mnist_pipeline.fileio import atomic_dir

parser = stage_parser(__doc__)
parser.add_argument("--raw", required=True, type=Path, help="raw directory the fetch stage wrote")
parser.add_argument("--out", required=True, type=Path, help="prepared directory to write")


def main(args: argparse.Namespace) -> None:
    require_own_library(__file__)
    params = load_params(args.params)
    splits, description = read_raw(args.raw)
    # Built in a temporary sibling and renamed at the end: a failure leaves no output.
    with atomic_dir(args.out) as tmp:
        manifest = write_prepared(
            splits,
            description["class_names"],
            description["dataset"],
            params.prepare.shard_size,
            tmp,
        )
    counts = ", ".join(f"{name} {s['rows']:,}" for name, s in manifest["splits"].items())
    shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    print(
        f"prepare: {description['dataset']} ({description['format']}) -> {args.out}: "
        f"{counts} images in {shards} shards"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
