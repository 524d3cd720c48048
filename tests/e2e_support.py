"""Helpers for the end-to-end tests: a throwaway git + DVC copy of this repository,
fed by synthetic data, driven through the real `dvc` command line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# What a clone of the repository holds that the pipeline needs (no .venv, no data).
PIPELINE_FILES = (
    "dvc.yaml",
    "params.yaml",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "stages",
    "src/mnist_pipeline",
)

# A pipeline small enough to run in seconds on synthetic data.
SMALL_PARAMS = {
    "fetch": {"retries": 2, "backoff_s": 0.01, "timeout_s": 10},
    "prepare": {"shard_size": 400},
    "model": {"hidden_sizes": [32], "dropout": 0.2},
    "train": {"device": "cpu", "epochs": 1, "batch_size": 64, "threads": 1},
    "evaluate": {"mc_samples": 3, "worst_examples": 4, "batch_size": 256},
}


def env_for(repo: Path) -> dict[str, str]:
    """Run the copy's own code with this interpreter's tools, offline, as a known git user."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo / "src")  # ahead of the editable install of the original
    env.update(
        GIT_AUTHOR_NAME="e2e",
        GIT_AUTHOR_EMAIL="e2e@localhost",
        GIT_COMMITTER_NAME="e2e",
        GIT_COMMITTER_EMAIL="e2e@localhost",
        DVC_NO_ANALYTICS="1",
    )
    return env


def run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args, cwd=repo, env=env_for(repo), capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def make_repo(dest: Path) -> Path:
    """Copy the pipeline into `dest` and make it a git repository with one commit."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in PIPELINE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        elif source.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    run(dest, "git", "init", "-q", "-b", "main")
    run(dest, "git", "add", "-A")
    run(dest, "git", "commit", "-q", "-m", "pipeline")
    return dest


def set_params(repo: Path, updates: dict) -> None:
    """Merge `updates` (nested dict) into the copy's params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    _merge(params, updates)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _merge(base: dict, updates: dict) -> None:
    for key, value in updates.items():
        if isinstance(value, dict) and value and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def stages_run(output: str) -> list[str]:
    """Names of the stages `dvc repro` ran (not skipped), from its output."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
