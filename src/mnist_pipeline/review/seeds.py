"""Multi-seed mode: train the same params with K seeds through DVC's experiment queue and
summarize every metric as mean ± std (metrics/seeds.json, git-tracked, which the review
report compares between revisions).

`dvc` runs through a `Runner` (argv -> stdout, raising PipelineError on failure), so the
orchestration is tested with a fake one; scripts/seeds.py passes the real command line.
"""

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.review.report import numeric_leaves
from mnist_pipeline.review.significance import seed_summary

MIN_SEEDS = 2  # a standard deviation needs two runs
WORKER_STATUS = re.compile(r"Worker status: (\d+) active, (\d+) idle")
QUEUE_ACTIVE = ("Queued", "Running")

Runner = Callable[[Sequence[str]], str]  # dvc arguments -> its stdout


def check_seed_count(k: int) -> None:
    """Refuse K < 2 before any work: one run has no spread to report."""
    if k < MIN_SEEDS:
        raise PipelineError(f"--k {k}: a multi-seed run needs at least {MIN_SEEDS} seeds")


def queued_name(output: str) -> str:
    """The experiment name in `dvc exp run --queue`'s output."""
    found = re.search(r"Queued experiment '([^']+)'", output)
    if found is None:
        raise PipelineError(f"dvc exp run --queue named no experiment: {output.strip()!r}")
    return found.group(1)


def queue_seed_runs(seeds: Sequence[int], dvc: Runner) -> dict[str, int]:
    """Queue one experiment per seed (`-S seed=<s>`); returns experiment name -> seed."""
    return {queued_name(dvc(["exp", "run", "--queue", "-S", f"seed={s}"])): s for s in seeds}


def queue_statuses(output: str) -> dict[str, str]:
    """Experiment name -> status from `dvc queue status` (task, name, created, status)."""
    rows = [line.split() for line in output.splitlines()[1:] if line.strip()]
    return {row[1]: row[-1] for row in rows if len(row) >= 4 and row[0] != "Worker"}


def live_workers(output: str) -> int:
    """Queue workers alive, from `dvc queue status`'s "Worker status: N active, M idle"."""
    match = WORKER_STATUS.search(output)
    return int(match.group(1)) + int(match.group(2)) if match else 0


def wait_for(
    names: Sequence[str],
    dvc: Runner,
    timeout_s: float,
    poll_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll `dvc queue status` until none of `names` is queued or running (at most
    timeout_s); every one must then have succeeded."""
    deadline = clock() + timeout_s
    while True:
        output = dvc(["queue", "status"])
        statuses = queue_statuses(output)
        ours = {name: statuses.get(name, "missing") for name in names}
        busy = [name for name, status in ours.items() if status in QUEUE_ACTIVE]
        if not busy:
            break
        # A DVC queue worker can exit while a task is still queued (seen after other
        # queue runs in the same repository): start one again rather than wait forever.
        if "Running" not in ours.values() and live_workers(output) == 0:
            dvc(["queue", "start", "-j", "1"])
        if clock() > deadline:
            raise PipelineError(
                f"{len(busy)} seed run(s) still queued or running after {timeout_s:.0f} s "
                f"({', '.join(busy)}); `dvc queue status` shows them, `dvc queue kill` stops them"
            )
        sleep(poll_s)
    failed = [f"{name} ({status})" for name, status in ours.items() if status != "Success"]
    if failed:
        raise PipelineError(
            f"seed run(s) did not succeed: {', '.join(failed)}; see `dvc queue logs NAME`"
        )


def experiment_metrics(shown: Sequence[Mapping[str, Any]], name: str) -> dict[str, float]:
    """The numeric metrics (`test.accuracy`, ...) of experiment `name`, from
    `dvc exp show --json`: every metrics file merged (their names do not overlap)."""
    for row in shown:
        for experiment in row.get("experiments") or []:
            if experiment.get("name") != name:
                continue
            data = experiment["revs"][0].get("data") or {}
            files = data.get("metrics") or {}
            merged: dict[str, float] = {}
            for entry in files.values():
                merged.update(numeric_leaves(entry.get("data") or {}))
            if not merged:
                raise PipelineError(f"experiment {name} has no metrics in `dvc exp show`")
            return merged
    raise PipelineError(f"experiment {name} is not in `dvc exp show`")


def seeds_document(seeds: Sequence[int], runs: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """metrics/seeds.json: {"k", "seeds", "metrics": {name: {mean, std, min, max, n}}}."""
    summary = seed_summary(runs)
    return {
        "k": len(seeds),
        "seeds": list(seeds),
        "metrics": {name: asdict(stat) for name, stat in summary.items()},
    }


def run_seeds(k: int, dvc: Runner, timeout_s: float, poll_s: float = 5.0) -> dict[str, Any]:
    """Queue seeds 0..k-1, run them one at a time, wait, and summarize their metrics."""
    check_seed_count(k)
    names = queue_seed_runs(range(k), dvc)
    dvc(["queue", "start", "-j", "1"])
    wait_for(list(names), dvc, timeout_s, poll_s)
    shown = _parse_json(dvc(["exp", "show", "--json"]))
    runs = [experiment_metrics(shown, name) for name in names]
    return seeds_document(list(names.values()), runs)


def _parse_json(text: str) -> list[dict[str, Any]]:
    data = json.loads(text)
    if not isinstance(data, list):
        raise PipelineError("`dvc exp show --json` did not print a list")
    return data
