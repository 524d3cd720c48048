"""The git repository the pipeline lives in: files as a commit has them.

Every call runs `git` in an explicit directory and returns plain data; a missing
revision or file is None, not an exception, so each caller words its own error.
"""

import subprocess
from pathlib import Path

GIT_TIMEOUT_S = 60  # a local git command; a hung one (a lock, a network filesystem) ends


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `git args` in `repo`; the result whatever the exit status."""
    try:
        return subprocess.run(
            ["git", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
            timeout=GIT_TIMEOUT_S,
        )
    except FileNotFoundError:
        return subprocess.CompletedProcess(["git", *args], 127, "", "git: command not found")


def file_at(repo: Path, rev: str, path: str) -> str | None:
    """The text of `path` (relative to `repo`) at commit `rev`; None if either is missing."""
    shown = git(repo, "show", f"{rev}:./{path}")
    return shown.stdout if shown.returncode == 0 else None


def blob_size_at(repo: Path, rev: str, path: str) -> tuple[str, int] | None:
    """(object id, size in bytes) of the file `path` at commit `rev`, asked before its
    content is read; None if either is missing or `path` is not a file there. The id pins
    the content: a branch that moves meanwhile cannot swap in a larger file."""
    resolved = git(repo, "rev-parse", "--verify", "--quiet", f"{rev}:./{path}")
    oid = resolved.stdout.strip()
    if resolved.returncode != 0 or not oid:
        return None
    kind = git(repo, "cat-file", "-t", oid)
    if kind.returncode != 0 or kind.stdout.strip() != "blob":
        return None
    size = git(repo, "cat-file", "-s", oid)
    if size.returncode != 0 or not size.stdout.strip().isdigit():
        return None
    return oid, int(size.stdout.strip())


def blob_bytes(repo: Path, oid: str) -> bytes | None:
    """The content of the blob `oid` (from `blob_size_at`, so its size is known)."""
    try:
        shown = subprocess.run(
            ["git", "cat-file", "blob", oid],
            cwd=repo,
            capture_output=True,
            check=False,
            timeout=GIT_TIMEOUT_S,
        )
    except FileNotFoundError:
        return None
    return shown.stdout if shown.returncode == 0 else None
