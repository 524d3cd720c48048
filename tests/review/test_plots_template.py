"""The offline HTML template for `dvc plots`: local scripts inlined, no CDN, and DVC's
renderer accepts it; after `make install`, plain `dvc plots show` uses it, and without
npm `make install` still succeeds, saying so in one line (fake scripts: no npm needed)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_render.html import render_html
from dvc_render.vega import VegaRenderer

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.review.plots_page import offline_template
from tests.support import REPO, python_env

SCRIPT = REPO / "scripts/plots_template.py"
CDN = "cdn.jsdelivr.net"

FAKE = {
    "vega.min.js": "var vega = {version: 'fake'};",
    "vega-lite.min.js": "var vegaLite = {};",
    "vega-embed.min.js": "function vegaEmbed(el, spec) { return spec; }",
}


def test_the_template_inlines_the_scripts_in_load_order_and_loads_nothing_remote(tmp_path):
    template = offline_template(FAKE)
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
        offline_template(broken)


def test_the_cli_writes_the_template_or_names_the_missing_scripts(tmp_path):
    env = python_env()
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
    assert (tmp_path / "t.html").read_text() == offline_template(FAKE)


def _run(cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    env = python_env(DVC_NO_ANALYTICS="1")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.e2e
def test_plain_dvc_plots_show_renders_offline_once_install_configured_dvc(tmp_path):
    """What `make install` runs (the template from the scripts, then --configure-dvc),
    then `dvc plots show` with no --html-template, in a throwaway git + DVC repository."""
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc = [sys.executable, "-m", "dvc"]
    for command in (["git", "init", "-q"], [*dvc, "init", "-q"]):
        assert _run(repo, *command).returncode == 0
    (repo / "loss.tsv").write_text("epoch\tloss\n1\t0.9\n2\t0.5\n")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": [{"loss.tsv": {"x": "epoch"}}]}))
    (repo / "js").mkdir()
    for name, text in FAKE.items():
        (repo / "js" / name).write_text(text)

    def page(out: str) -> str:
        shown = _run(repo, *dvc, "plots", "show", "-o", out)
        assert shown.returncode == 0, shown.stderr
        return (repo / out / "index.html").read_text()

    assert CDN in page("before")  # DVC's own page
    script = [sys.executable, str(SCRIPT), "--js-dir", "js", "--out", ".vega/template.html"]
    configured = _run(repo, *script, "--configure-dvc")
    assert configured.returncode == 0, configured.stderr
    assert "plots.html_template = ../.vega/template.html in .dvc/config.local" in (
        configured.stdout
    )
    assert "html_template" not in (repo / ".dvc/config").read_text()  # nothing to commit
    after = page("after")
    assert CDN not in after and "<script src" not in after
    assert all(text in after for text in FAKE.values())
    assert '"title": {"text": "loss.tsv"' in after  # the plot itself


def test_configure_dvc_needs_the_template_and_a_dvc_repository(tmp_path):
    command = [sys.executable, str(SCRIPT), "--out", "t.html", "--configure-dvc"]
    missing = _run(tmp_path, *command)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "t.html: no such template (build it first: make install)" in missing.stderr
    (tmp_path / "t.html").write_text(offline_template(FAKE))
    no_repo = _run(tmp_path, *command)
    assert no_repo.returncode == 1 and ".dvc: no such directory" in no_repo.stderr
    nothing = _run(tmp_path, sys.executable, str(SCRIPT), "--out", "t.html")
    assert nothing.returncode == 1 and "nothing to do" in nothing.stderr


@pytest.mark.slow
def test_make_install_without_npm_succeeds_and_says_so_in_one_line(tmp_path):
    """NPM=false stands for a machine without npm or its registry. The venv's stamp is
    taken as up to date (-o): only the offline-plots step runs."""
    torch = REPO / ".venv/torch"
    stamp = f".venv/.installed-{torch.read_text().strip() if torch.is_file() else 'cpu'}"
    vega = tmp_path / ".vega"
    command = ["make", "-s", "-C", str(REPO), "-o", stamp, "install", f"VEGA_DIR={vega}"]
    done = _run(REPO, *command, "NPM=false")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.count("\n") == 1
    assert done.stdout.startswith("install: plain `dvc plots show/diff` pages will load Vega")
    assert "npm" in done.stdout and f"{vega}/install.log" in done.stdout
    assert not (vega / "template.html").exists()
