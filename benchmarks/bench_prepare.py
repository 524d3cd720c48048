"""Time the prepare stage and measure its peak memory, as DVC runs it (a subprocess).

By default it writes full-size synthetic MNIST (50k/10k/10k) in both raw formats
and prepares each; `--raw DIR` measures an existing raw directory instead, and
`--idx-dir DIR` first builds one from four idx .gz files (e.g. Debian's
/usr/share/datasets/fashion-mnist). Budget: <= 10 s and <= 1 GiB peak RSS.
Needs the package importable: installed (make install) or PYTHONPATH=src.

    .venv/bin/python -m benchmarks.bench_prepare
    .venv/bin/python -m benchmarks.bench_prepare \\
        --idx-dir /usr/share/datasets/fashion-mnist --dataset fashion-mnist
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mnist_pipeline.data.registry import IDX_FILES, get_dataset
from mnist_pipeline.fileio import file_digest
from mnist_pipeline.testing import synthetic

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / "stages" / "prepare.py"
FULL_ROWS = (50_000, 10_000, 10_000)
# Runs argv (stage output to /dev/null) and prints [wall seconds, peak RSS KiB] of that process;
# exits with the stage's status.
_LAUNCHER = """
import json, os, sys, time
devnull = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=devnull)
_, status, usage = os.wait4(pid, 0)
print(json.dumps([time.perf_counter() - started, usage.ru_maxrss]))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(
    raw_dirs: dict[str, Path] | None = None,
    workdir: Path | None = None,
    shard_size: int = 10_000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Prepare each raw dir (default: synthetic pickle + idx); return {label: measurements}."""
    with tempfile.TemporaryDirectory(prefix="bench-prepare-", dir=workdir) as tmp_name:
        tmp = Path(tmp_name)
        params = tmp / "params.yaml"
        params.write_text(f"prepare:\n  shard_size: {shard_size}\n")
        if raw_dirs is None:
            splits = synthetic.make_splits(FULL_ROWS, seed)
            raw_dirs = {
                f"synthetic {fmt}": synthetic.write_raw_dir(tmp / f"raw-{fmt}", fmt, splits)
                for fmt in ("pickle", "idx")
            }
            del splits  # the stage runs should not share the machine with 55 MB of test data
        results = {}
        for index, (label, raw) in enumerate(raw_dirs.items()):
            results[label] = measure(raw, tmp / f"prepared-{index}", params)
    _print_table(results)
    return results


def measure(raw_dir: Path, out_dir: Path, params: Path) -> dict[str, Any]:
    """Run stages/prepare.py once: wall seconds, peak RSS of that process, the manifest."""
    paths = [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    argv = [sys.executable, str(STAGE), "--params", str(params)]
    argv += ["--raw", str(raw_dir), "--out", str(out_dir)]
    # Linux children inherit the high-water RSS of the process they fork from (this one
    # held the synthetic data), so a small launcher process spawns the stage and reports.
    launched = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if launched.returncode != 0:
        raise RuntimeError(f"prepare failed on {raw_dir}: {launched.stderr.strip()}")
    seconds, peak_rss_kib = json.loads(launched.stdout)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_rss_kib / 1024, 1),
        "rows": {name: split["rows"] for name, split in manifest["splits"].items()},
        "dataset": manifest["dataset"],
        "manifest_sha": file_digest(out_dir / "manifest.json"),  # equal => identical shards
    }


def raw_dir_from_idx(idx_dir: Path, dest: Path, dataset: str) -> Path:
    """A raw dir as the fetch stage leaves it, from four existing idx .gz files."""
    dest.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in IDX_FILES.values():
        shutil.copyfile(idx_dir / name, dest / name)
        files[name] = {
            "md5": file_digest(dest / name, "md5"),
            "bytes": (dest / name).stat().st_size,
        }
    class_names = list(get_dataset(dataset).class_names)
    description = {"dataset": dataset, "format": "idx", "class_names": class_names, "files": files}
    (dest / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
    return dest


def _print_table(results: dict[str, dict[str, Any]]) -> None:
    print(f"{'raw data':<28} {'seconds':>8} {'peak RSS MiB':>13}  rows (train/valid/test)")
    for label, r in results.items():
        rows = "/".join(str(n) for n in r["rows"].values())
        print(f"{label:<28} {r['seconds']:>8.2f} {r['peak_rss_mib']:>13.1f}  {rows}")


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, action="append", help="raw dir to measure (repeatable)")
    parser.add_argument(
        "--idx-dir", type=Path, help="build a raw dir from these four idx .gz files"
    )
    parser.add_argument("--dataset", default="mnist", help="data set name for --idx-dir")
    parser.add_argument("--workdir", type=Path, help="where temporary data goes (default: $TMPDIR)")
    parser.add_argument("--shard-size", type=int, default=10_000)
    args = parser.parse_args(argv)
    raw_dirs = {str(raw): raw for raw in args.raw or []}
    with tempfile.TemporaryDirectory(prefix="bench-raw-", dir=args.workdir) as tmp:
        if args.idx_dir:
            raw_dirs[f"{args.dataset} (idx)"] = raw_dir_from_idx(
                args.idx_dir, Path(tmp), args.dataset
            )
        return run(raw_dirs or None, args.workdir, args.shard_size)


if __name__ == "__main__":
    main()
