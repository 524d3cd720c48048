"""Multi-seed mode: train the same params with K seeds through DVC's experiment queue and
summarize every metric as mean ± std (metrics/seeds.json, git-tracked, which the review
report compares between revisions).

`dvc` runs through a `Runner` (argv -> stdout, raising PipelineError on failure), so the
orchestration is tested with a fake one; scripts/seeds.py passes the real command line.

The runs are named seeds-<token>-<seed> before they are queued, so that a run stopped
half-way (Ctrl-C, SIGTERM, an error, the timeout) knows every task it may have queued:
it removes the queued ones, stops the running one, and stops the queue worker it started.
"""

import json
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.review.report import numeric_leaves
from mnist_pipeline.review.significance import seed_summary

MIN_SEEDS = 2  # a standard deviation needs two runs
# Each seed is a full training run, one after another, and each stays in the repository as
# an experiment: 50 already narrows the 95% interval of the mean to ~0.28 of one run's
# spread (1.96/sqrt(50)), and past that a typo (K=500 for 5) would queue days of training.
MAX_SEEDS = 50
CANCEL_TIMEOUT_S = 120.0  # a stopped run's task leaving "Running" (the stage's own cleanup)
WORKER_STATUS = re.compile(r"Worker status: (\d+) active, (\d+) idle")
QUEUE_ACTIVE = ("Queued", "Running")

Runner = Callable[[Sequence[str]], str]  # dvc arguments -> its stdout


def check_seed_count(k: int) -> None:
    """Refuse K < 2 (one run has no spread to report) or K > MAX_SEEDS before any work."""
    if k < MIN_SEEDS:
        raise PipelineError(f"--k {k}: a multi-seed run needs at least {MIN_SEEDS} seeds")
    if k > MAX_SEEDS:
        raise PipelineError(
            f"--k {k}: at most {MAX_SEEDS} seeds (each is a full training run, one at a time)"
        )


def queued_name(output: str) -> str:
    """The experiment name in `dvc exp run --queue`'s output."""
    found = re.search(r"Queued experiment '([^']+)'", output)
    if found is None:
        raise PipelineError(f"dvc exp run --queue named no experiment: {output.strip()!r}")
    return found.group(1)


def seed_run_names(seeds: Sequence[int], token: str | None = None) -> dict[str, int]:
    """Experiment name -> seed: seeds-<token>-<seed>, the token new for each call."""
    token = token or secrets.token_hex(3)
    return {f"seeds-{token}-{s}": s for s in seeds}


def queue_seed_runs(names: Mapping[str, int], dvc: Runner) -> None:
    """Queue one experiment per seed (`-S seed=<s>`), under the names given."""
    for name, seed in names.items():
        output = dvc(["exp", "run", "--queue", "--name", name, "-S", f"seed={seed}"])
        if queued_name(output) != name:
            raise PipelineError(f"dvc queued {queued_name(output)!r}, not {name!r}")


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
                f"({', '.join(busy)}); a longer --timeout-min waits longer"
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


def run_seeds(
    k: int,
    dvc: Runner,
    timeout_s: float,
    poll_s: float = 5.0,
    notes: list[str] | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Queue seeds 0..k-1, run them one at a time, wait, and summarize their metrics.

    Stopped before the runs are done (an error, the timeout, Ctrl-C, SIGTERM), it removes
    its queued runs and stops its running one and the worker it started (cancel_seed_runs),
    then raises on; what it did is appended to `notes` (an error's message has it too).
    """
    check_seed_count(k)
    names = seed_run_names(range(k), token)
    started_worker = False
    try:
        queue_seed_runs(names, dvc)
        started_worker = live_workers(dvc(["queue", "status"])) == 0
        dvc(["queue", "start", "-j", "1"])
        wait_for(list(names), dvc, timeout_s, poll_s)
    except BaseException as exc:  # KeyboardInterrupt and cli.Terminated too
        with _no_interrupts():
            note = cancel_seed_runs(list(names), dvc, stop_worker=started_worker)
        if notes is not None and note:
            notes.append(note)
        if isinstance(exc, PipelineError) and note:
            raise PipelineError(f"{exc}; {note}") from exc
        raise
    shown = _parse_json(dvc(["exp", "show", "--json"]))
    runs = [experiment_metrics(shown, name) for name in names]
    return seeds_document(list(names.values()), runs)


def cancel_seed_runs(
    names: Sequence[str],
    dvc: Runner,
    stop_worker: bool,
    timeout_s: float = CANCEL_TIMEOUT_S,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Remove the queued ones of `names` from DVC's queue (first, so that the worker takes
    none of them next), stop the running one (`dvc queue kill`: SIGINT, the stage's clean
    stop; SIGKILL after half of `timeout_s`) and remove it once stopped; with `stop_worker`,
    stop the queue's worker, which this run started. Never raises: says in one line what it
    did ("" if nothing), or what is left."""
    removed: set[str] = set()
    killed: set[str] = set()
    forced = False
    deadline = clock() + timeout_s
    last_error: PipelineError | None = None
    while True:
        try:
            statuses = queue_statuses(dvc(["queue", "status"]))
            ours = {name: statuses[name] for name in names if name in statuses}
            queued = [name for name, status in ours.items() if status == "Queued"]
            running = [name for name, status in ours.items() if status == "Running"]
            stopped = [name for name in killed if ours.get(name) not in (None, *QUEUE_ACTIVE)]
            if queued or stopped:
                dvc(["queue", "remove", *queued, *stopped])
                removed.update(queued, stopped)
                killed.difference_update(stopped)
            if not (queued or running or killed):
                break
            # A task can change state between the status and the kill: the loop looks again.
            to_kill = [name for name in running if name not in killed]
            if to_kill:
                dvc(["queue", "kill", *to_kill])
                killed.update(to_kill)
            elif killed and not forced and clock() > deadline - timeout_s / 2:
                dvc(["queue", "kill", "--force", *killed])  # SIGKILL: it ignored SIGINT
                forced = True
        except PipelineError as exc:
            last_error = exc
        if clock() > deadline:
            left = sorted(set(names) - removed)
            why = f" ({last_error})" if last_error else ""
            return (
                f"could not clear its seed runs from DVC's queue in {timeout_s:.0f} s{why}; "
                f"`dvc queue kill` and `dvc queue remove` these if listed: {', '.join(left)}"
            )
        sleep(poll_s)
    if stop_worker:
        try:
            dvc(["queue", "stop"])
        except PipelineError as exc:
            return f"removed its unfinished seed runs from DVC's queue; {exc}"
    done = [f"removed its {len(removed)} unfinished seed run(s) from DVC's queue"]
    done = done if removed else []
    done += ["stopped the queue worker it started"] if stop_worker else []
    return " and ".join(done)


@contextmanager
def _no_interrupts() -> Iterator[None]:
    """Ctrl-C does not cut the cleanup short (SIGTERM: cli ignores a second one already)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _parse_json(text: str) -> list[dict[str, Any]]:
    data = json.loads(text)
    if not isinstance(data, list):
        raise PipelineError("`dvc exp show --json` did not print a list")
    return data
