"""Everything a sweep command checks and opens before its first trial: the sweep file
against HEAD's params, a workspace whose trials will all run the same commit, and the
study in its storage."""

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import yaml

from mnist_pipeline.config.params import usable_cpus
from mnist_pipeline.config.preflight import read_params_text
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.experiments.start import changed_leaves, describe_set_aside
from mnist_pipeline.fileio import atomic_file
from mnist_pipeline.gitrepo import file_at, git
from mnist_pipeline.sweep import study as st
from mnist_pipeline.sweep.driver import Context, Printer, check_fresh, check_jobs
from mnist_pipeline.sweep.spec import Sweep, load_sweep, sweep_path

PARAMS_FILE = "params.yaml"
HEARTBEAT_S = 10  # a trial whose process died is run again 3 heartbeats later
MAX_HEARTBEAT_S = 600


@dataclass(frozen=True)
class Where:
    repo: Path
    sweeps_dir: Path
    presets_dir: Path


def head_commit(repo: Path) -> str:
    found = git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if found.returncode != 0:
        raise PipelineError(f"{repo}: no commit (HEAD); a sweep runs the committed pipeline")
    return found.stdout.strip()


def load(where: Where, name: str, extra_presets: list[str]) -> tuple[Sweep, str]:
    """The validated sweep and HEAD's commit."""
    head = head_commit(where.repo)
    head_params = file_at(where.repo, head, PARAMS_FILE)
    if head_params is None:
        raise PipelineError(f"{PARAMS_FILE}: not in HEAD; commit it first")
    path = sweep_path(where.sweeps_dir, name)
    return load_sweep(path, head_params, where.presets_dir, extra_presets), head


def prepare_workspace(repo: Path, head: str, say: Printer) -> None:
    """Trials start from the workspace (DVC copies it): every tracked file must be as
    HEAD has it, so that all trials run one commit and the study's record (HEAD) is what
    ran. params.yaml is put back to HEAD's (the changes set aside are named); any other
    change is refused."""
    changed = git(repo, "status", "--porcelain", "--untracked-files=no")
    if changed.returncode != 0:
        raise PipelineError(f"git status failed: {changed.stderr.strip()[:200]}")
    paths = [line[3:] for line in changed.stdout.splitlines() if line.strip()]
    others = [path for path in paths if path != PARAMS_FILE]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise PipelineError(
            f"uncommitted changes to {shown}: commit or stash them first (every trial of a "
            "sweep runs the committed code, and the study records that commit)"
        )
    if PARAMS_FILE in paths:
        head_text = file_at(repo, head, PARAMS_FILE) or ""
        path = repo / PARAMS_FILE
        if path.is_symlink() or not path.is_file():
            raise PipelineError(f"{path}: not a regular file; refusing to replace it")
        try:
            workspace = yaml.safe_load(read_params_text(path))
        except yaml.YAMLError:
            workspace = None
        changes = (
            changed_leaves(workspace, yaml.safe_load(head_text))
            if isinstance(workspace, dict)
            else {PARAMS_FILE: ("(not a valid params file)", "(HEAD's)")}
        )
        with atomic_file(path) as tmp:
            tmp.write_text(head_text)
        note = describe_set_aside(changes)
        if note:
            say(f"sweep: {note.replace('ARGS: -S key=value', 'the sweep file')}")


def sampler_salt(worker: bool) -> int:
    """0 for the sweep's own command (its proposals follow the sampler's seed); a worker
    draws from a stream of its own (host and process), or two would propose alike."""
    if not worker:
        return 0
    text = f"{socket.gethostname()}:{os.getpid()}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def open_context(
    where: Where,
    name: str,
    *,
    jobs: int,
    storage_url: str | None,
    extra_presets: list[str],
    heartbeat_s: int,
    say: Printer,
    worker: bool = False,
    push_remote: str | None = None,
) -> Context:
    if not 1 <= heartbeat_s <= MAX_HEARTBEAT_S:
        raise PipelineError(f"--heartbeat-s {heartbeat_s}: must be in [1, {MAX_HEARTBEAT_S}]")
    threads = check_jobs(jobs, usable_cpus())
    sweep, head = load(where, name, extra_presets)
    url = storage_url or st.default_url(where.repo, sweep.name)
    st.check_url(url)
    prepare_workspace(where.repo, head, say)
    storage = st.open_storage(url, heartbeat_s)
    sampler = st.make_sampler(sweep, sampler_salt(worker))
    search, confirm = st.open_studies(storage, sweep, head, sampler)
    check_fresh(where.repo, sweep, search)
    st.enqueue_grid(search, sweep)
    log_dir = where.repo / ".sweeps" / sweep.name / "logs"
    say(
        f"sweep {sweep.name}: {sweep.file.trials} trials toward {sweep.objective.metric} "
        f"({sweep.objective.direction}), {sweep.file.sampler.name} sampler, {jobs} at a "
        f"time x {threads} thread(s), study in {st.redact(url)}; logs in {log_dir}"
    )
    return Context(
        repo=where.repo,
        sweep=sweep,
        storage=storage,
        search=search,
        confirm=confirm,
        jobs=jobs,
        threads=threads,
        heartbeat_s=heartbeat_s,
        log_dir=log_dir,
        say=say,
        push_remote=push_remote,
    )
