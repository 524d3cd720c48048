"""A throwaway git + DVC copy of a checkout of this repository, fed by synthetic data
and driven through the real `dvc` command line (end-to-end tests, `bench_repro`).

The copy takes the checkout's code, `dvc.yaml` and the *committed* `params.yaml`
(`git show HEAD:params.yaml`): what a user changed in their working params.yaml never
changes what a test or benchmark runs. Each caller then sets the params it needs.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.config.strict import merged
from mnist_pipeline.data.registry import PICKLE_FILE
from mnist_pipeline.fileio import file_digest
from mnist_pipeline.gitrepo import file_at
from mnist_pipeline.testing.synthetic import make_splits, write_pickle

# What a clone of the repository holds that the pipeline needs (no .venv, no data);
# params.yaml comes from the checkout's last commit (committed_text).
PIPELINE_FILES = (
    "dvc.yaml",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",
    "stages",
    "src/mnist_pipeline",
)

# The pipeline's stages in dvc.yaml's order (what a first `dvc repro` runs), its
# git-tracked metrics files, and its checkpoint.
ALL_STAGES = ["fetch", "prepare", "train", "evaluate", "export"]
METRICS = ("metrics/evaluate.json", "metrics/train/metrics.json")
MODEL = "models/model.pt"

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


def run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in `repo`. Output goes through temporary files, not pipes: the queue
    workers that `dvc queue start` leaves running inherit its output, and reading a pipe
    to its end would wait for them (the whole queue, or the timeout)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        returncode = subprocess.run(
            args,
            cwd=repo,
            env=env_for(repo),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            timeout=600,
        ).returncode
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(args, returncode, out.read(), err.read())
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def committed_text(checkout: Path, name: str) -> str:
    """The file `name` as the checkout's last commit has it (the working copy's text
    outside a git checkout, e.g. an unpacked source archive)."""
    text = file_at(checkout, "HEAD", name)
    return text if text is not None else (checkout / name).read_text()


def make_repo(dest: Path, checkout: Path) -> Path:
    """Copy the pipeline of `checkout` into `dest` and make it a git repository with one
    commit; params.yaml is the committed one (see the module docstring)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "params.yaml").write_text(committed_text(checkout, "params.yaml"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in PIPELINE_FILES:
        source = checkout / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        elif source.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    run(dest, "git", "init", "-q", "-b", "main")
    run(dest, "git", "add", "-A")
    run(dest, "git", "commit", "-q", "-m", "pipeline")
    return dest


def set_params(repo: Path, updates: dict[str, Any]) -> None:
    """Merge `updates` (nested dict[str, Any]) into the copy's params.yaml."""
    path = repo / "params.yaml"
    params = merged(yaml.safe_load(path.read_text()), updates)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def stages_run(output: str) -> list[str]:
    """Names of the stages `dvc repro` ran (not skipped), from its output."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# Helpers for tests/e2e/test_workflows_e2e.py: a local data source, commits, the exp queue.


def write_local_source(folder: Path, rows: tuple[int, int, int], seed: int) -> dict[str, Any]:
    """Synthetic mnist.pkl.gz in `folder`; returns the `fetch` params that read it.

    Give a folder outside the repository: queued experiments run in a copy that holds
    only git-tracked files, and a fresh clone has no untracked ones either.
    """
    path = Path(folder).resolve() / PICKLE_FILE
    write_pickle(path, make_splits(rows, seed))
    return {"source": str(path), "checksums": {PICKLE_FILE: file_digest(path, "md5")}}


def copy_into(repo: Path, checkout: Path, *names: str) -> None:
    """Copy more files of `checkout` (beyond PIPELINE_FILES) into the copy `repo`."""
    for name in names:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(checkout / name, repo / name)


def commit_all(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "--allow-empty", "-m", message)


QUEUE_ACTIVE = ("Queued", "Running")


def queue_tasks(repo: Path) -> dict[str, str]:
    """Experiment name -> status, from `dvc queue status` (task, name, created, status)."""
    lines = run(repo, "dvc", "queue", "status").stdout.splitlines()
    rows = [line.split() for line in lines[1:] if line.strip()]
    return {row[1]: row[-1] for row in rows if len(row) >= 4 and row[0] != "Worker"}


def wait_for_queue(
    repo: Path, timeout_s: float, runs: int, status_poll_s: float = 15.0
) -> dict[str, str]:
    """Wait until the queue is idle after `runs` experiments of HEAD were queued
    (`dvc queue start` returns at once and its workers run in the background); returns
    the final statuses. Finished runs show as HEAD's experiment refs, which git lists in
    milliseconds; `dvc queue status` (a dvc process, about a CPU-second) is asked once
    they are all there, and every `status_poll_s` before that, to notice a failed run."""
    deadline = time.monotonic() + timeout_s
    next_status = time.monotonic() + status_poll_s
    while True:
        if len(head_experiment_refs(repo)) >= runs or time.monotonic() >= next_status:
            tasks = queue_tasks(repo)
            if not any(status in QUEUE_ACTIVE for status in tasks.values()):
                return tasks
            next_status = time.monotonic() + status_poll_s
        if time.monotonic() > deadline:
            raise AssertionError(f"queue still busy after {timeout_s:.0f} s: {queue_tasks(repo)}")
        time.sleep(0.5)


def head_experiment_refs(repo: Path) -> list[str]:
    """The refs of HEAD's experiments (DVC keeps them as refs/exps/<HEAD's sha>/<name>)."""
    head = run(repo, "git", "rev-parse", "HEAD").stdout.strip()
    listed = run(
        repo, "git", "for-each-ref", "--format=%(refname)", f"refs/exps/{head[:2]}/{head[2:]}/"
    )
    return listed.stdout.split()


def stop_queue_workers(repo: Path) -> None:
    """Stop the copy's queue workers, and kill any that outlive that, by their pid files.

    Only a process whose cmdline is a dvc queue worker and whose working directory is
    this copy is killed, so a stale pid file can never hit an unrelated process.
    """
    run(repo, "dvc", "queue", "stop", "--kill", check=False)
    deadline = time.monotonic() + 10
    for pid_file in (repo / ".dvc/tmp/exps/celery").glob("*.pid"):
        pid = int(pid_file.read_text().split()[0])
        while _is_our_worker(pid, repo) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _is_our_worker(pid, repo):
            # Its group holds the experiment it runs; never our own group, though.
            group = os.getpgid(pid)
            if group != os.getpgrp():
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


def queue_worker_pids(repo: Path) -> list[int]:
    """The pids of the copy's DVC queue workers alive now (found in /proc: a worker that
    was stopped may have removed its pid file already)."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in pids if _is_our_worker(pid, repo)]


def _is_our_worker(pid: int, repo: Path) -> bool:
    proc = Path(f"/proc/{pid}")
    try:
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        cwd = Path(os.readlink(proc / "cwd")).resolve()
    except OSError:  # gone, or not ours to read
        return False
    return "queue-worker" in cmdline and cwd == Path(repo).resolve()


def head_experiments(repo: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (params.yaml data, {metrics path: data}) of HEAD's experiments."""
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    head = run(repo, "git", "rev-parse", "HEAD").stdout.strip()
    baseline = next(row for row in shown if row["rev"] == head)
    found = {}
    for exp in baseline.get("experiments") or []:
        data = exp["revs"][0]["data"]
        metrics = {path: entry["data"] for path, entry in data["metrics"].items()}
        found[exp["name"]] = (data["params"]["params.yaml"]["data"], metrics)
    return found


def lock_out_md5(repo: Path, stage: str, path: str) -> str:
    """The md5 that dvc.lock records for one output of `stage`."""
    outs = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]["outs"]
    return next(out["md5"] for out in outs if out["path"] == path)
