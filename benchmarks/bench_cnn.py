"""The CNN presets against their targets: `dvc repro` of a throwaway copy per preset
(bench_repro's), reporting the train stage's wall time (`dvc repro train` on its own,
after its upstream: Python's start, data loading, every epoch with its validation pass
and the writes, DVC's checks included) and the test accuracy.

Targets (TARGETS), on full Fashion-MNIST: cnn-fast >= 93.0% test accuracy with the train
stage <= 30 s; cnn-best >= 95.0% with <= 10 min; both measured on a CPU with bf16 kernels
(the presets train in bf16; where the CPU emulates it, each preset says so before it runs,
since its times are then many times longer). Run on the real data set:

    .venv/bin/python -m benchmarks.bench_cnn --idx-dir /usr/share/datasets/fashion-mnist \\
        --dataset fashion-mnist
"""

import argparse
import copy
from pathlib import Path
from typing import Any

from benchmarks import bench_repro, bench_train
from benchmarks import train_support as ts
from mnist_pipeline.experiments.presets import load_preset
from mnist_pipeline.runtime import resolve_device, slow_precision_warning

REPO = Path(__file__).resolve().parents[1]
TARGETS = {  # preset -> (test accuracy at least, train stage seconds at most)
    "cnn-fast": (0.930, 30.0),
    "cnn-best": (0.950, 600.0),
}
QUICK_PARAMS = {"train": {"epochs": 1}, "evaluate": {"mc_samples": 0}}


def preset_params(name: str, quick: bool) -> dict[str, Any]:
    """The preset's overrides (nested, as params.yaml), cut to one epoch when quick."""
    params = load_preset(REPO / "presets", name)
    if quick:
        params = copy.deepcopy(params)
        for section, values in QUICK_PARAMS.items():
            params.setdefault(section, {}).update(values)
    return params


def run(
    raw: Path | None,
    workdir: Path | None,
    seed: int,
    rows: tuple[int, int, int],
    quick: bool = False,
    presets: tuple[str, ...] = tuple(TARGETS),
) -> list[dict[str, Any]]:
    """Each of `presets` (default: every one with a target) through `dvc repro`."""
    results = []
    for name in presets:
        accuracy, seconds = TARGETS[name]
        print(f"\n-- {name}", flush=True)
        params = preset_params(name, quick)
        precision = params.get("train", {}).get("precision")  # None: params.yaml's
        if precision is not None:
            slow = slow_precision_warning(resolve_device("auto"), precision, "train.precision")
            if slow is not None:
                print(f"bench_cnn: warning: {name}: {slow}", flush=True)
        result = bench_repro.run(raw, workdir, seed, rows, params, ("prepare", "train"))
        wall_s = result["stage_seconds"]["train"]
        result.update(
            preset=name,
            epochs=params["train"]["epochs"],
            train_stage_wall_s=wall_s,
            target_accuracy=accuracy,
            target_train_seconds=seconds,
            met=result["test_accuracy"] >= accuracy and wall_s <= seconds,
        )
        results.append(result)
    return results


def summary_lines(results: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(what, measured, target) rows for run_all's table."""
    return [
        (
            f"{r['preset']} ({r['data']}, {r['epochs']} epochs): test accuracy / train stage",
            f"{r['test_accuracy']:.2%} / {r['train_stage_wall_s']:.1f} s"
            + ("" if r["met"] else "  (target missed)"),
            f">= {r['target_accuracy']:.1%}, <= {r['target_train_seconds']:.0f} s",
        )
        for r in results
    ]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_train.add_data_arguments(parser)
    parser.add_argument("--workdir", type=Path, help="where temporary data goes (default: $TMPDIR)")
    args = parser.parse_args(argv)
    rows = bench_train.QUICK_ROWS if args.quick else ts.FULL_ROWS

    def bench(raw: Path | None) -> list[dict[str, Any]]:
        return run(raw or args.raw, args.workdir, args.seed, rows, args.quick)

    results: list[dict[str, Any]] = ts.with_raw_dir(args.idx_dir, args.dataset, bench)
    for what, measured, target in summary_lines(results):
        print(f"{what}: {measured}   [target {target}]")
    return results


if __name__ == "__main__":
    main()
