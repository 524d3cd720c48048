"""An HTML template for `dvc plots show/diff` that works offline, and DVC pointed at it.

DVC's own page loads Vega, Vega-Lite and Vega-Embed from a CDN, so its charts stay blank
without internet access. This template inlines local copies of the three scripts (the
Makefile fetches the pinned npm packages once), so the page DVC writes is one
self-contained file. DVC fills in `{plot_divs}`; the template leaves out its `{scripts}`
placeholder, which would add the CDN tags.

`dvc plots show/diff --html-template` takes a template per command; DVC's
`plots.html_template` setting (a path relative to the .dvc directory) makes one the
default. `configure_dvc` sets it in `.dvc/config.local`: the template is a build output
of this checkout, not something to commit.
"""

import os
import subprocess
import sys
from pathlib import Path

from mnist_pipeline.errors import PipelineError

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


def configure_dvc(template: Path, dvc_dir: Path) -> str:
    """Make `template` the default of plain `dvc plots show/diff` in the repository
    whose .dvc directory is `dvc_dir` (its config.local); return the setting's value,
    the template's path relative to `dvc_dir` (the checkout can move)."""
    if not template.is_file():
        raise PipelineError(f"{template}: no such template (build it first: make install)")
    if not dvc_dir.is_dir():
        raise PipelineError(f"{dvc_dir}: no such directory (not a DVC repository?)")
    value = os.path.relpath(template.resolve(), dvc_dir.resolve())
    command = [sys.executable, "-m", "dvc", "config", "--local", "plots.html_template", value]
    done = subprocess.run(command, cwd=dvc_dir.parent, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no message)"]
        raise PipelineError(f"dvc config --local plots.html_template failed: {lines[-1]}")
    return value
