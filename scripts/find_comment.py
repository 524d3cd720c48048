"""Print the id of the review comment to edit on a pull request, or nothing: read the
output of `gh api --paginate repos/OWNER/REPO/issues/N/comments` on stdin and find the
first comment by --author whose body starts with the review comment's hidden marker
(review/comment.py writes it). The review workflow edits that comment, else creates one.

Example (what .github/workflows/review.yml runs):
  gh api --paginate repos/o/r/issues/7/comments \\
    | python scripts/find_comment.py --author 'github-actions[bot]'
"""

import argparse
import sys

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.review.comment import MARKER, comment_to_update

parser = stage_parser(__doc__.split("\n\n")[0])
parser.add_argument("--author", required=True, help="login of the comment's author")
parser.add_argument("--marker", default=MARKER, help="the body's first line (%(default)s)")


def main(args: argparse.Namespace) -> None:
    found = comment_to_update(sys.stdin.read(), args.author, args.marker)
    if found is not None:
        print(found)


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
