"""Measuring a hostile input's cost: how long, how much memory, what it printed, what it
left behind. Shared by the tests of every surface (tests/*/test_hostile_*.py) and by
benchmarks/hostile.py, which prints the table of the README's limits."""

import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import PipelineError

MB = 1_000_000
# Run a command, then print its peak resident memory (kB) and exit status as the last line.
MEASURE = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)"
)
# What a stage script peaks at anyway (Python, torch, numpy imported): the bounds in the
# tests are this plus what the case may legitimately need.
STAGE_BASE_RSS_KB = 600_000
# The wall time a hostile case may take in the tests: a hang guard, not a speed target
# (each case takes well under a second unless the defence is missing, and then it runs
# for minutes or without end); the README's timings come from benchmarks/hostile.py.
HANG_GUARD_S = 60.0


def fails_within(action: Callable[[], Any], *, max_traced_bytes: int) -> PipelineError:
    """Run `action`, which must raise a one-line PipelineError within a memory bound (peak
    of what Python allocates, tracemalloc: numpy's and Python's allocations, not torch's)
    and HANG_GUARD_S; return the error."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        action()
    except PipelineError as exc:
        error = exc
    else:
        raise AssertionError("no PipelineError raised")
    finally:
        _, peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    elapsed_s = time.monotonic() - started
    message = str(error)
    assert "\n" not in message, message
    assert elapsed_s < HANG_GUARD_S, f"took {elapsed_s:.1f} s: {message}"
    assert peak_bytes < max_traced_bytes, f"peak {peak_bytes / MB:.0f} MB: {message}"
    return error


@dataclass(frozen=True)
class Run:
    returncode: int
    stderr: str
    stdout: str
    peak_rss_kb: int
    seconds: float


def run_measured(
    argv: Sequence[str], repo: Path, timeout_s: float = 120, stdin: int | None = None
) -> Run:
    """Run `argv` (a Python script and its arguments, run by this interpreter) with the
    package of `repo`/src; measure its wall time and peak memory."""
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    command = [sys.executable, "-c", MEASURE, sys.executable, *argv]
    started = time.monotonic()
    result = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        stdin=stdin,
    )
    seconds = time.monotonic() - started
    *output, last = result.stdout.splitlines()
    peak_kb, returncode = map(int, last.split())
    return Run(returncode, result.stderr, "\n".join(output), peak_kb, seconds)


def run_stage_script(stage: str, *args: str, repo: Path, timeout_s: float = 120) -> Run:
    """Run stages/<stage>.py of `repo` in a fresh process, measured."""
    return run_measured([str(repo / "stages" / f"{stage}.py"), *args], repo, timeout_s)


def assert_one_line_failure(run: Run, prog: str, problem: str) -> None:
    """Exit 1 and one line on stderr, `<prog>: error: ...problem...`."""
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"{prog}: error: ") and problem in lines[0], lines[0]


def leftovers(directory: Path) -> list[str]:
    """Temporary files and directories (.part downloads, .tmp- siblings) under `directory`."""
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.name.endswith(".part") or ".tmp-" in p.name
    )
