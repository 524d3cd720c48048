"""Time the project's training loop against the PyTorch tutorial's, in one process.

Rounds alternate (tutorial, project, project, tutorial, ...) on the same data,
threads and seed: (a) the tutorial's loop exactly as written (tutorial_loop.py:
its MLP, SGD, DataLoader with shuffle, loss_batch), (b) `mnist_pipeline.train.loop.fit` with the
same model, optimizer and batch size. An epoch is a train pass plus a valid
pass in both. Reports median seconds per epoch, train samples per second, the
ratio b/a and the valid loss both reach, at batch 64 (target b/a <= 0.5) and,
one epoch each, 256 and 1024. Then the faithfulness and time-to-result runs
(tutorial_result.py). Synthetic full-size data by default; `--raw DIR` or
`--idx-dir DIR` for a real data set. Needs PYTHONPATH=src (or make install).

    .venv/bin/python -m benchmarks.bench_train
    .venv/bin/python -m benchmarks.bench_train --modes faithfulness \\
        time-to-result --idx-dir /usr/share/datasets/fashion-mnist --dataset fashion-mnist
"""

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from benchmarks import train_support as ts
from benchmarks.tutorial_result import faithfulness, run_tutorial, time_to_result
from mnist_pipeline.config.params import Params

REPO = Path(__file__).resolve().parents[1]
MODES = ("compare", "faithfulness", "time-to-result")
QUICK_ROWS = (10_000, 2_000, 2_000)


def compare(data: dict[str, Any], batch_size: int, rounds: int, epochs: int, seed: int) -> dict:
    """Both loops `rounds` times each (alternating order), `epochs` epochs per run."""
    load = ts.load_start(f"compare at batch {batch_size}")
    model_cfg, tutorial_cfg = ts.tutorial_configs()
    cfg = dataclasses.replace(tutorial_cfg, batch_size=batch_size, epochs=epochs)
    seconds: dict[str, list[float]] = {"tutorial": [], "project": []}
    cpu_seconds: dict[str, list[float]] = {"tutorial": [], "project": []}
    last: dict[str, dict] = {}
    for index in range(rounds):
        for loop in ("tutorial", "project") if index % 2 == 0 else ("project", "tutorial"):
            if loop == "tutorial":
                records = run_tutorial(data, epochs, batch_size, seed)
            else:
                records = ts.run_project(data, model_cfg, cfg, seed)
            seconds[loop] += [r["epoch_seconds"] for r in records]
            cpu_seconds[loop] += [r["epoch_cpu_seconds"] for r in records]
            last[loop] = records[-1]
    rows = len(data["train"][1])
    row: dict[str, Any] = {"batch_size": batch_size, "epochs": epochs, "rounds": rounds}
    for loop, values in seconds.items():
        row[loop] = {
            "epoch_s": ts.median(values),
            "epoch_cpu_s": ts.median(cpu_seconds[loop]),
            "samples_per_s": rows / ts.median(values),
            "valid_loss": last[loop]["valid/loss"],
            "valid_accuracy": last[loop]["valid/accuracy"],
        }
    row["ratio"] = row["project"]["epoch_s"] / row["tutorial"]["epoch_s"]
    row["cpu_ratio"] = row["project"]["epoch_cpu_s"] / row["tutorial"]["epoch_cpu_s"]
    row.update(load_start=load, load_end=ts.load_now())
    return row


def warm_up(data: dict[str, Any], seed: int) -> None:
    """One small untimed epoch of each loop: library initialization stays out of the timings."""
    few = {**data, **{k: (data[k][0][:2048], data[k][1][:2048]) for k in ("train", "valid")}}
    run_tutorial(few, 1, 64, seed)
    model_cfg, cfg = ts.tutorial_configs()
    ts.run_project(few, model_cfg, dataclasses.replace(cfg, epochs=1), seed)


def run(
    data: dict[str, Any] | None = None,
    raw: Path | None = None,
    rounds: int = 3,
    epochs: int = 2,
    batch_sizes: tuple[int, ...] = (64, 256, 1024),
    faithful_epochs: int = 25,
    modes: tuple[str, ...] = MODES,
    seed: int = 0,
    threads: int = 0,
    params: Params | None = None,
) -> dict[str, Any]:
    """The chosen modes on `data` ({"name", "dataset", "train", "valid"}; default: `raw` or
    synthetic)."""
    result: dict[str, Any] = {"threads": ts.set_threads(threads), "load_start": ts.load_now()}
    data = data or ts.load_data(raw, ts.FULL_ROWS, seed)
    result.update(data=data["name"], train_rows=len(data["train"][1]), torch=torch.__version__)
    print(f"bench_train: {result['data']}, {result['threads']} threads, seed {seed}")
    if "compare" in modes:
        warm_up(data, seed)
        result["compare"] = [
            compare(data, bs, rounds, epochs if bs == batch_sizes[0] else 1, seed)
            for bs in batch_sizes
        ]
        print_compare(result["compare"], result["threads"])
    if "faithfulness" in modes:
        result["faithfulness"] = faithfulness(data, faithful_epochs, seed)
    if "time-to-result" in modes:
        faithful = result.get("faithfulness")
        tutorial = faithful["tutorial"] if faithful else None
        if tutorial is None:
            batch_size = ts.tutorial_configs()[1].batch_size
            tutorial = run_tutorial(data, faithful_epochs, batch_size, seed)
        setting = params or ts.committed_params()
        result["time_to_result"] = time_to_result(data, tutorial, setting, seed)
    result["load_end"] = ts.load_now()
    return result


def print_compare(rows: list[dict], threads: int) -> None:
    print(
        f"\nTutorial setting (SGD lr 0.001, MLP 784-128-256-10), {threads} threads; "
        "s/ep = median wall s of train + valid pass; cpu = same in process CPU s"
    )
    header = (
        "batch",
        "tut s/ep",
        "proj s/ep",
        "ratio",
        "cpu ratio",
        "tut samp/s",
        "proj samp/s",
        "tut vloss",
        "proj vloss",
        "ep x rnd",
    )
    widths = (5, 8, 9, 6, 9, 10, 11, 9, 10, 8)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)) + "  load")
    for r in rows:
        t, p = r["tutorial"], r["project"]
        print(
            f"{r['batch_size']:>5} {t['epoch_s']:>8.3f} {p['epoch_s']:>9.3f} {r['ratio']:>6.2f} "
            f"{r['cpu_ratio']:>9.2f} {t['samples_per_s']:>10.0f} {p['samples_per_s']:>11.0f} "
            f"{t['valid_loss']:>9.4f} {p['valid_loss']:>10.4f} {r['epochs']:>4}x{r['rounds']:<3}  "
            f"{r['load_start'][0]}->{r['load_end'][0]}"
        )


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--raw", type=Path, help="raw data dir with dataset.json (default: synthetic)"
    )
    parser.add_argument(
        "--idx-dir", type=Path, help="build the raw dir from these four idx .gz files"
    )
    parser.add_argument("--dataset", default="mnist", help="data set name for --idx-dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each loop per batch size")
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs per run at the first batch size"
    )
    parser.add_argument("--faithful-epochs", type=int, default=25)
    parser.add_argument(
        "--quick", action="store_true", help="small data, 1 round, 1 epoch, 3 faithful epochs"
    )


def train_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """run()'s keyword arguments from the parsed command line (--quick applied)."""
    kwargs = {
        "rounds": args.rounds,
        "epochs": args.epochs,
        "seed": args.seed,
        "threads": args.threads,
        "faithful_epochs": args.faithful_epochs,
    }
    if args.quick:
        kwargs.update(rounds=1, epochs=1, faithful_epochs=3)
    return kwargs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    def bench(raw: Path | None) -> dict[str, Any]:
        data = ts.load_data(raw or args.raw, QUICK_ROWS if args.quick else ts.FULL_ROWS, args.seed)
        return run(
            data, modes=tuple(args.modes), batch_sizes=tuple(args.batch_sizes), **train_kwargs(args)
        )

    result = ts.with_raw_dir(args.idx_dir, args.dataset, bench)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
