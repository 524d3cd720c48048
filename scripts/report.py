"""Write a Markdown review report: the workspace's metrics, params and figures against a
git revision, ready to paste into a pull request.

Without --rev the base is chosen (and named at the top of the report): on a branch other
than --main-branch, where it forked from that branch (the merge-base); on it, HEAD when
the compared files have uncommitted changes, else HEAD~1 (the last commit's change).

Example (what `make report` runs):
  python scripts/report.py --params params.yaml \
      --metrics metrics/evaluate.json metrics/train/metrics.json \
      --figures metrics/evaluate --predictions metrics/evaluate/predictions_test.csv \
      --seeds metrics/seeds.json --out report.md
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import atomic_file
from mnist_pipeline.review import report_figures
from mnist_pipeline.review.report import build_report

parser = stage_parser(__doc__.split("\n\n")[0])
parser.add_argument("--rev", help="git revision to compare against (default: chosen, see above)")
parser.add_argument(
    "--main-branch", default="main", help="the branch pull requests go to (%(default)s)"
)
parser.add_argument(
    "--metrics", required=True, nargs="+", type=Path, help="metrics JSON files to compare"
)
parser.add_argument(
    "--figures", type=Path, action="append", default=[], help="directory of PNG figures to link"
)
parser.add_argument(
    "--predictions", type=Path, help="per-image test predictions CSV for the paired test"
)
parser.add_argument("--seeds", type=Path, help="multi-seed summary JSON (scripts/seeds.py)")
parser.add_argument(
    "--images", type=Path, help="folder for the PNGs the report embeds (both revisions in each)"
)
parser.add_argument(
    "--curves", type=Path, nargs="*", default=[], help="training-log TSVs (epoch, train, valid)"
)
parser.add_argument("--per-class", type=Path, help="per-class scores CSV (class, ..., f1)")
parser.add_argument("--out", type=Path, help="Markdown file to write (default: stdout)")


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=False)


def choose_base(
    branch: str | None,
    main_branch: str,
    is_clean: bool,
    merge_base: str | None,
    has_parent: bool,
) -> tuple[str, str]:
    """(revision, why) to compare the workspace with when none is given. `branch` is the
    current branch (None when detached), `is_clean` whether the compared files have no
    uncommitted changes, `merge_base` where HEAD forked from `main_branch` (None if unknown)."""
    if branch != main_branch and merge_base is not None:
        why = f"`{merge_base}`, where this branch forked from `{main_branch}` (their merge-base)"
        return merge_base, why
    if not is_clean:
        return "HEAD", "`HEAD`, as the workspace has uncommitted changes to params or metrics"
    if has_parent:
        return "HEAD~1", "`HEAD~1`: the workspace is clean, so the last commit's change"
    return "HEAD", "`HEAD`: the workspace is clean and HEAD has no parent"


def default_base(main_branch: str, compared: list[Path]) -> tuple[str, str]:
    """`choose_base` fed by git."""
    require_git()
    shown_branch = git("symbolic-ref", "--quiet", "--short", "HEAD")
    branch = shown_branch.stdout.strip() if shown_branch.returncode == 0 else None
    status = git("status", "--porcelain", "--", *(p.as_posix() for p in compared))
    forked = git("merge-base", "HEAD", main_branch, "--")
    merge_base = None
    if forked.returncode == 0:
        merge_base = git("rev-parse", "--short", forked.stdout.strip()).stdout.strip()
    has_parent = git("rev-parse", "--verify", "--quiet", "HEAD~1^{commit}").returncode == 0
    is_clean = status.returncode == 0 and not status.stdout.strip()
    return choose_base(branch, main_branch, is_clean, merge_base or None, has_parent)


def require_git() -> None:
    if git("rev-parse", "--git-dir").returncode != 0:
        raise PipelineError("not inside a git repository; run the report from the repository")


def describe(rev: str) -> str:
    """The short sha and subject of the commit `rev` names; fails on an unknown revision."""
    require_git()
    if rev.startswith("-"):  # git would read it as an option
        raise PipelineError(f"--rev {rev}: a revision cannot start with '-'")
    shown = git("log", "-1", "--format=%h %s", f"{rev}^{{commit}}", "--")
    if shown.returncode != 0:
        raise PipelineError(f"--rev {rev}: not a git revision in this repository")
    return shown.stdout.strip()


def text_at(rev: str, path: Path) -> str | None:
    """The file's text at `rev`, or None if it did not exist there. `./` makes the path
    relative to the current directory, as the user typed it, not to the git root."""
    shown = git("show", f"{rev}:./{path.as_posix()}")
    return shown.stdout if shown.returncode == 0 else None


def read_workspace(path: Path) -> str:
    if not path.is_file():
        raise PipelineError(f"{path}: no such file in the workspace (run `dvc repro` first?)")
    return path.read_text()


def parse(text: str, path: Path) -> Any:
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{path}: not valid {path.suffix[1:]}: {exc}") from exc
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping at the top level")
    return data


def texts(rev: str, path: Path) -> tuple[str, str | None, str | None]:
    """(path, text at rev, text in the workspace); None where the file is not there."""
    workspace = path.read_text() if path.is_file() else None
    return path.as_posix(), text_at(rev, path), workspace


def both_sides(rev: str, path: Path | None) -> tuple[str | None, str | None]:
    """(text at rev, text in the workspace) of an optional file."""
    return (None, None) if path is None else texts(rev, path)[1:]


def parsed(rev: str, path: Path) -> tuple[str, Any, Any]:
    """`texts`, parsed."""
    name, old, new = texts(rev, path)
    old_data = None if old is None else parse(old, path)
    new_data = None if new is None else parse(new, path)
    return name, old_data, new_data


def parse_at(rev: str, path: Path) -> Any:
    text = text_at(rev, path)
    return None if text is None else parse(text, path)


def figure_links(folders: list[Path], out: Path | None) -> list[str]:
    """The PNGs in `folders`, as paths relative to the report's own directory, so the
    links work wherever --out puts it."""
    for folder in folders:
        if not folder.is_dir():
            raise PipelineError(f"{folder}: no such directory in the workspace")
    base = out.parent if out is not None else Path()
    pngs = [p for folder in folders for p in sorted(folder.glob("*.png"))]
    return [Path(os.path.relpath(p, base)).as_posix() for p in pngs]


def render_images(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The embedded PNGs into --images; (title, path relative to the report) of each."""
    if args.images is None:
        return []
    curves = {path.stem: both_sides(args.rev, path) for path in args.curves}
    predictions = both_sides(args.rev, args.predictions)
    per_class = both_sides(args.rev, args.per_class)
    labels = (args.rev, "workspace")
    written = report_figures.render_all(args.images, labels, curves, predictions, per_class)
    base = args.out.parent if args.out is not None else Path()
    return [(title, Path(os.path.relpath(path, base)).as_posix()) for title, path in written]


def main(args: argparse.Namespace) -> None:
    compared = [Path(args.params), *args.metrics, *args.figures]
    compared += [p for p in (args.predictions, args.seeds) if p is not None]
    if args.rev is None:
        args.rev, why = default_base(args.main_branch, compared)
    else:
        why = f"`{args.rev}`, as given (--rev)"
    title = describe(args.rev)
    params_path = Path(args.params)
    new_params = parse(read_workspace(params_path), params_path)
    new_metrics = {p.as_posix(): parse(read_workspace(p), p) for p in args.metrics}
    old_metrics = {p.as_posix(): parse_at(args.rev, p) for p in args.metrics}
    params = (params_path.as_posix(), parse_at(args.rev, params_path), new_params)
    figures = figure_links(args.figures, args.out)
    predictions = None if args.predictions is None else texts(args.rev, args.predictions)
    seeds = None if args.seeds is None else parsed(args.rev, args.seeds)
    try:
        images = render_images(args)
        report = build_report(
            args.rev,
            title,
            params,
            old_metrics,
            new_metrics,
            figures,
            predictions,
            seeds,
            why,
            images,
        )
    except ValueError as exc:  # a predictions or seeds file of an unknown layout
        raise PipelineError(str(exc)) from exc
    if args.out is None:
        sys.stdout.write(report)
        return
    with atomic_file(args.out) as tmp:
        tmp.write_text(report)
    print(f"report: wrote {args.out} (workspace against {args.rev}: {title}; base: {why})")


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
