"""Every benchmark in turn (what `make bench` runs), then one summary table.

1. bench_prepare: the prepare stage's time and peak memory;
2. bench_train: the project's loop against the PyTorch tutorial's (speed at
   batch 64/256/1024, faithfulness over the tutorial's 25 epochs, time to the
   tutorial's result with the default config);
3. bench_repro: `dvc repro` of the whole pipeline with default params in a
   throwaway copy, and the evaluate stage on its own;
4. bench_distributed: the train stage as 1 process x 2 threads against 2
   processes x 1 thread (torchrun + DDP), default params, 5 epochs;
5. bench_reference: the pytorch/examples MNIST recipe on the same splits, 14 epochs
   (about 7 minutes of training on a 2-core CPU), its best test accuracy and the
   training time to it;
6. bench_cnn: `dvc repro` with each CNN preset (cnn-fast, cnn-best) against its
   accuracy and train-stage time targets (about 10 minutes on a 2-core CPU), and
   cnn-fast's train stage over the reference's time to its best.
Synthetic full-size data by default; `--idx-dir DIR --dataset NAME` or `--raw
DIR` for a real data set. The benchmarks run one after another, never at once;
each reports the load averages, since other processes skew the timings.

    make bench BENCH_ARGS="--json bench.json"
    .venv/bin/python -m benchmarks.run_all --quick
"""

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks import (
    bench_cnn,
    bench_distributed,
    bench_prepare,
    bench_reference,
    bench_repro,
    bench_train,
)
from benchmarks import train_support as ts

STEPS = ("prepare", "train", "repro", "distributed", "reference", "cnn")
QUICK_REPRO_PARAMS = {"train": {"epochs": 2}, "evaluate": {"mc_samples": 0}}


def run(args: argparse.Namespace, raw: Path | None) -> dict[str, Any]:
    results: dict[str, Any] = {"threads": ts.set_threads(args.threads)}
    rows = bench_train.QUICK_ROWS if args.quick else ts.FULL_ROWS
    if "prepare" in args.steps:
        print("== bench_prepare", flush=True)
        load = ts.load_start("bench_prepare")
        raws = {f"{args.dataset} (raw dir)": raw} if raw else None
        results["prepare"] = bench_prepare.run(raws, args.workdir, seed=args.seed)
        results["prepare_load"] = [load, ts.load_now()]
    if "train" in args.steps:
        print("\n== bench_train", flush=True)
        data = ts.load_data(raw, rows, args.seed)
        results["train"] = bench_train.run(data, **bench_train.train_kwargs(args))
        del data
    if "repro" in args.steps:
        print("\n== bench_repro", flush=True)
        params = QUICK_REPRO_PARAMS if args.quick else None
        results["repro"] = bench_repro.run(raw, args.workdir, args.seed, rows, params)
    if "distributed" in args.steps:
        print("\n== bench_distributed", flush=True)
        epochs = 1 if args.quick else 5
        results["distributed"] = bench_distributed.run(raw, epochs, seed=args.seed, rows=rows)
    if "reference" in args.steps:
        print("\n== bench_reference", flush=True)
        data = ts.load_data(raw, rows, args.seed)
        epochs = 1 if args.quick else bench_reference.EPOCHS
        results["reference"] = bench_reference.run(data, epochs)
        del data
    if "cnn" in args.steps:
        print("\n== bench_cnn", flush=True)
        presets = tuple(args.presets)
        results["cnn"] = bench_cnn.run(raw, args.workdir, args.seed, rows, args.quick, presets)
    return results


def summary(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, measured, target) rows."""
    lines = [("torch threads", str(results["threads"]), "")]
    for label, r in results.get("prepare", {}).items():
        lines.append(
            (
                f"prepare: {label}",
                f"{r['seconds']:.1f} s, {r['peak_rss_mib']:.0f} MiB",
                "<= 10 s, <= 1024 MiB",
            )
        )
    train = results.get("train", {})
    for r in train.get("compare", []):
        t, p = r["tutorial"], r["project"]
        lines.append(
            (
                f"train batch {r['batch_size']}: s/epoch tutorial -> project",
                f"{t['epoch_s']:.3f} -> {p['epoch_s']:.3f} (x{r['ratio']:.2f}; "
                f"CPU s x{r['cpu_ratio']:.2f}), "
                f"{t['samples_per_s']:.0f} -> {p['samples_per_s']:.0f} samples/s",
                "x <= 0.5" if r["batch_size"] == 64 else "",
            )
        )
    if "faithfulness" in train:
        f = train["faithfulness"]
        diffs = f"{f['abs_diff_first']:.4f} / {f['abs_diff_last']:.4f}"
        what = f"faithfulness ({f['epochs']} epochs): |valid loss diff| first/last"
        lines.append((what, diffs, "<= 0.03"))
    if "time_to_result" in train:
        lines.append(_time_to_result_line(train["time_to_result"]))
    if "repro" in results:
        r = results["repro"]
        lines.append(
            (
                "dvc repro (default params): total / train / evaluate",
                f"{r['repro_seconds']:.1f} / {r['train_seconds']:.1f} / "
                f"{r['evaluate_seconds']:.1f} s",
                "",
            )
        )
    for r in results.get("distributed", []):
        what = f"train stage, {r['processes']} process(es) x {r['threads']} thread(s)"
        speed = f"{r['epoch_s']:.2f} s/epoch, {r['samples_per_s']:.0f} samples/s"
        lines.append((what, speed, ""))
    lines += bench_cnn.summary_lines(results.get("cnn", []))
    if "reference" in results:
        lines += bench_reference.summary_lines(results["reference"], results.get("cnn", []))
    return lines


def _time_to_result_line(r: dict[str, Any]) -> tuple[str, str, str]:
    what = f"time to tutorial's valid acc {r['tutorial_valid_accuracy']:.4f}: tutorial -> project"
    if r["project_seconds"] is None:
        return what, f"{r['tutorial_seconds']:.1f} s -> never reached", "ratio <= 0.05"
    robust_ratio = r["project_seconds"] / r["tutorial_seconds_median_based"]
    measured = (
        f"{r['tutorial_seconds']:.1f} s -> {r['project_seconds']:.1f} s (epoch "
        f"{r['project_epoch']}), ratio {r['ratio']:.3f} ({robust_ratio:.3f} with "
        "the tutorial's epochs x median epoch)"
    )
    return what, measured, "ratio <= 0.05"


def print_summary(lines: list[tuple[str, str, str]], loads: list[list[float]]) -> None:
    width = max(len(what) for what, _, _ in lines)
    print(f"\n== Summary (load averages {loads[0]} -> {loads[1]})")
    for what, measured, target in lines:
        print(f"{what:<{width}}  {measured}" + (f"   [target {target}]" if target else ""))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_train.add_data_arguments(parser)
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument(
        "--presets", nargs="+", choices=list(bench_cnn.TARGETS), default=list(bench_cnn.TARGETS)
    )
    parser.add_argument("--workdir", type=Path, help="where temporary data goes (default: $TMPDIR)")
    parser.add_argument("--json", type=Path, help="also write every result here")
    args = parser.parse_args(argv)
    load = ts.load_start("run_all")
    results = ts.with_raw_dir(args.idx_dir, args.dataset, lambda raw: run(args, raw or args.raw))
    results["load"] = [load, ts.load_now()]
    print_summary(summary(results), results["load"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
