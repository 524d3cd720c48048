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
import sys
from pathlib import Path

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import atomic_file
from mnist_pipeline.review.assemble import ReportRequest, assemble
from mnist_pipeline.review.comment import check_url

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


def main(args: argparse.Namespace) -> None:
    if (args.comment_out is None) != (args.figures_url is None):
        raise PipelineError("--comment-out and --figures-url go together")
    if args.figures_url is not None:
        check_url(args.figures_url)  # before anything is written
    request = ReportRequest(
        params=Path(args.params),
        metrics=args.metrics,
        rev=args.rev,
        main_branch=args.main_branch,
        figures=args.figures,
        predictions=args.predictions,
        seeds=args.seeds,
        images=args.images,
        curves=args.curves,
        per_class=args.per_class,
        out=args.out,
        figures_url=args.figures_url,
    )
    built = assemble(request)
    if built.comment is not None:
        with atomic_file(args.comment_out) as tmp:
            tmp.write_text(built.comment)
    if args.out is None:
        sys.stdout.write(built.report)
        return
    with atomic_file(args.out) as tmp:
        tmp.write_text(built.report)
    against = f"workspace against {built.rev}: {built.title}; base: {built.why}"
    print(f"report: wrote {args.out} ({against})")
    if built.comment is not None:
        print(f"report: wrote {args.comment_out} ({len(built.comment):,} characters)")


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
