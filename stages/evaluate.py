"""Evaluate the trained checkpoint on the valid and test splits; write metrics and figures."""

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import require_own_library, run_stage, stage_parser
from mnist_pipeline.config.params import load_params
from mnist_pipeline.data.prepared import load_splits, read_manifest
from mnist_pipeline.data.registry import resolve_hflip
from mnist_pipeline.evaluate.run import evaluate_splits, write_outputs
from mnist_pipeline.model.checkpoint import load_checkpoint
from mnist_pipeline.runtime import resolve_device

parser = stage_parser(__doc__)
parser.add_argument("--data", required=True, type=Path, help="prepared data directory")
parser.add_argument("--model", required=True, type=Path, help="checkpoint to evaluate")
parser.add_argument("--metrics", required=True, type=Path, help="metrics JSON to write")
parser.add_argument("--tables", required=True, type=Path, help="directory for the CSV tables")
parser.add_argument("--figures", required=True, type=Path, help="directory for the PNG figures")


def main(args: argparse.Namespace) -> None:
    require_own_library(__file__)
    params = load_params(args.params)
    model, checkpoint = load_checkpoint(
        args.model, resolve_device(params.evaluate.device, "evaluate.device")
    )
    dataset = read_manifest(args.data)["dataset"]
    hflip = resolve_hflip(params.evaluate.tta_hflip, dataset, "evaluate.tta_hflip")
    data = load_splits(args.data, ("valid", "test"))
    results = evaluate_splits(model, data, params.evaluate, params.seed, hflip)
    if params.evaluate.mc_samples > 0 and results["test"].mc_probs is None:
        print(
            "evaluate: the model has no dropout, so MC dropout has no spread to measure; "
            "skipping it (set model.dropout > 0 to use it)"
        )
    write_outputs(
        results,
        data,
        checkpoint["class_names"],
        params.evaluate,
        args.tables,
        args.figures,
        args.metrics,
    )
    test = results["test"].metrics
    before = ""
    if "temperature" in test:
        before = (
            f" ({test['ece_uncalibrated']:.4f} before calibration, temperature "
            f"{test['temperature']:.3f})"
        )
    print(
        f"evaluate: test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f}, "
        f"ECE {test['ece']:.4f}{before}; wrote {args.metrics}, {args.tables}/ and "
        f"{args.figures}/"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
