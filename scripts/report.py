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

Every file is read within a limit of its kind (review/inputs.py: 1 MB for metrics,
params, seeds, per-class and curves, 2 MB for predictions; a revision's file is sized by
git before it is read), and parsed within limits of depth, values, names and classes;
past one, a one-line error names the file, the revision or the workspace, and the limit.
report.md is at most 1 MB, the per-class table its 20 largest changes.

Example (what `make report` runs; the review workflow adds --comment-out, --figures-url):
  python scripts/report.py --params params.yaml \
      --metrics metrics/evaluate.json metrics/train/metrics.json \
      --figures figures/evaluate --predictions metrics/evaluate/predictions_test.csv \
      --seeds metrics/seeds.json --out report.md
"""

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import atomic_file
from mnist_pipeline.review import inputs, report_figures
from mnist_pipeline.review.comment import build_comment, check_url
from mnist_pipeline.review.git import choose_base, describe, inspect_checkout
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


def read_workspace(path: Path, limit: int) -> dict[str, Any]:
    """A metrics or params file the workspace must have, parsed (within `limit` bytes)."""
    text = inputs.workspace_text(path, limit)
    if text is None:
        raise PipelineError(f"{path}: no such file in the workspace (run `dvc repro` first?)")
    return inputs.parse(text, path, None)


def parse_at(rev: str, path: Path, limit: int) -> dict[str, Any] | None:
    text = inputs.text_at(rev, path, limit)
    return None if text is None else inputs.parse(text, path, rev)


def checked_texts(
    rev: str, path: Path | None, limit: int, check: Callable[[str, Path, str | None], None]
) -> tuple[str | None, str | None]:
    """(text at rev, text in the workspace) of an optional file, each within `limit`
    bytes and passed by `check`; None where it is not there."""
    sides = inputs.both_texts(rev, path, limit)
    if path is not None:
        for side_rev, text in zip((rev, None), sides, strict=True):
            if text is not None:
                check(text, path, side_rev)
    return sides


def figure_links(folders: list[Path], out: Path | None) -> tuple[list[str], list[str]]:
    """The PNGs in `folders`, as paths relative to the report's own directory, so the
    links work wherever --out puts it; and the folders without any in the workspace (DVC
    caches the figures: a fresh clone has them after `dvc pull`)."""
    found = {folder: sorted(folder.glob("*.png")) if folder.is_dir() else [] for folder in folders}
    missing = [folder.as_posix() for folder, pngs in found.items() if not pngs]
    base = out.parent if out is not None else Path()
    links = [Path(os.path.relpath(p, base)).as_posix() for pngs in found.values() for p in pngs]
    return links, missing


def render_images(
    args: argparse.Namespace,
    predictions: tuple[str | None, str | None],
    per_class: tuple[str | None, str | None],
) -> list[tuple[str, str]]:
    """The embedded PNGs into --images; (title, path relative to the report) of each."""
    if args.images is None:
        return []
    curves = {
        path.stem: checked_texts(args.rev, path, inputs.MAX_CURVE_BYTES, inputs.check_curve)
        for path in args.curves
    }
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
    new_params = read_workspace(params_path, inputs.MAX_PARAMS_BYTES)
    metrics_limit = inputs.MAX_METRICS_BYTES
    new_metrics = {p.as_posix(): read_workspace(p, metrics_limit) for p in args.metrics}
    old_metrics = {p.as_posix(): parse_at(args.rev, p, metrics_limit) for p in args.metrics}
    old_params = parse_at(args.rev, params_path, inputs.MAX_PARAMS_BYTES)
    params = (params_path.as_posix(), old_params, new_params)
    figures, missing_figures = figure_links(args.figures, args.out)
    predicted = checked_texts(
        args.rev, args.predictions, inputs.MAX_PREDICTIONS_BYTES, inputs.check_predictions
    )
    per_class = checked_texts(
        args.rev, args.per_class, inputs.MAX_PER_CLASS_BYTES, inputs.check_per_class
    )
    seeds = None
    if args.seeds is not None:
        seeds = (
            args.seeds.as_posix(),
            *inputs.parse_both(args.rev, args.seeds, inputs.MAX_SEEDS_BYTES),
        )
    try:  # the sections first: the figures are files, not to be left by a failure
        sections = report_sections(
            args.rev,
            title,
            params,
            old_metrics,
            new_metrics,
            None if args.predictions is None else (args.predictions.as_posix(), *predicted),
            seeds,
            why,
            None if args.per_class is None else (args.per_class.as_posix(), *per_class),
        )
        images = render_images(args, predicted, per_class)
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
