"""Train the classifier that params.yaml describes; write the checkpoint and dvclive logs."""

import sys
import time
from pathlib import Path

from dvclive import Live

from mnist_pipeline.checkpoint import save_checkpoint
from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.config import load_params
from mnist_pipeline.devices import configure_torch, resolve_device, run_info
from mnist_pipeline.models import build_model, count_parameters, input_spec_from_manifest
from mnist_pipeline.shards import load_splits, read_manifest
from mnist_pipeline.training import dvclive_logger, fit

parser = stage_parser(__doc__)
parser.add_argument("--data", required=True, type=Path, help="prepared data directory")
parser.add_argument("--model", required=True, type=Path, help="checkpoint to write")
parser.add_argument("--live", required=True, type=Path, help="dvclive directory (metrics, plots)")


def main(args) -> None:
    params = load_params(args.params)
    device = resolve_device(params.train.device)  # before any work: a missing GPU fails fast
    configure_torch(params.seed, params.train.threads, device)
    manifest = read_manifest(args.data)
    data = load_splits(args.data, ("train", "valid"))
    spec = input_spec_from_manifest(manifest)
    model = build_model(params.model, spec).to(device)
    print(
        f"train: {params.model.name} with {count_parameters(model):,} parameters on {device}, "
        f"{len(data['train'][1]):,} train / {len(data['valid'][1]):,} valid images"
    )
    started_s = time.perf_counter()
    with Live(str(args.live), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        result = fit(
            model, data["train"], data["valid"], params.train, params.seed, dvclive_logger(live)
        )
        live.summary.update(
            best_epoch=result.best_epoch, train_seconds=time.perf_counter() - started_s
        )
    run = {
        **run_info(device),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
    }
    save_checkpoint(args.model, model, params.model, spec, manifest["class_names"], params, run)
    print(
        f"train: wrote {args.model} (best epoch {result.best_epoch}, "
        f"valid loss {result.history[result.best_epoch - 1]['valid/loss']:.4f})"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
