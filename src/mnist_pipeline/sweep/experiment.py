"""One sweep trial as a real DVC experiment: `dvc exp run --temp --name NAME -S ...
evaluate` (in a temporary copy of the repository, so trials run side by side), bounded
in time, stopped whole when the sweep stops (guard.py), and its validation metrics read
from the experiment's commit.

`evaluate` is the target: everything the objective needs runs (fetch and prepare come
from DVC's run cache after the first trial); the export of a trial's model is left to
`dvc exp apply NAME && dvc repro`.

Only the `valid` section of metrics/evaluate.json is returned: the sweep never sees the
test split while it selects.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.cli import printable
from mnist_pipeline.config.params import MAX_METRICS_BYTES
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.experiments.presets import set_arguments
from mnist_pipeline.gitrepo import blob_bytes, blob_size_at, git
from mnist_pipeline.sweep import guard
from mnist_pipeline.sweep.spec import SELECTION_SPLIT

METRICS_FILE = "metrics/evaluate.json"
MAX_ERROR_CHARS = 300
TAIL_BYTES = 64_000  # of a trial's log, read for its error line
TARGET = "evaluate"
PUSH_TIMEOUT_S = 600.0
# DVC's lock was held by another trial past --wait-for-lock's reach, or git refs moved
# under it: the experiment never ran, so it is run again.
TRANSIENT = re.compile(r"Unable to acquire lock|is busy|cannot lock ref", re.IGNORECASE)
TRANSIENT_RETRIES = 3


@dataclass(frozen=True)
class Outcome:
    metrics: dict[str, float] | None  # valid split only; None when the trial failed
    error: str | None  # one line, when it failed
    seconds: float
    stopped: bool = False  # the sweep stopped it (Ctrl-C, SIGTERM): not the trial's fault


def experiment_ref(repo: Path, name: str) -> str | None:
    """The git ref of experiment `name` (refs/exps/xx/yyyy.../name), if there is one."""
    listed = git(repo, "for-each-ref", "--format=%(refname)", "refs/exps/")
    refs = [line for line in listed.stdout.splitlines() if line.rsplit("/", 1)[-1] == name]
    refs = [ref for ref in refs if not ref.startswith(("refs/exps/exec", "refs/exps/temp"))]
    return refs[0] if refs else None


def experiment_names(repo: Path) -> list[str]:
    listed = git(repo, "for-each-ref", "--format=%(refname)", "refs/exps/")
    return [
        line.rsplit("/", 1)[-1]
        for line in listed.stdout.splitlines()
        if line.count("/") == 4 and not line.startswith(("refs/exps/exec", "refs/exps/temp"))
    ]


def valid_metrics(repo: Path, ref: str) -> dict[str, float]:
    """The numbers of the `valid` section of metrics/evaluate.json at `ref`."""
    return select_valid(metrics_document(repo, ref))


def metrics_document(repo: Path, ref: str) -> Any:
    """metrics/evaluate.json at `ref`, parsed; its size is checked before it is read."""
    found = blob_size_at(repo, ref, METRICS_FILE)
    if found is None:
        raise PipelineError(f"{ref}: no {METRICS_FILE}")
    oid, size = found
    if size > MAX_METRICS_BYTES:
        raise PipelineError(f"{ref}:{METRICS_FILE}: {size} bytes, over {MAX_METRICS_BYTES}")
    try:
        return json.loads(blob_bytes(repo, oid) or b"")
    except ValueError:
        raise PipelineError(f"{ref}:{METRICS_FILE}: not JSON") from None


def select_valid(document: Any) -> dict[str, float]:
    """The validation split's numeric metrics of an evaluate.json document; nothing
    else of it is looked at (the test split in particular)."""
    section = document.get(SELECTION_SPLIT) if isinstance(document, Mapping) else None
    if not isinstance(section, Mapping):
        raise PipelineError(f"{METRICS_FILE} has no {SELECTION_SPLIT} section")
    return {
        str(k): float(v)
        for k, v in section.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def dvc_command(name: str, overrides: Mapping[str, Any]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dvc",
        "--wait-for-lock",
        "exp",
        "run",
        "--temp",
        "--name",
        name,
        *set_arguments(dict(overrides)),
        TARGET,
    ]


def run_experiment(
    repo: Path,
    name: str,
    overrides: Mapping[str, Any],
    *,
    threads: int,
    timeout_s: float,
    log_path: Path,
    heartbeat: Callable[[], None],
    heartbeat_s: float,
    stop: threading.Event,
) -> Outcome:
    """Run experiment `name` with `overrides` (presets first, then the trial's, then the
    threads), calling `heartbeat` every heartbeat_s while it runs. An experiment of that
    name that already exists (a crashed sweep finished it but did not record it) is
    taken as it is."""
    start = time.monotonic()
    for attempt in range(TRANSIENT_RETRIES + 1):
        existing = experiment_ref(repo, name)
        if existing is not None:
            return _finished(repo, existing, start)
        returncode, stopped = _run_guarded(
            repo,
            dvc_command(name, {**overrides, "train.threads": threads}),
            threads,
            start + timeout_s,
            log_path,
            heartbeat,
            heartbeat_s,
            stop,
        )
        seconds = time.monotonic() - start
        if stopped:
            return Outcome(None, "stopped by the sweep", seconds, stopped=True)
        if returncode is None:
            minutes = timeout_s / 60
            error = f"abandoned after {minutes:g} min (the sweep's trial_timeout_min)"
            return Outcome(None, error, seconds)
        if returncode == 0:
            ref = experiment_ref(repo, name)
            if ref is None:
                return Outcome(None, f"dvc exp run made no experiment {name}", seconds)
            return _finished(repo, ref, start)
        tail = _tail(log_path)
        if not (TRANSIENT.search(tail) and attempt < TRANSIENT_RETRIES):
            return Outcome(None, error_line(tail, returncode), seconds)
    raise AssertionError("unreachable")


def _finished(repo: Path, ref: str, start: float) -> Outcome:
    seconds = time.monotonic() - start
    try:
        return Outcome(valid_metrics(repo, ref), None, seconds)
    except PipelineError as exc:
        return Outcome(None, str(exc), seconds)


def _run_guarded(
    repo: Path,
    command: Sequence[str],
    threads: int,
    deadline: float,
    log_path: Path,
    heartbeat: Callable[[], None],
    heartbeat_s: float,
    stop: threading.Event,
) -> tuple[int | None, bool]:
    """(exit status or None if past the deadline, whether `stop` ended it)."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)  # stage commands' `python` is this one
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("DVC_NO_ANALYTICS", "1")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, guard.__file__, "--", *command],
            cwd=repo,
            env=env,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a Ctrl-C reaches the sweep only
        )
    assert process.stdin is not None
    try:
        while True:
            remaining = deadline - time.monotonic()
            if stop.is_set() or remaining <= 0:
                break
            try:
                return process.wait(timeout=min(heartbeat_s, remaining)), False
            except subprocess.TimeoutExpired:
                heartbeat()
        stopped = stop.is_set()
        process.stdin.close()  # the guard stops the experiment's whole group
        process.wait()
        return None, stopped
    finally:
        if not process.stdin.closed:
            process.stdin.close()
        if process.poll() is None:
            process.wait()


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def error_line(log_tail: str, returncode: int) -> str:
    """The line that says why: the stage's own `NAME: error: ...` if there is one, else
    DVC's last ERROR line, else the last line."""
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    for pattern in (r"^\S+: error: ", r"^ERROR: "):
        found = [line for line in lines if re.match(pattern, line)]
        if found:
            return _short(found[-1])
    return _short(lines[-1] if lines else f"dvc exp run exited with {returncode}")


def _short(text: str) -> str:
    text = printable(" ".join(text.split()))
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def push(repo: Path, remote: str, name: str) -> str | None:
    """`dvc exp push REMOTE NAME` (the experiment's commit, and its cached outputs to
    the DVC remote if one is set); None on success, else the error line."""
    command = [sys.executable, "-m", "dvc", "exp", "push", remote, name]
    try:
        done = subprocess.run(
            command,
            cwd=repo,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PUSH_TIMEOUT_S,
            env={**os.environ, "DVC_NO_ANALYTICS": "1"},
        )
    except subprocess.TimeoutExpired:
        return f"dvc exp push {remote} {name}: no answer in {PUSH_TIMEOUT_S:g} s"
    if done.returncode == 0:
        return None
    return error_line(done.stderr + done.stdout, done.returncode)
