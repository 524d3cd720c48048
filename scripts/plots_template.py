"""Write an HTML template for `dvc plots show/diff` that works offline (Vega inlined, no
CDN), and with --configure-dvc make it the default of plain `dvc plots show/diff` in
this checkout (plots.html_template in .dvc/config.local). See
mnist_pipeline.review.plots_page.

Examples (`make plots` runs the first, `make install` both):
  python scripts/plots_template.py --js-dir .vega --out .vega/template.html
  python scripts/plots_template.py --out .vega/template.html --configure-dvc
"""

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import atomic_file
from mnist_pipeline.review.plots_page import (
    SCRIPTS,
    configure_dvc,
    offline_template,
    read_scripts,
)

parser = stage_parser(__doc__.split("\n\n")[0])
parser.add_argument(
    "--js-dir", type=Path, help="write --out from the folder holding " + ", ".join(SCRIPTS)
)
parser.add_argument("--out", required=True, type=Path, help="the template")
parser.add_argument(
    "--configure-dvc",
    action="store_true",
    help="point plain `dvc plots show/diff` at --out (.dvc/config.local)",
)
parser.add_argument(
    "--dvc-dir", type=Path, default=Path(".dvc"), help="the repository's .dvc (%(default)s)"
)


def main(args: argparse.Namespace) -> None:
    if args.js_dir is None and not args.configure_dvc:
        raise PipelineError("nothing to do: give --js-dir (write --out), --configure-dvc, or both")
    if args.js_dir is not None:
        page = offline_template(read_scripts(args.js_dir))
        with atomic_file(args.out) as tmp:
            tmp.write_text(page, encoding="utf8")
        print(f"plots_template: wrote {args.out} ({len(page) // 1024} KiB, works offline)")
    if args.configure_dvc:
        value = configure_dvc(args.out, args.dvc_dir)
        print(
            f"plots_template: plain `dvc plots show/diff` use {args.out} "
            f"(plots.html_template = {value} in {args.dvc_dir / 'config.local'})"
        )


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
