"""The `dvc` command line, run by the project's tools (seeds, reset, the experiments table,
release): arguments in, stdout out, a failure as one line.

Output goes through temporary files, not pipes: the queue workers that `dvc queue start`
leaves running inherit its output, and reading a pipe to its end would wait for them (the
whole queue).

Interrupted (Ctrl-C, SIGTERM), the caller does not leave dvc half-way: it gets a few
seconds to finish (a short command, e.g. queueing an experiment, completes), then SIGINT,
DVC's own clean stop that releases its locks, and only then SIGKILL.
"""

import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mnist_pipeline.errors import PipelineError

DVC_TIMEOUT_S = 1800.0  # one dvc command of ours (a checkout of the cached outputs at most)
STOP_GRACE_S = 10.0  # an interrupted caller's dvc: to finish, then to stop after SIGINT


def run_dvc(args: Sequence[str], cwd: Path | None = None, timeout_s: float = DVC_TIMEOUT_S) -> str:
    """Run this interpreter's `dvc args` in `cwd` and return its stdout; a failure or a
    command past `timeout_s` is a one-line PipelineError."""
    command = [sys.executable, "-m", "dvc", *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        with subprocess.Popen(
            command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        ) as process:
            try:
                returncode = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise PipelineError(f"dvc {' '.join(args)}: no answer in {timeout_s:g} s") from None
            except BaseException:  # KeyboardInterrupt, cli.Terminated
                _stop(process)
                raise
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if returncode != 0:
        last = (stderr.strip() or stdout.strip()).splitlines()[-1:]
        raise PipelineError(f"dvc {' '.join(args)} failed: {' '.join(last)}")
    return stdout


def _stop(process: "subprocess.Popen[bytes]") -> None:
    """Let an interrupted caller's dvc finish or stop cleanly (module docstring)."""
    for stop in (None, signal.SIGINT, signal.SIGKILL):
        if stop is not None:
            process.send_signal(stop)
        try:
            process.wait(timeout=STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue
