"""Write a Markdown review report: the workspace's metrics, params and figures against a
git revision, ready to paste into a pull request.

Without --rev the base is chosen (and named at the top of the report), first match wins:
- HEAD detached at a merge commit, as a pull request's checkout on GitHub Actions is
  (refs/pull/N/merge): its first parent, the branch the pull request merges into;
- on a branch other than --main-branch, or detached elsewhere: where HEAD forked from
  --main-branch (the merge-base), from the local branch or, where there is none (a CI
  clone has only origin/* refs), from origin/<main-branch>;
- else (on it, or no main branch to fork from): HEAD when the compared files have
  uncommitted changes, else HEAD~1 (the last commit's change). With no main branch the
  report says so: pass --rev there. The review workflow always passes the pull
  request's base commit as --rev.

--comment-out also writes the pull request comment: the same tables and verdict without
figures or relative links, one line linking to --figures-url (the workflow run, whose
artifact holds the report and the figures), cut to GitHub's comment size limit.

Example (what `make report` runs; the review workflow adds --comment-out, --figures-url):
  python scripts/report.py --params params.yaml \
      --metrics metrics/evaluate.json metrics/train/metrics.json \
      --figures figures/evaluate --predictions metrics/evaluate/predictions_test.csv \
      --seeds metrics/seeds.json --out report.md
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import atomic_file
from mnist_pipeline.review import report_figures
from mnist_pipeline.review.comment import build_comment, check_url
from mnist_pipeline.review.git import choose_base, describe, inspect_checkout, text_at
from mnist_pipeline.review.markdown import inline_code
from mnist_pipeline.review.report import figure_sections, join_sections, report_sections

FULL_SHA = re.compile(r"[0-9a-f]{40}")

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
parser.add_argument(
    "--comment-out", type=Path, help="also write the pull request comment here (no figures)"
)
parser.add_argument(
    "--figures-url", help="where the comment says the figures are (the workflow run's page)"
)


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


def figure_links(folders: list[Path], out: Path | None) -> tuple[list[str], list[str]]:
    """The PNGs in `folders`, as paths relative to the report's own directory, so the
    links work wherever --out puts it; and the folders without any in the workspace (DVC
    caches the figures: a fresh clone has them after `dvc pull`)."""
    found = {folder: sorted(folder.glob("*.png")) if folder.is_dir() else [] for folder in folders}
    missing = [folder.as_posix() for folder, pngs in found.items() if not pngs]
    base = out.parent if out is not None else Path()
    links = [Path(os.path.relpath(p, base)).as_posix() for pngs in found.values() for p in pngs]
    return links, missing


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
    if (args.comment_out is None) != (args.figures_url is None):
        raise PipelineError("--comment-out and --figures-url go together")
    if args.figures_url is not None:
        check_url(args.figures_url)  # before anything is written
    compared = [Path(args.params), *args.metrics, *args.figures]
    compared += [p for p in (args.predictions, args.seeds) if p is not None]
    if args.rev is None:
        args.rev, why = choose_base(inspect_checkout(args.main_branch, compared), args.main_branch)
        title = describe(args.rev)
    else:
        title = describe(args.rev)
        if FULL_SHA.fullmatch(args.rev):  # CI passes one; the short one reads better
            args.rev = title.split(" ", 1)[0]
        why = f"{inline_code(args.rev)}, as given (--rev)"
    params_path = Path(args.params)
    new_params = parse(read_workspace(params_path), params_path)
    new_metrics = {p.as_posix(): parse(read_workspace(p), p) for p in args.metrics}
    old_metrics = {p.as_posix(): parse_at(args.rev, p) for p in args.metrics}
    params = (params_path.as_posix(), parse_at(args.rev, params_path), new_params)
    figures, missing_figures = figure_links(args.figures, args.out)
    predictions = None if args.predictions is None else texts(args.rev, args.predictions)
    seeds = None if args.seeds is None else parsed(args.rev, args.seeds)
    try:
        images = render_images(args)
        sections = report_sections(
            args.rev, title, params, old_metrics, new_metrics, predictions, seeds, why
        )
    except ValueError as exc:  # a predictions or seeds file of an unknown layout
        raise PipelineError(str(exc)) from exc
    report = join_sections([*sections, *figure_sections(figures, images, missing_figures)])
    comment = None if args.comment_out is None else build_comment(sections, args.figures_url)
    if comment is not None:
        with atomic_file(args.comment_out) as tmp:
            tmp.write_text(comment)
    if args.out is None:
        sys.stdout.write(report)
        return
    with atomic_file(args.out) as tmp:
        tmp.write_text(report)
    print(f"report: wrote {args.out} (workspace against {args.rev}: {title}; base: {why})")
    if comment is not None:
        print(f"report: wrote {args.comment_out} ({len(comment):,} characters)")


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
