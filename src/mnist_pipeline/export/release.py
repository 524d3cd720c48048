"""Releasing the models as DVC artifacts (`make release VERSION=v1.0.0`).

`dvc artifacts get REPO NAME --rev VERSION` finds an artifact's version by an annotated
git tag `NAME@VERSION` (GTO's format) and downloads its file from the DVC remote. Each
artifact needs a tag of its own (a tag of `mnist-classifier` does not release
`mnist-classifier-onnx`), and the files must be in the remote. A release therefore
checks that HEAD's outputs are what the workspace holds, pushes the artifacts' files to
the default remote, and tags HEAD once per artifact in dvc.yaml.
"""

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.gitrepo import git

Runner = Callable[[Sequence[str]], str]  # dvc arguments -> its stdout; PipelineError on failure
# GTO's versions: semantic, with a leading v.
VERSION = re.compile(r"v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
UP_TO_DATE = "Data and pipelines are up to date."


def check_version(version: str) -> str:
    if VERSION.fullmatch(version) is None:
        raise PipelineError(
            f"VERSION {version!r}: expected a semantic version with a leading v, e.g. v1.0.0"
        )
    return version


def artifacts(dvc_yaml: dict[str, Any]) -> dict[str, str]:
    """Artifact name -> path, as dvc.yaml declares them."""
    declared = dvc_yaml.get("artifacts") or {}
    if not isinstance(declared, dict) or not declared:
        raise PipelineError("dvc.yaml declares no artifacts to release")
    return {str(name): str(entry["path"]) for name, entry in declared.items()}


def release_tags(names: Sequence[str], version: str) -> list[str]:
    return [f"{name}@{version}" for name in names]


def release(repo: Path, dvc_yaml: dict[str, Any], version: str, dvc: Runner) -> str:
    """Push the artifacts' files and tag HEAD for each; returns the line to print (with
    the command that shares the tags). Nothing is tagged unless everything checks out."""
    check_version(version)
    files = artifacts(dvc_yaml)
    tags = release_tags(list(files), version)
    head = git(repo, "rev-parse", "--short", "HEAD")
    if head.returncode != 0:
        raise PipelineError("no commit to release (HEAD)")
    changed = git(repo, "status", "--porcelain", "--untracked-files=no")
    if changed.stdout.strip():
        raise PipelineError("uncommitted changes: commit them first, a release tags HEAD")
    existing = [
        tag for tag in tags if git(repo, "rev-parse", "-q", "--verify", tag).returncode == 0
    ]
    if existing:
        raise PipelineError(f"{', '.join(existing)}: already released; choose another VERSION")
    status = dvc(["status", *files.values()])
    if UP_TO_DATE not in status:
        raise PipelineError(
            "the outputs are not HEAD's (dvc status is not clean): `dvc repro` (or `make "
            "reset`) and commit first"
        )
    if not dvc(["remote", "default"]).strip():
        raise PipelineError(
            "no default DVC remote: `dvc artifacts get` downloads from one (`dvc remote add "
            "-d NAME URL`, commit .dvc/config)"
        )
    dvc(["push", *files.values()])
    for tag, name in zip(tags, files, strict=True):
        made = git(repo, "tag", "-a", tag, "-m", f"Release {name} {version}", "HEAD")
        if made.returncode != 0:
            raise PipelineError(f"git tag {tag} failed: {made.stderr.strip()}")
    return (
        f"release: pushed {', '.join(files.values())} and tagged {head.stdout.strip()} "
        f"{' '.join(tags)}; share them: git push origin {' '.join(tags)}"
    )
