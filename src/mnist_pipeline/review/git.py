"""What the review report asks git: which revision to compare with and its title (a
file's text there: review/inputs.py, bounded).

The base choice (`choose_base`) is plain data in, (revision, reason) out; `inspect_checkout`
gathers that data from git. Every function runs git in the current directory (where the
report is run; paths are relative to it).
"""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline import gitrepo
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.review.markdown import inline_code

# A commit subject in the report's heading: git cuts it to this many characters (ending
# in ".."), so a megabyte-long one is never read whole. Ours are under 72.
MAX_SUBJECT_CHARS = 200
FULL_SHA = re.compile(r"[0-9a-f]{40}")


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return gitrepo.git(Path.cwd(), *args)


def require_git() -> None:
    if git("rev-parse", "--git-dir").returncode != 0:
        raise PipelineError("not inside a git repository; run the report from the repository")


@dataclass(frozen=True)
class Checkout:
    """What the base choice needs to know about the checkout."""

    branch: str | None  # the current branch; None when HEAD is detached
    main_ref: str | None  # `main`, else `origin/main` (a CI clone has only origin/*); or None
    merge_base: str | None  # short sha of where HEAD forked from main_ref; None if unknown
    merge_parent: str | None  # short sha of HEAD's first parent if HEAD is a merge commit
    has_parent: bool  # HEAD~1 exists
    is_clean: bool  # the compared files have no uncommitted changes


def choose_base(checkout: Checkout, main_branch: str) -> tuple[str, str]:
    """(revision, why) to compare the workspace with when none is given, in this order:

    1. HEAD detached at a merge commit (a pull request's checkout on GitHub Actions,
       `refs/pull/N/merge`): its first parent, the branch the pull request merges into
       as it is now, so the report shows what merging would change.
    2. Any other HEAD than `main_branch` with a merge-base against it (the local branch,
       else `origin/<main_branch>`): that merge-base, all of the branch's changes.
    3. Otherwise (on `main_branch`, or no main to fork from): HEAD when the compared files
       have uncommitted changes, else HEAD~1 (the last commit's change), else HEAD. The
       reason then also says when there was no main to look for a fork point in.
    """
    if checkout.branch is None and checkout.merge_parent is not None:
        rev = checkout.merge_parent
        why = f"{inline_code(rev)}, the first parent of the merge commit HEAD (what it merges into)"
        return rev, why
    if checkout.branch != main_branch and checkout.merge_base is not None:
        rev, main = checkout.merge_base, checkout.main_ref or main_branch
        where = "this branch" if checkout.branch is not None else "HEAD"
        why = (
            f"{inline_code(rev)}, where {where} forked from {inline_code(main)} (their merge-base)"
        )
        return rev, why
    if not checkout.is_clean:
        rev, why = "HEAD", "`HEAD`, as the workspace has uncommitted changes to params or metrics"
    elif checkout.has_parent:
        rev, why = "HEAD~1", "`HEAD~1`: the workspace is clean, so the last commit's change"
    else:
        rev, why = "HEAD", "`HEAD`: the workspace is clean and HEAD has no parent"
    if checkout.main_ref is None and checkout.branch != main_branch:
        branches = f"{inline_code(main_branch)} branch or {inline_code('origin/' + main_branch)}"
        why += f" (no {branches} here to find a fork point; --rev chooses)"
    return rev, why


def short_sha(rev: str) -> str | None:
    shown = git("rev-parse", "--verify", "--quiet", "--short", f"{rev}^{{commit}}")
    if shown.returncode != 0 or not shown.stdout.strip():
        return None
    return shown.stdout.strip()


def find_main_ref(main_branch: str) -> str | None:
    """`main_branch` if it is a local branch, else `origin/<main_branch>` if that remote
    branch is here (a CI checkout fetches only origin/* refs), else None."""
    for ref, name in (
        (f"refs/heads/{main_branch}", main_branch),
        (f"refs/remotes/origin/{main_branch}", f"origin/{main_branch}"),
    ):
        if git("show-ref", "--verify", "--quiet", ref).returncode == 0:
            return name
    return None


def inspect_checkout(main_branch: str, compared: list[Path]) -> Checkout:
    """The facts `choose_base` needs, from git."""
    require_git()
    shown_branch = git("symbolic-ref", "--quiet", "--short", "HEAD")
    branch = shown_branch.stdout.strip() if shown_branch.returncode == 0 else None
    main_ref = find_main_ref(main_branch)
    merge_base = None
    if main_ref is not None:
        forked = git("merge-base", "HEAD", main_ref, "--")
        if forked.returncode == 0:
            merge_base = short_sha(forked.stdout.strip())
    # HEAD^2 exists only for a merge commit.
    is_merge = git("rev-parse", "--verify", "--quiet", "HEAD^2^{commit}").returncode == 0
    status = git("status", "--porcelain", "--", *(p.as_posix() for p in compared))
    return Checkout(
        branch=branch,
        main_ref=main_ref,
        merge_base=merge_base,
        merge_parent=short_sha("HEAD^1") if is_merge else None,
        has_parent=short_sha("HEAD~1") is not None,
        is_clean=status.returncode == 0 and not status.stdout.strip(),
    )


def describe(rev: str) -> str:
    """The short sha and subject (at most MAX_SUBJECT_CHARS) of the commit `rev` names;
    fails on an unknown revision."""
    require_git()
    if rev.startswith("-"):  # git would read it as an option
        raise PipelineError(f"--rev {rev}: a revision cannot start with '-'")
    subject = f"%<({MAX_SUBJECT_CHARS},trunc)%s"  # padded with spaces to it, stripped below
    shown = git("log", "-1", f"--format=%h {subject}", f"{rev}^{{commit}}", "--")
    if shown.returncode != 0:
        raise PipelineError(f"--rev {rev}: not a git revision in this repository")
    return shown.stdout.strip()


def resolve_base(rev: str | None, main_branch: str, compared: list[Path]) -> tuple[str, str, str]:
    """(revision, title, why) of the report's base: `rev` as given (a full sha shortened,
    as CI passes one and the short one reads better), else the one `choose_base` picks
    for this checkout and the `compared` files. `why` is Markdown."""
    if rev is None:
        rev, why = choose_base(inspect_checkout(main_branch, compared), main_branch)
        return rev, describe(rev), why
    title = describe(rev)
    if FULL_SHA.fullmatch(rev):
        rev = title.split(" ", 1)[0]
    return rev, title, f"{inline_code(rev)}, as given (--rev)"
