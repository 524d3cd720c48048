"""Wall time of the whole pipeline: `dvc repro` with default params in a throwaway copy.

The copy (git + DVC, made by mnist_pipeline.testing.dvc_repo) fetches from a local raw
directory (fetch.source, with its md5s as fetch.checksums): full-size
synthetic MNIST by default, or `--raw DIR` (for Fashion-MNIST also set
--dataset). After the repro the evaluate stage's command runs once more on
its own, for the evaluate timing; train_seconds comes from the train stage's
logs/train/timings.json. Needs PYTHONPATH=src (or make install), git and dvc.

    .venv/bin/python -m benchmarks.bench_repro
"""

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import train_support as ts
from mnist_pipeline.data.raw_description import read_description
from mnist_pipeline.fileio import read_json
from mnist_pipeline.testing import synthetic
from mnist_pipeline.testing.dvc_repo import env_for, make_repo, set_params, stages_run
from mnist_pipeline.testing.dvc_repo import run as run_in

REPO = Path(__file__).resolve().parents[1]
RERUN = "the dvc repro in the throwaway copy did not write it"


def run(
    raw: Path | None = None,
    workdir: Path | None = None,
    seed: int = 0,
    rows: tuple[int, int, int] = ts.FULL_ROWS,
    params: dict | None = None,
    timed_stages: tuple[str, ...] = (),
) -> dict[str, Any]:
    """`dvc repro` of a fresh copy fed from `raw` (default: synthetic data of `rows`).
    `params`: updates to params.yaml (nested dict) on top of fetch.source/checksums.
    `timed_stages`: `dvc repro STAGE` for each in turn before the plain `dvc repro`, each
    timed (`stage_seconds`: its wall time, DVC's own checks included): list a stage's
    upstream first (e.g. prepare, train) so that each time is that stage's alone."""
    load = ts.load_start("dvc repro")
    with tempfile.TemporaryDirectory(prefix="bench-repro-", dir=workdir) as tmp_name:
        tmp = Path(tmp_name)
        if raw is None:
            splits = synthetic.make_splits(rows, seed)
            raw = synthetic.write_raw_dir(tmp / "raw", "pickle", splits)
            del splits
        description = read_description(raw)
        repo = make_repo(tmp / "repo", REPO)
        fetch = {
            "dataset": description["dataset"],
            "source": str(Path(raw).resolve()),
            "checksums": {name: f["md5"] for name, f in description["files"].items()},
        }
        set_params(repo, {**(params or {}), "fetch": fetch})
        stage_seconds, outputs = {}, []
        for stage in (*timed_stages, None):
            started = time.perf_counter()
            outputs.append(run_in(repo, "dvc", "repro", *([stage] if stage else [])).stdout)
            stage_seconds[stage or "rest"] = time.perf_counter() - started
        result: dict[str, Any] = {
            "data": description["dataset"],
            "repro_seconds": sum(stage_seconds.values()),
            "stages_run": [stage for output in outputs for stage in stages_run(output)],
        }
        if timed_stages:
            result["stage_seconds"] = stage_seconds
        # dvc.yaml's train cmd writes it (--timings): an untracked log, not an output.
        train_timings = read_json(repo / "logs/train/timings.json", RERUN)
        result["train_seconds"] = train_timings["train_seconds"]
        result["evaluate_seconds"] = time_stage(repo, "evaluate")
        evaluation = read_json(repo / "metrics/evaluate.json", RERUN)
        result["test_accuracy"] = evaluation["test"]["accuracy"]
    result.update(load_start=load, load_end=ts.load_now())
    _print(result)
    return result


def time_stage(repo: Path, stage: str) -> float:
    """Wall seconds of one stage's command from the copy's dvc.yaml (as DVC runs it)."""
    cmd = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    started = time.perf_counter()
    done = subprocess.run(
        cmd, shell=True, cwd=repo, env=env_for(repo), capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{stage} failed: {done.stderr.strip()[-2000:]}")
    return seconds


def _print(r: dict[str, Any]) -> None:
    print(
        f"\ndvc repro ({r['data']}; stages {', '.join(r['stages_run'])}): "
        f"{r['repro_seconds']:.1f} s, of which train {r['train_seconds']:.1f} s; evaluate "
        f"stage alone {r['evaluate_seconds']:.1f} s; test accuracy {r['test_accuracy']:.4f}; "
        f"load {r['load_start']} -> {r['load_end']}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, help="raw data dir with dataset.json")
    parser.add_argument("--workdir", type=Path, help="where temporary data goes (default: $TMPDIR)")
    args = parser.parse_args(argv)
    return run(args.raw, args.workdir)


if __name__ == "__main__":
    main()
