"""The `dvc` command line, run by the project's tools (seeds, reset, the experiments table,
release): arguments in, stdout out, a failure as one line; and the pipeline file.

Output goes through temporary files, not pipes: the queue workers that `dvc queue start`
leaves running inherit its output, and reading a pipe to its end would wait for them (the
whole queue).
"""

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.errors import PipelineError

DVC_TIMEOUT_S = 1800.0  # one dvc command of ours (a checkout of the cached outputs at most)


def run_dvc(args: Sequence[str], cwd: Path | None = None, timeout_s: float = DVC_TIMEOUT_S) -> str:
    """Run this interpreter's `dvc args` in `cwd` and return its stdout; a failure or a
    command past `timeout_s` is a one-line PipelineError."""
    command = [sys.executable, "-m", "dvc", *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            returncode = subprocess.run(
                command,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                check=False,
                timeout=timeout_s,
            ).returncode
        except subprocess.TimeoutExpired:
            raise PipelineError(f"dvc {' '.join(args)}: no answer in {timeout_s:g} s") from None
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if returncode != 0:
        last = (stderr.strip() or stdout.strip()).splitlines()[-1:]
        raise PipelineError(f"dvc {' '.join(args)} failed: {' '.join(last)}")
    return stdout


def read_dvc_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PipelineError(f"{path}: cannot read the pipeline: {exc}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping at the top level")
    return data
