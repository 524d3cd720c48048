"""The offline HTML template for `dvc plots`: local scripts inlined, no CDN, and DVC's
renderer accepts it (fake scripts: no npm needed)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dvc_render.html import render_html
from dvc_render.vega import VegaRenderer

from mnist_pipeline.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts/plots_template.py"


def _load():
    spec = importlib.util.spec_from_file_location("plots_template", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAKE = {
    "vega.min.js": "var vega = {version: 'fake'};",
    "vega-lite.min.js": "var vegaLite = {};",
    "vega-embed.min.js": "function vegaEmbed(el, spec) { return spec; }",
}


def test_the_template_inlines_the_scripts_in_load_order_and_loads_nothing_remote(tmp_path):
    template = _load().offline_template(FAKE)
    positions = [template.index(text) for text in FAKE.values()]
    assert positions == sorted(positions)
    assert "{plot_divs}" in template and "{scripts}" not in template
    assert "http" not in template
    # DVC's renderer fills it with a chart and adds no CDN tag.
    spec = {"mark": "line", "data": {"values": [{"epoch": 1, "train": 0.5}]}}
    renderer = VegaRenderer([], "Loss", template="linear", x="epoch", y="train")
    renderer.generate_html = lambda html_path=None: f"<div>{spec}</div>"
    page_path = tmp_path / "index.html"
    render_html([renderer], page_path, html_template=template)
    page = page_path.read_text()
    assert "cdn.jsdelivr.net" not in page and "{plot_divs}" not in page
    assert f"<div>{spec}</div>" in page and FAKE["vega.min.js"] in page


def test_a_script_that_would_end_its_element_early_is_refused():
    broken = {**FAKE, "vega.min.js": "var s = '</SCRIPT>';"}
    with pytest.raises(PipelineError, match=r"vega\.min\.js: contains '</script'"):
        _load().offline_template(broken)


def test_the_cli_writes_the_template_or_names_the_missing_scripts(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, str(SCRIPT), "--js-dir", "js", "--out", "t.html"]
    missing = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "js: no vega.min.js, vega-lite.min.js, vega-embed.min.js (run `make plots`)" in (
        missing.stderr
    )
    (tmp_path / "js").mkdir()
    for name, text in FAKE.items():
        (tmp_path / "js" / name).write_text(text)
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "t.html").read_text() == _load().offline_template(FAKE)
