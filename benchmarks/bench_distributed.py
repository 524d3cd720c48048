"""Throughput of the train stage with one process versus several (torchrun + DDP).

Runs `stages/train.py` as DVC would, with the default params except the epochs,
in turn as: 1 process x 2 threads, 2 processes x 1 thread (the two ways to use
this 2-core machine), and 1 process x 1 thread for reference. Reports the
median epoch seconds (train + valid pass, from the training log), train samples
per second, the stage's wall time (including torchrun's start-up) and the
final validation accuracy. Synthetic full-size data by default; `--raw DIR`
for a real data set as the fetch stage leaves it. Needs PYTHONPATH=src.

    .venv/bin/python -m benchmarks.bench_distributed --epochs 5
    .venv/bin/python -m benchmarks.bench_distributed --epochs 1 --set \
        model.name=cnn "model.hidden_sizes=[128]" model.dropout=0.3 train.batch_size=128
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import train_support as ts
from mnist_pipeline.data import prepared
from mnist_pipeline.data.raw_formats import read_raw
from mnist_pipeline.testing import synthetic
from mnist_pipeline.testing.dvc_repo import committed_text

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = ((1, 2), (2, 1), (1, 1))  # (processes, threads per process)


def prepare(raw: Path | None, tmp: Path, seed: int, rows: tuple[int, int, int]) -> Path:
    """The prepared data set in `tmp`, from `raw` or synthetic data of `rows`."""
    if raw is None:
        raw = synthetic.write_raw_dir(tmp / "raw", "pickle", synthetic.make_splits(rows, seed))
    parsed, description = read_raw(raw)
    names = description["class_names"]
    prepared.write_prepared(parsed, names, description["dataset"], 10_000, tmp / "prepared")
    return tmp / "prepared"


def run_layout(
    data: Path, tmp: Path, processes: int, threads: int, epochs: int, overrides: dict[str, Any]
) -> dict:
    params = yaml.safe_load(committed_text(REPO, "params.yaml"))  # the shipped defaults
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        params[section][key] = value
    params["train"].update(device="cpu", epochs=epochs, threads=threads)
    params["distributed"]["nproc_per_node"] = processes
    out = tmp / f"{processes}x{threads}"
    (tmp / f"{out.name}.yaml").write_text(yaml.safe_dump(params))
    argv = [
        sys.executable,
        str(REPO / "stages" / "train.py"),
        "--params",
        str(tmp / f"{out.name}.yaml"),
        "--data",
        str(data),
        "--model",
        str(out / "model.pt"),
        "--log-dir",
        str(out / "live"),
        "--timings",
        str(out / "timings.json"),
    ]
    load = ts.load_start(f"train {processes} x {threads}")
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    timings = json.loads((out / "timings.json").read_text())
    epoch_s = statistics.median(timings["epoch_seconds"])
    rows = json.loads((data / "manifest.json").read_text())["splits"]["train"]["rows"]
    return {
        "processes": processes,
        "threads": threads,
        "epoch_s": epoch_s,
        "samples_per_s": rows / epoch_s,
        "stage_wall_s": wall_s,
        "valid_accuracy": _column(out / "live" / "plots" / "accuracy.tsv", "valid")[-1],
        "load": [load, ts.load_now()],
    }


def _column(tsv: Path, name: str) -> list[float]:
    """The column `name` of a training-log TSV (header: epoch, train, valid)."""
    header, *lines = tsv.read_text().splitlines()
    index = header.split("\t").index(name)
    return [float(line.split("\t")[index]) for line in lines]


def run(
    raw: Path | None,
    epochs: int,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    rows: tuple[int, int, int] = ts.FULL_ROWS,
) -> list[dict[str, Any]]:
    """Every layout in turn on the same prepared data; `overrides`: {"section.key": value}."""
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp_name:
        tmp = Path(tmp_name)
        data = prepare(raw, tmp, seed, rows)
        results = [run_layout(data, tmp, p, t, epochs, overrides or {}) for p, t in LAYOUTS]
    for r in results:
        print(
            f"{r['processes']} process(es) x {r['threads']} thread(s): "
            f"{r['epoch_s']:.2f} s/epoch, "
            f"{r['samples_per_s']:.0f} samples/s, stage {r['stage_wall_s']:.1f} s, "
            f"valid acc {r['valid_accuracy']:.4f}, load {r['load']}"
        )
    return results


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, help="raw data dir with dataset.json")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="params to change (YAML values), e.g. model.name=cnn",
    )
    args = parser.parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    return run(args.raw, args.epochs, overrides)


if __name__ == "__main__":
    main()
