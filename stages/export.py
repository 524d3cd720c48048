"""Export the trained checkpoint as TorchScript and ONNX (uint8 images (N, 28, 28) in,
logits out, normalization inside; class names, data set and that contract as metadata;
see export/formats.py) and check both against the eager model on every test image; write
the parity figures as metrics."""

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import require_own_library, run_stage, stage_parser
from mnist_pipeline.data.prepared import load_split, read_manifest
from mnist_pipeline.export import formats
from mnist_pipeline.fileio import atomic_file, write_json
from mnist_pipeline.model.checkpoint import load_checkpoint

parser = stage_parser(__doc__)
parser.add_argument("--data", required=True, type=Path, help="prepared data directory")
parser.add_argument("--model", required=True, type=Path, help="checkpoint to export")
parser.add_argument("--torchscript", required=True, type=Path, help="TorchScript file to write")
parser.add_argument("--onnx", required=True, type=Path, help="ONNX file to write")
parser.add_argument("--metrics", required=True, type=Path, help="parity metrics JSON to write")


def main(args: argparse.Namespace) -> None:
    require_own_library(__file__)
    model, checkpoint = load_checkpoint(args.model, "cpu")  # the portable files are CPU files
    images, _ = load_split(args.data, "test")
    meta = formats.metadata(checkpoint["class_names"], read_manifest(args.data)["dataset"])
    torchscript = formats.torchscript_bytes(model, images, meta)
    onnx = formats.onnx_bytes(model, images, meta)
    reference = formats.eager_logits(model, images)
    results = {
        "torchscript": formats.parity(
            reference, formats.torchscript_logits(formats.load_torchscript(torchscript), images)
        ),
        "onnx": formats.parity(reference, formats.onnx_logits(formats.onnx_session(onnx), images)),
    }
    formats.check_parity(results)  # before writing: a failed export leaves no files
    for path, data in ((args.torchscript, torchscript), (args.onnx, onnx)):
        with atomic_file(path) as tmp:
            tmp.write_bytes(data)
    write_json(args.metrics, formats.parity_metrics(results))
    summary = ", ".join(
        f"{name} max |logit diff| {p.max_abs_logit_diff:.2g}, {p.argmax_mismatches} argmax differ"
        for name, p in results.items()
    )
    print(f"export: wrote {args.torchscript} and {args.onnx} ({summary} on {len(images)} images)")


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
