"""The review report: Markdown from plain data (the library), and the CLI in a tiny git
repository (git only, no dvc, so it stays fast)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.review.report import (
    MISSING,
    build_report,
    changed_params,
    figures_section,
    flatten,
    format_delta,
    format_value,
    markdown_table,
    metrics_rows,
)

REPO = Path(__file__).resolve().parents[1]


def test_flatten_names_leaves_as_dvc_does_and_keeps_lists_whole():
    tree = {"test": {"accuracy": 0.9, "ece": 0.1}, "model": {"hidden_sizes": [128, 256]}}
    assert flatten(tree) == {
        "test.accuracy": 0.9,
        "test.ece": 0.1,
        "model.hidden_sizes": [128, 256],
    }
    assert flatten({"checksums": {}}) == {"checksums": {}}  # an empty mapping is a value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.845, "0.845"),
        (0.00011999999999999988, "0.00012"),
        (25450, "25450"),  # ints whole, never 2.545e+04
        (True, "true"),
        ([128, 256], "[128,256]"),
        ("adamw", "adamw"),
        (None, MISSING),
        (float("nan"), "nan"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_format_delta_is_signed_and_only_for_two_numbers():
    assert format_delta(0.845, 0.945) == "+0.1"  # not +0.09999999999999998
    assert format_delta(0.2, 0.1) == "-0.1"
    assert format_delta(3, 1) == "-2"
    assert format_delta(0.5, 0.5) == "0"
    assert format_delta(None, 0.5) == MISSING
    assert format_delta(True, 0.5) == MISSING


def test_metrics_rows_cover_every_numeric_metric_of_either_side():
    old = {"test": {"accuracy": 0.8, "gone": 1.0}, "note": "text", "flag": True}
    new = {"test": {"accuracy": 0.9, "added": 2}, "step": 0}
    assert metrics_rows(old, new) == [
        ["step", MISSING, "0", MISSING],
        ["test.accuracy", "0.8", "0.9", "+0.1"],
        ["test.added", MISSING, "2", MISSING],
        ["test.gone", "1", MISSING, MISSING],
    ]


def test_changed_params_lists_only_differences_including_added_removed_and_null():
    old = {"train": {"lr": 0.003, "epochs": 20}, "model": {"hidden_sizes": [128, 256]}}
    new = {"train": {"lr": 0.03, "epochs": 20, "seed": None}, "model": {"hidden_sizes": [64]}}
    assert changed_params(old, new) == [
        ["model.hidden_sizes", "[128,256]", "[64]"],
        ["train.lr", "0.003", "0.03"],
        ["train.seed", MISSING, "null"],
    ]
    assert changed_params(new, new) == []


def test_markdown_table_escapes_pipes_and_right_aligns_numbers():
    table = markdown_table(["name", "old", "new"], [["a|b", "1", "2"]], numeric=2)
    assert table.splitlines() == [
        "| name | old | new |",
        "| --- | ---: | ---: |",
        "| a\\|b | 1 | 2 |",
    ]


def test_figures_section_links_each_png_by_its_name():
    text = figures_section(["metrics/evaluate/confusion_test.png"])
    assert "- [confusion_test.png](metrics/evaluate/confusion_test.png)" in text
    assert "No figures." in figures_section([])


def test_build_report_has_every_section_and_marks_a_file_missing_at_the_revision():
    report = build_report(
        "HEAD",
        "1a2b3c4 baseline",
        ("params.yaml", {"train": {"lr": 0.003}}, {"train": {"lr": 0.01}}),
        {"metrics/evaluate.json": {"test": {"accuracy": 0.8}}, "metrics/train.json": None},
        {"metrics/evaluate.json": {"test": {"accuracy": 0.9}}, "metrics/train.json": {"s": 1}},
        ["metrics/evaluate/a.png"],
    )
    assert report.startswith("## Workspace against `HEAD` (1a2b3c4 baseline)\n")
    assert "| test.accuracy | 0.8 | 0.9 | +0.1 |" in report
    assert "`metrics/train.json` (not in `HEAD`)" in report
    assert "| s | — | 1 | — |" in report
    assert "| train.lr | 0.003 | 0.01 |" in report
    assert "[a.png](metrics/evaluate/a.png)" in report
    assert report.endswith("\n") and not report.endswith("\n\n")


# The CLI, in a throwaway git repository.


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost"}
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@localhost")
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _report(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, str(REPO / "scripts/report.py"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def workspace(tmp_path):
    """A committed params.yaml and metrics file, then a workspace that changes both."""
    (tmp_path / "m").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.003}}))
    (tmp_path / "m/eval.json").write_text(json.dumps({"test": {"accuracy": 0.8}}))
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "baseline")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.01}}))
    (tmp_path / "m/eval.json").write_text(json.dumps({"test": {"accuracy": 0.9}}))
    (tmp_path / "m/conf.png").write_bytes(b"\x89PNG")
    return tmp_path


def test_cli_compares_the_workspace_with_a_revision(workspace):
    args = ["--params", "params.yaml", "--metrics", "m/eval.json", "--figures", "m"]
    result = _report(workspace, *args, "--out", "out/report.md")
    assert result.returncode == 0, result.stderr
    report = (workspace / "out/report.md").read_text()
    assert "baseline)" in report.splitlines()[0]
    assert "| test.accuracy | 0.8 | 0.9 | +0.1 |" in report
    assert "| train.lr | 0.003 | 0.01 |" in report
    assert "[conf.png](../m/conf.png)" in report  # relative to the report's directory
    # Without --out it prints the report.
    assert _report(workspace, *args).stdout == report.replace("../m/", "m/")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rev", "no-such-rev", "--metrics", "m/eval.json"], "--rev no-such-rev: not a git"),
        (["--metrics", "m/missing.json"], "m/missing.json: no such file in the workspace"),
        (["--metrics", "m/eval.json", "--figures", "nope"], "nope: no such directory"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_1(workspace, args, message):
    result = _report(workspace, *args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr
