"""Back to the last commit after a failed or unwanted experiment (`make reset`).

A failed `dvc exp run` leaves its params in params.yaml, the stages it ran in dvc.lock
(staged, with `core.autostage`), and the failed stage's outputs deleted. `git checkout
-- params.yaml && dvc checkout` does not undo that: the outputs tracked by git
(`cache: false`) are not in DVC's cache, and a staged dvc.lock survives a checkout from
the index. So the reset restores, from HEAD, in the index and the working tree:
params.yaml, dvc.lock and every git-tracked output dvc.yaml declares (one that HEAD does
not have is removed), then lets `dvc checkout` restore the cached outputs. Nothing else
in the workspace (code, other files) is touched.
"""

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mnist_pipeline.config.strict import load_yaml_mapping
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.gitrepo import git

Runner = Callable[[Sequence[str]], str]  # dvc arguments -> its stdout; PipelineError on failure
OUTPUT_KINDS = ("outs", "metrics", "plots")


def git_tracked_outputs(dvc_yaml: dict[str, Any]) -> list[str]:
    """The paths of the outputs dvc.yaml keeps out of DVC's cache (`cache: false`), in
    stage order: git holds them."""
    paths = []
    for stage in (dvc_yaml.get("stages") or {}).values():
        for kind in OUTPUT_KINDS:
            for entry in stage.get(kind) or []:
                path, options = (
                    next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
                )
                if (options or {}).get("cache", True) is False:
                    paths.append(str(path))
    return paths


def reset_to_head(repo: Path, dvc: Runner, params: str = "params.yaml") -> str:
    """Make params.yaml, dvc.lock and every output of `repo` what HEAD has; returns one
    line saying what was reset."""
    head = git(repo, "log", "-1", "--format=%h %s", "HEAD")
    if head.returncode != 0:
        raise PipelineError(f"{repo}: no commit to reset to (git: {_last_line(head.stderr)})")
    tracked = git_tracked_outputs(load_yaml_mapping(repo / "dvc.yaml"))
    paths = [params, "dvc.lock", *tracked]
    in_head = [path for path in paths if _in_head(repo, path)]
    if params not in in_head:
        raise PipelineError(f"{params}: not in HEAD; commit the params before resetting to them")
    for path in tracked:  # whole: a failed run may have left files HEAD does not have
        _remove(repo / path)
    gone = [path for path in paths if path not in in_head]
    if gone:
        _git_or_fail(repo, "rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", *gone)
        for path in gone:
            _remove(repo / path)
    _git_or_fail(repo, "restore", "--source=HEAD", "--staged", "--worktree", "--", *in_head)
    dvc(["checkout", "--force"])
    restored = f"{len(in_head)} path(s) as HEAD ({head.stdout.strip()}) has them"
    removed = f", {len(gone)} that HEAD lacks removed ({', '.join(gone)})" if gone else ""
    return f"reset: {restored}{removed}; cached outputs checked out"


def _in_head(repo: Path, path: str) -> bool:
    return git(repo, "cat-file", "-e", f"HEAD:{path}").returncode == 0


def _remove(path: Path) -> None:
    """Remove a pipeline output: a link itself (never what it points to), a folder whole."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _git_or_fail(repo: Path, *args: str) -> None:
    result = git(repo, *args)
    if result.returncode != 0:
        raise PipelineError(f"git {args[0]} failed: {_last_line(result.stderr)}")


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no message"
