"""Write an HTML template for `dvc plots show/diff --html-template` that works offline.

DVC's own page loads Vega, Vega-Lite and Vega-Embed from a CDN, so its charts stay blank
without internet access. This template inlines local copies of the three scripts
(`make plots` downloads the pinned npm packages once), so the page DVC writes is one
self-contained file. DVC fills in `{plot_divs}`; the template leaves out its `{scripts}`
placeholder, which would add the CDN tags.

Example (what `make plots` runs):
  python scripts/plots_template.py --js-dir .vega --out .vega/template.html
"""

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import atomic_file

# In load order: vega-lite and vega-embed need vega.
SCRIPTS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <title>DVC plots</title>
{inline_scripts}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""

parser = stage_parser(__doc__.split("\n\n")[0])
parser.add_argument(
    "--js-dir", required=True, type=Path, help="folder holding " + ", ".join(SCRIPTS)
)
parser.add_argument("--out", required=True, type=Path, help="template to write")


def offline_template(scripts: dict[str, str]) -> str:
    """The page with each script's text (name -> JavaScript) inlined in load order."""
    for name, text in scripts.items():
        if "</script" in text.lower():  # would end the inline element early
            raise PipelineError(f"{name}: contains '</script', cannot be inlined")
    inline = "\n".join(f"    <script>\n{scripts[name]}\n    </script>" for name in SCRIPTS)
    return PAGE.format(inline_scripts=inline)


def read_scripts(js_dir: Path) -> dict[str, str]:
    missing = [name for name in SCRIPTS if not (js_dir / name).is_file()]
    if missing:
        raise PipelineError(f"{js_dir}: no {', '.join(missing)} (run `make plots`)")
    return {name: (js_dir / name).read_text(encoding="utf8") for name in SCRIPTS}


def main(args: argparse.Namespace) -> None:
    page = offline_template(read_scripts(args.js_dir))
    with atomic_file(args.out) as tmp:
        tmp.write_text(page, encoding="utf8")
    print(f"plots_template: wrote {args.out} ({len(page) // 1024} KiB, works offline)")


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
