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
