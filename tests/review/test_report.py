"""The review report: Markdown from plain data (the library), and the CLI in a tiny git
repository (git only, no dvc, so it stays fast)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.review.git import Checkout, choose_base
from mnist_pipeline.review.report import (
    MISSING,
    build_report,
    changed_params,
    correctness,
    figures_section,
    flatten,
    format_delta,
    format_value,
    markdown_table,
    metrics_rows,
    seeds_section,
    significance_section,
)
from tests.support import REPO, python_env


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


def _predictions(labels, predicted):
    rows = [f"{a},{b},0.9000" for a, b in zip(labels, predicted, strict=True)]
    return "label,predicted,confidence\n" + "\n".join(rows) + "\n"


# 200 test images: the old model gets 150 right, the new one 170 (it fixes 30, breaks 10).
LABELS = [i % 10 for i in range(200)]
OLD_PREDICTED = [label if i < 150 else (label + 1) % 10 for i, label in enumerate(LABELS)]
NEW_PREDICTED = [
    (label + 1) % 10 if i < 10 else label if i < 180 else (label + 1) % 10
    for i, label in enumerate(LABELS)
]
OLD_CSV, NEW_CSV = _predictions(LABELS, OLD_PREDICTED), _predictions(LABELS, NEW_PREDICTED)


def test_correctness_reads_label_and_predicted_columns():
    assert correctness(_predictions([1, 2, 3], [1, 0, 3])).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="expected label and predicted columns"):
        correctness("actual,predicted\nT-shirt,Bag\n")


def test_significance_section_gives_the_paired_verdict_and_both_accuracies():
    text = significance_section("main", "p.csv", OLD_CSV, NEW_CSV)
    assert text.startswith("### Is it real?\n")
    assert "Paired on the same 200 test images (`p.csv`):" in text
    assert "| test accuracy | 0.7500 | 0.8500 |" in text
    assert "| right only here | 10 | 30 |" in text
    # McNemar: 10 against 30 discordant images, two-sided p = 0.0022.
    assert "**+10.00 points, 95% CI [" in text
    assert "p = 0.0022: significant at 0.05 (new is better)**" in text


def test_significance_section_says_which_side_lacks_predictions_in_one_line_each():
    text = significance_section("main", "p.csv", None, NEW_CSV)
    assert text.splitlines()[2:] == [
        "`p.csv` is not in `main` (an older metrics layout, or no metrics): no paired test."
    ]
    both = significance_section("main", "p.csv", None, None).splitlines()
    assert [line for line in both if line.startswith("`p.csv`")] == [
        "`p.csv` is not in `main` (an older metrics layout, or no metrics): no paired test.",
        "`p.csv` is not in the workspace (an older metrics layout, or no metrics): no paired test.",
    ]
    shorter = significance_section("main", "p.csv", OLD_CSV, _predictions([1], [1]))
    assert "different test sets (200 and 1 images" in shorter
    with pytest.raises(ValueError, match=r"p\.csv: expected label and predicted"):
        significance_section("main", "p.csv", "a,b\n1,2\n", NEW_CSV)


def _seeds(mean):
    stat = {"mean": mean, "std": 0.002, "min": mean - 0.003, "max": mean + 0.003, "n": 5}
    return {"k": 5, "seeds": [0, 1, 2, 3, 4], "metrics": {"test.accuracy": stat}}


def test_seeds_section_shows_mean_and_std_of_both_sides():
    text = seeds_section("main", "s.json", _seeds(0.89), _seeds(0.9))
    assert (
        "| test.accuracy | 0.8900 ± 0.0020 (min 0.8870, max 0.8930, 5 seeds) "
        "| 0.9000 ± 0.0020 (min 0.8970, max 0.9030, 5 seeds) |"
    ) in text
    missing = seeds_section("main", "s.json", None, _seeds(0.9))
    assert missing.splitlines()[2:] == [
        "`s.json` is not in `main`: no multi-seed summary there (`make seeds` writes it)."
    ]
    with pytest.raises(ValueError, match=r"s\.json: a metric is not mean/std/min/max/n"):
        seeds_section("main", "s.json", {"metrics": {"x": {"mean": 1}}}, _seeds(0.9))


def test_build_report_puts_is_it_real_before_the_metrics():
    report = build_report(
        "main",
        "1a2b3c4 baseline",
        ("params.yaml", {}, {}),
        {"m.json": None},
        {"m.json": {"test": {"accuracy": 0.85}}},
        [],
        ("p.csv", OLD_CSV, NEW_CSV),
        ("s.json", None, None),
    )
    assert report.index("### Is it real?") < report.index("### Over seeds")
    assert report.index("### Over seeds") < report.index("### Metrics")
    assert "`m.json` (not in `main`)" in report


@pytest.mark.parametrize(
    ("branch", "is_clean", "merge_base", "has_parent", "base"),
    [
        ("feature", True, "abc1234", True, "abc1234"),  # a pull request: all of the branch
        ("feature", False, "abc1234", True, "abc1234"),  # ... and its uncommitted changes
        (None, True, "abc1234", True, "abc1234"),  # detached HEAD off main
        ("main", False, "abc1234", True, "HEAD"),  # on main, changed params/metrics
        ("main", True, "abc1234", True, "HEAD~1"),  # on main, clean: the last commit
        ("main", True, "abc1234", False, "HEAD"),  # ... unless it is the first one
        ("feature", True, None, True, "HEAD~1"),  # no main branch: as on main
        ("feature", False, None, True, "HEAD"),
    ],
)
def test_choose_base(branch, is_clean, merge_base, has_parent, base):
    main_ref = "main" if merge_base else None
    checkout = Checkout(branch, main_ref, merge_base, None, has_parent, is_clean)
    rev, why = choose_base(checkout, "main")
    assert rev == base and why.startswith(f"`{base}`")


@pytest.mark.parametrize("merge_base", ["abc1234", None])
@pytest.mark.parametrize("is_clean", [True, False])
def test_choose_base_takes_a_detached_merge_commits_first_parent(merge_base, is_clean):
    """A pull request's checkout on GitHub Actions: the merge commit refs/pull/N/merge,
    detached; its first parent is the branch it merges into, with or without a main."""
    checkout = Checkout(None, "origin/main", merge_base, "def5678", True, is_clean)
    rev, why = choose_base(checkout, "main")
    assert rev == "def5678"
    assert why == "`def5678`, the first parent of the merge commit HEAD (what it merges into)"
    # On a branch a merge commit is the branch's own history: the fork point still wins.
    on_branch = Checkout("feature", "origin/main", "abc1234", "def5678", True, is_clean)
    assert choose_base(on_branch, "main")[0] == "abc1234"


def test_choose_base_names_the_remote_main_and_says_when_there_is_no_main():
    forked = Checkout(None, "origin/main", "abc1234", None, True, False)
    why = choose_base(forked, "main")[1]
    assert why == "`abc1234`, where HEAD forked from `origin/main` (their merge-base)"
    no_main = Checkout(None, None, None, None, True, False)
    assert choose_base(no_main, "main") == (
        "HEAD",
        "`HEAD`, as the workspace has uncommitted changes to params or metrics (no `main` "
        "branch or `origin/main` here to find a fork point; --rev chooses)",
    )


# The CLI, in a throwaway git repository.


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost"}
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@localhost")
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _report(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = python_env()
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


def test_cli_reports_what_it_can_against_a_revision_without_predictions_or_seeds(workspace):
    (workspace / "m/predictions_test.csv").write_text(NEW_CSV)
    (workspace / "m/seeds.json").write_text(json.dumps(_seeds(0.9)))
    args = ["--metrics", "m/eval.json", "--predictions", "m/predictions_test.csv"]
    result = _report(workspace, *args, "--seeds", "m/seeds.json")
    assert result.returncode == 0, result.stderr
    assert (
        "`m/predictions_test.csv` is not in `HEAD` (an older metrics layout, or no metrics): "
        "no paired test."
    ) in result.stdout
    assert "`m/seeds.json` is not in `HEAD`: no multi-seed summary there" in result.stdout
    assert "| test.accuracy | 0.8 | 0.9 | +0.1 |" in result.stdout  # the rest is still there


def test_cli_compares_predictions_and_seeds_of_two_revisions(workspace):
    (workspace / "m/predictions_test.csv").write_text(OLD_CSV)
    (workspace / "m/seeds.json").write_text(json.dumps(_seeds(0.89)))
    _git(workspace, "add", "-A")
    _git(workspace, "commit", "-q", "-m", "with predictions")
    (workspace / "m/predictions_test.csv").write_text(NEW_CSV)
    (workspace / "m/seeds.json").write_text(json.dumps(_seeds(0.9)))
    args = ["--metrics", "m/eval.json", "--predictions", "m/predictions_test.csv"]
    result = _report(workspace, *args, "--seeds", "m/seeds.json")
    assert result.returncode == 0, result.stderr
    assert "p = 0.0022: significant at 0.05 (new is better)" in result.stdout
    assert "| test.accuracy | 0.8900 ± 0.0020" in result.stdout
    (workspace / "m/predictions_test.csv").write_text("actual,predicted\nBag,Bag\n")
    bad = _report(workspace, *args)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "m/predictions_test.csv: expected label and predicted columns" in bad.stderr


def test_cli_without_rev_chooses_the_base_and_says_which(workspace):
    args = ["--params", "params.yaml", "--metrics", "m/eval.json"]
    # On main with changed params and metrics: HEAD.
    report = _report(workspace, *args).stdout
    assert report.splitlines()[0] == "## Workspace against `HEAD` (" + _head(workspace) + ")"
    assert "Base: `HEAD`, as the workspace has uncommitted changes" in report
    # On main, clean: the last commit against its parent.
    _git(workspace, "add", "-A")
    _git(workspace, "commit", "-q", "-m", "lr 0.01")
    report = _report(workspace, *args).stdout
    assert "`HEAD~1` (" in report.splitlines()[0] and "baseline" in report.splitlines()[0]
    assert "| test.accuracy | 0.8 | 0.9 | +0.1 |" in report
    # On a branch two commits past main: where it forked, whatever else is uncommitted.
    fork = _head(workspace).split()[0]
    _git(workspace, "checkout", "-q", "-b", "feature")
    for accuracy in (0.95, 0.97):
        (workspace / "m/eval.json").write_text(json.dumps({"test": {"accuracy": accuracy}}))
        _git(workspace, "commit", "-q", "-am", f"accuracy {accuracy}")
    (workspace / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.1}}))
    report = _report(workspace, *args).stdout
    assert report.splitlines()[0] == f"## Workspace against `{fork}` ({fork} lr 0.01)"
    assert f"Base: `{fork}`, where this branch forked from `main`" in report
    assert "| test.accuracy | 0.9 | 0.97 | +0.07 |" in report
    # --rev still decides.
    assert "Base: `HEAD~1`, as given (--rev)" in _report(workspace, *args, "--rev", "HEAD~1").stdout


def _head(cwd: Path) -> str:
    shown = subprocess.run(
        ["git", "log", "-1", "--format=%h %s"], cwd=cwd, capture_output=True, text=True
    )
    return shown.stdout.strip()


def test_cli_embeds_side_by_side_images_next_to_the_report(workspace):
    (workspace / "m/predictions_test.csv").write_text(NEW_CSV)
    (workspace / "m/loss.tsv").write_text("epoch\ttrain\tvalid\n1\t0.9\t0.8\n2\t0.5\t0.6\n")
    args = ["--metrics", "m/eval.json", "--predictions", "m/predictions_test.csv"]
    args += ["--curves", "m/loss.tsv", "--images", "out/report", "--out", "out/report.md"]
    result = _report(workspace, *args)
    assert result.returncode == 0, result.stderr
    report = (workspace / "out/report.md").read_text()
    assert "![training curves](report/training_curves.png)" in report
    assert "![test confusion matrices](report/confusion_test.png)" in report
    assert "per_class_f1" not in report  # no per-class table on either side: no figure
    assert sorted(p.name for p in (workspace / "out/report").iterdir()) == [
        "confusion_test.png",
        "training_curves.png",
    ]


RUN_URL = "https://github.com/o/r/actions/runs/7"


def test_cli_writes_the_pull_request_comment_without_figures_or_relative_links(workspace):
    (workspace / "m/loss.tsv").write_text("epoch\ttrain\tvalid\n1\t0.9\t0.8\n2\t0.5\t0.6\n")
    args = ["--params", "params.yaml", "--metrics", "m/eval.json", "--figures", "m"]
    args += ["--curves", "m/loss.tsv", "--images", "report", "--out", "report.md"]
    comment_args = ["--comment-out", "report/comment.md", "--figures-url", RUN_URL]
    result = _report(workspace, *args, *comment_args)
    assert result.returncode == 0, result.stderr
    report = (workspace / "report.md").read_text()
    comment = (workspace / "report/comment.md").read_text()
    assert "![training curves](report/training_curves.png)" in report
    assert "[conf.png](m/conf.png)" in report
    assert "](report/" not in comment and "](m/" not in comment and "![" not in comment
    assert "| test.accuracy | 0.8 | 0.9 | +0.1 |" in comment
    assert "| train.lr | 0.003 | 0.01 |" in comment
    assert comment.endswith(f"[this workflow run]({RUN_URL}).\n")
    assert f"report: wrote report/comment.md ({len(comment):,} characters)" in result.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--comment-out", "c.md"], "--comment-out and --figures-url go together"),
        (["--figures-url", RUN_URL], "--comment-out and --figures-url go together"),
        (
            ["--comment-out", "c.md", "--figures-url", "report/"],
            "--figures-url 'report/': expected an absolute http(s) URL",
        ),
    ],
)
def test_cli_comment_options_are_checked_before_anything_is_written(workspace, extra, message):
    args = ["--metrics", "m/eval.json", "--images", "report", "--out", "report.md", *extra]
    result = _report(workspace, *args)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not any((workspace / name).exists() for name in ("report.md", "report", "c.md"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rev", "no-such-rev", "--metrics", "m/eval.json"], "--rev no-such-rev: not a git"),
        (["--metrics", "m/missing.json"], "m/missing.json: no such file in the workspace"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_1(workspace, args, message):
    result = _report(workspace, *args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_reports_without_figures_that_dvc_has_not_brought(workspace):
    # DVC caches the figures: a fresh clone has none until `dvc pull`, and the report still
    # has everything else.
    result = _report(workspace, "--metrics", "m/eval.json", "--figures", "m", "--figures", "gone")
    assert result.returncode == 0, result.stderr
    assert "- [conf.png](m/conf.png)" in result.stdout
    assert "`gone`: no figures in the workspace; `dvc pull` (or `dvc repro`) brings them." in (
        result.stdout
    )
    assert "| test.accuracy | 0.8 | 0.9 | +0.1 |" in result.stdout


# GitHub Actions' checkout of a pull request: `refs/pull/N/merge` (the pull request merged
# into its base) fetched from origin and checked out detached, with only origin/* refs.
PARAMS_TEXT = """model:
  dropout: {dropout}
  hidden_sizes: [128]
prepare:
  shard_size: 100
train:
  lr: {lr}
"""


def _commit(repo: Path, message: str, dropout=0.2, lr=0.003, accuracy=0.8) -> None:
    (repo / "m").mkdir(exist_ok=True)
    (repo / "params.yaml").write_text(PARAMS_TEXT.format(dropout=dropout, lr=lr))
    (repo / "m/eval.json").write_text(json.dumps({"test": {"accuracy": accuracy}}))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)


def _rev_parse(repo: Path, rev: str) -> str:
    shown = subprocess.run(["git", "rev-parse", rev], cwd=repo, capture_output=True, text=True)
    return shown.stdout.strip()


@pytest.fixture
def pr_checkout(tmp_path):
    """(CI checkout of a pull request's merge commit, the base's full sha). The pull
    request sets model.dropout 0.3; main moved on after it forked (train.lr 0.01), so its
    fork point is not the base."""
    origin, dev, ci = tmp_path / "origin.git", tmp_path / "dev", tmp_path / "ci"
    _git(tmp_path, "init", "-q", "--bare", str(origin))
    _git(tmp_path, "init", "-q", "-b", "main", str(dev))
    _commit(dev, "baseline")
    _git(dev, "checkout", "-q", "-b", "dropout")
    _commit(dev, "dropout 0.3", dropout=0.3, accuracy=0.85)
    _git(dev, "checkout", "-q", "main")
    _commit(dev, "lr 0.01", lr=0.01)  # the same metrics: no conflict with the PR's
    _git(dev, "remote", "add", "origin", str(origin))
    _git(dev, "push", "-q", "origin", "main", "dropout")
    _git(dev, "checkout", "-q", "--detach", "main")
    _git(dev, "merge", "-q", "--no-ff", "-m", "Merge dropout into main", "dropout")
    _git(dev, "push", "-q", "origin", "HEAD:refs/pull/1/merge")
    # What actions/checkout does with fetch-depth: 0.
    _git(tmp_path, "init", "-q", str(ci))
    _git(ci, "remote", "add", "origin", str(origin))
    refspecs = [
        "+refs/heads/*:refs/remotes/origin/*",
        "+refs/pull/1/merge:refs/remotes/pull/1/merge",
    ]
    _git(ci, "fetch", "-q", "origin", *refspecs)
    _git(ci, "checkout", "-q", "--detach", "refs/remotes/pull/1/merge")
    branches = subprocess.run(["git", "branch", "--list"], cwd=ci, capture_output=True, text=True)
    assert branches.stdout.strip() == "* (HEAD detached at pull/1/merge)"
    # `make repro` rewrote the metrics.
    (ci / "m/eval.json").write_text(json.dumps({"test": {"accuracy": 0.86}}))
    return ci, _rev_parse(ci, "refs/remotes/origin/main")


@pytest.mark.parametrize("given", [True, False], ids=["rev-given", "rev-chosen"])
def test_cli_in_a_pull_requests_ci_checkout_compares_with_its_base(pr_checkout, given):
    ci, base = pr_checkout
    args = ["--params", "params.yaml", "--metrics", "m/eval.json"]
    result = _report(ci, *args, *(["--rev", base] if given else []))
    assert result.returncode == 0, result.stderr
    report = result.stdout
    assert report.splitlines()[0] == f"## Workspace against `{base[:7]}` ({base[:7]} lr 0.01)"
    assert "| model.dropout | 0.2 | 0.3 |" in report
    assert "train.lr" not in report  # main's own change is in the base
    assert "| test.accuracy | 0.8 | 0.86 | +0.06 |" in report
    if not given:
        assert f"Base: `{base[:7]}`, the first parent of the merge commit HEAD" in report
