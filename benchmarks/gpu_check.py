"""The GPU check (`make gpu-check`): how fast the default MLP and the two CNN presets train
on this machine's accelerator, in one command that ends in a few minutes.

For each setting (params.yaml as it is, then with presets/cnn-fast.yaml, then with
presets/cnn-best.yaml) it trains with the data kept on the device (the fit loop moves
it there once), on CUDA in bf16 and compiled, and prints: the first epoch (compile
included), the median of the others, and the time to the validation target (99% on an
MNIST-like data set, 93% on Fashion-MNIST). With two or more GPUs it also runs the
train stage under torchrun on two of them. Last, the environment: GPU, driver, torch.

`--device cpu --quick` runs the same code on the CPU on synthetic data, 2 epochs each:
the tests run it, so the check works when a GPU machine runs it for real.

    .venv/bin/python -m benchmarks.gpu_check --data data/prepared
    .venv/bin/python -m benchmarks.gpu_check --device cpu --quick
"""

import argparse
import dataclasses
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from mnist_pipeline.config.params import Params, to_dict
from mnist_pipeline.config.preflight import read_params_text
from mnist_pipeline.data.prepared import load_splits, pixel_mean_std, read_manifest
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.experiments.start import plan_start
from mnist_pipeline.model.networks import InputSpec, input_spec_from_manifest
from mnist_pipeline.testing import synthetic
from mnist_pipeline.train.run import train

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"default MLP": [], "cnn-fast": ["cnn-fast"], "cnn-best": ["cnn-best"]}
TARGETS = {"mnist": 0.99, "fashion-mnist": 0.93}  # validation accuracy to reach
# Synthetic train, valid, test rows in --quick mode: one batch of the presets' 256 per
# epoch, since the mode only shows that the check runs (on a CPU that emulates bf16,
# AVX2 only, every bf16 step of the CNNs takes seconds).
QUICK_ROWS = (256, 128, 0)
QUICK_EPOCHS = 2
TORCHRUN_TIMEOUT_S = 300  # the two-GPU run: a hung rendezvous must not hang the check
NVIDIA_SMI_TIMEOUT_S = 10

Split = tuple[torch.Tensor, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Data:
    dataset: str
    spec: InputSpec
    train: Split
    valid: Split


def load_data(prepared: Path | None, quick: bool) -> Data:
    """The prepared train/valid splits, or small synthetic ones (MNIST-like) without any."""
    if prepared is not None:
        manifest = read_manifest(prepared)
        data = load_splits(prepared, ("train", "valid"))
        train, valid = data["train"], data["valid"]
        if quick:
            train, valid = _head(train, QUICK_ROWS[0]), _head(valid, QUICK_ROWS[1])
        return Data(manifest["dataset"], input_spec_from_manifest(manifest), train, valid)
    train, valid, _ = synthetic.make_splits(QUICK_ROWS, seed=0)
    mean, std = pixel_mean_std(train[0].numpy())
    spec = InputSpec((28, 28), int(train[1].max()) + 1, mean, std)
    return Data("mnist", spec, train, valid)


def _head(split: Split, rows: int) -> Split:
    return split[0][:rows], split[1][:rows]


def setting_params(params_file: Path, presets_dir: Path, presets: list[str]) -> Params:
    """params.yaml with the presets applied, validated as the stages validate it."""
    text = read_params_text(params_file)
    return plan_start(text, None, presets_dir, presets, where=str(params_file)).params


def for_device(params: Params, device: torch.device, quick: bool) -> Params:
    """The setting as the check runs it: on `device`; on CUDA in bf16 and compiled (the
    gpu preset's choices); 2 epochs in quick mode; no early stopping (every epoch timed)."""
    train = dataclasses.replace(params.train, device=str(device), early_stopping_patience=0)
    if device.type == "cuda":
        train = dataclasses.replace(train, precision="bf16", compile=True)
    if quick:
        train = dataclasses.replace(train, epochs=min(train.epochs, QUICK_EPOCHS))
    return dataclasses.replace(params, train=train)


def time_setting(params: Params, data: Data, device: torch.device) -> dict[str, Any]:
    """Train once; epoch times and the time to the validation target."""
    started_s = time.perf_counter()
    splits = {"train": data.train, "valid": data.valid}
    result = train(params, splits, data.spec, data.dataset, device).result
    total_s = time.perf_counter() - started_s
    seconds = [log["epoch_seconds"] for log in result.history]
    accuracies = [log["valid/accuracy"] for log in result.history]
    target = TARGETS.get(data.dataset, TARGETS["mnist"])
    reached = next((i for i, acc in enumerate(accuracies) if acc >= target), None)
    return {
        "epochs": len(seconds),
        "first_epoch_s": seconds[0],
        "median_epoch_s": statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0],
        "total_s": total_s,
        "target": target,
        "time_to_target_s": None if reached is None else sum(seconds[: reached + 1]),
        "epoch_to_target": None if reached is None else reached + 1,
        "final_valid_accuracy": accuracies[-1],
        "precision": params.train.precision,
        "compile": params.train.compile,
    }


def torchrun_two_gpus(params: Params, prepared: Path | None, tmp: Path) -> dict[str, Any]:
    """The train stage under torchrun on two GPUs; skipped without two GPUs or data."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < 2 or prepared is None:
        reason = f"{gpus} GPU(s)" if gpus < 2 else "no prepared data (--data)"
        return {"skipped": reason}
    two = dataclasses.replace(
        params,
        distributed=dataclasses.replace(params.distributed, nproc_per_node=2, nnodes=1),
        train=dataclasses.replace(params.train, device="cuda"),
    )
    params_file = tmp / "params-torchrun.yaml"
    params_file.write_text(yaml.safe_dump(to_dict(two), sort_keys=False))
    out = tmp / "torchrun"
    command = [
        sys.executable,
        str(REPO / "stages" / "train.py"),
        *("--params", str(params_file), "--data", str(prepared)),
        *("--model", str(out / "model.pt"), "--log-dir", str(out / "log")),
        *("--timings", str(out / "timings.json")),
    ]
    started_s = time.perf_counter()
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"no result in {TORCHRUN_TIMEOUT_S} s"}
    if completed.returncode != 0:
        return {"failed": (completed.stderr.strip().splitlines() or ["no message"])[-1]}
    timings = json.loads((out / "timings.json").read_text())
    return {"wall_s": time.perf_counter() - started_s, "timings": timings}


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["driver"] = _driver_version()
    return info


def _driver_version() -> str:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "unknown (no nvidia-smi)"
    try:
        completed = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "unknown (nvidia-smi timed out)"
    lines = completed.stdout.split()
    return lines[0] if completed.returncode == 0 and lines else "unknown"


def report_lines(results: dict[str, dict[str, Any]], data: Data) -> list[str]:
    lines = [
        f"data: {data.dataset}, {len(data.train[1]):,} train / {len(data.valid[1]):,} valid",
        f"{'setting':<12} {'epochs':>6} {'1st epoch':>10} {'median':>8} "
        f"{'to target':>18} {'valid acc':>9}",
    ]
    for name, row in results.items():
        if row["time_to_target_s"] is None:
            to_target = f"not reached ({row['target']:.0%})"
        else:
            to_target = f"{row['time_to_target_s']:.1f} s (ep {row['epoch_to_target']})"
        lines.append(
            f"{name:<12} {row['epochs']:>6} {row['first_epoch_s']:>9.2f}s "
            f"{row['median_epoch_s']:>7.2f}s {to_target:>18} {row['final_valid_accuracy']:>9.4f}"
        )
    return lines


def main() -> None:
    try:
        check(parse_arguments())
    except PipelineError as exc:  # bad data, params or presets: one line, exit 1
        sys.exit(f"gpu_check: {exc}")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs, small data")
    parser.add_argument("--data", type=Path, help="prepared data (default: synthetic, quick)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--presets-dir", type=Path, default=REPO / "presets")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args()


def check(args: argparse.Namespace) -> None:
    """The whole check as `args` asks for it; prints the report."""
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise PipelineError(
            f"--device {args.device!r} is not a device (cuda, cuda:N, cpu)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; use --device cpu --quick to test the check")
    if args.data is None and not args.quick:
        sys.exit("gpu_check: --data DIR is needed without --quick (run `dvc repro prepare`)")
    data = load_data(args.data, args.quick)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name, presets in SETTINGS.items():
            params = setting_params(args.params, args.presets_dir, presets)
            results[name] = time_setting(for_device(params, device, args.quick), data, device)
            print(f"gpu_check: {name} done in {results[name]['total_s']:.1f} s", flush=True)
        fast = setting_params(args.params, args.presets_dir, ["cnn-fast"])
        torchrun = torchrun_two_gpus(for_device(fast, device, args.quick), args.data, Path(tmp))
    env = environment(device)
    print("\n".join(report_lines(results, data)))
    print(f"torchrun on 2 GPUs (cnn-fast): {json.dumps(torchrun)}")
    print(f"environment: {json.dumps(env)}")
    if args.json is not None:
        payload = {"results": results, "torchrun": torchrun, "environment": env}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
