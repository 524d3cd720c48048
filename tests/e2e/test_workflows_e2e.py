"""The DVC workflows users run every day, on a copy of this repository and synthetic data:
what `dvc repro` re-runs after a change, diffs between commits and against the
workspace, a fresh clone reproducing the committed results byte for byte.

The module works on one copy of the reproduced repository (tests/conftest.py): each
test starts from a committed, reproduced workspace and leaves one behind, so each also
runs alone (-k). The data set is a local file outside the copy, so fresh clones reach
it too; nothing touches the network.
"""

import json
import re
import shutil

import pytest
import yaml

from mnist_pipeline.experiments.start import changed_leaves
from mnist_pipeline.testing.dvc_repo import (
    ALL_STAGES,
    METRICS,
    MODEL,
    commit_all,
    lock_out_md5,
    read_json,
    run,
    set_params,
    stages_run,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(reproduced_copy):
    """A copy of the reproduced, committed repository (tests/conftest.py)."""
    return reproduced_copy("workflows")


def test_dag_shows_the_stages_in_order(repo):
    mermaid = run(repo, "dvc", "dag", "--md").stdout
    names = dict(re.findall(r'(node\d+)\["(\w+)"\]', mermaid))
    edges = {(names[a], names[b]) for a, b in re.findall(r"(node\d+)-->(node\d+)", mermaid)}
    assert sorted(names.values()) == sorted(ALL_STAGES)
    assert edges == {
        ("fetch", "prepare"),
        ("prepare", "train"),
        ("prepare", "evaluate"),  # the prepared test split
        ("train", "evaluate"),
        ("prepare", "export"),  # parity on the prepared test split
        ("train", "export"),
    }


def _append_comment(repo, module):
    path = repo / "src/mnist_pipeline" / module
    path.write_text(path.read_text() + "# touched by test_workflows_e2e\n")


# What a user changes -> the stages `dvc repro` must re-run, in this order. A comment in
# train/loop.py re-runs train, but training is deterministic, so the checkpoint comes out
# bit-identical and DVC, which compares outputs by content, keeps evaluate. A train param
# re-runs train, evaluate and export like a model param:
# test_metrics_params_and_plots_diff_... changes train.epochs.
CHANGES = {
    "model param": ({"model": {"hidden_sizes": [48]}}, ["train", "evaluate", "export"]),
    "train/loop.py": ("train/loop.py", ["train"]),
    "evaluate param": ({"evaluate": {"calibration_bins": 10}}, ["evaluate"]),
    "evaluate/figures.py": ("evaluate/figures.py", ["evaluate"]),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_repro_reruns_exactly_the_stages_whose_inputs_changed(repo, change):
    edit, expected = CHANGES[change]
    if isinstance(edit, dict):
        set_params(repo, edit)
    else:
        _append_comment(repo, edit)
    assert stages_run(run(repo, "dvc", "repro").stdout) == expected
    second = run(repo, "dvc", "repro").stdout
    assert stages_run(second) == [] and "Data and pipelines are up to date." in second
    commit_all(repo, f"change {change}")


def test_a_module_every_stage_imports_puts_every_stage_out_of_date(repo):
    """fileio.py is a dep of every stage (dvc.yaml): `dvc status`, which is what
    `dvc repro` decides from, names it as changed for each of them. (Running all five
    again would show no more than the cases above, which run what they change.)"""
    _append_comment(repo, "fileio.py")
    try:
        status = json.loads(run(repo, "dvc", "status", "--json").stdout)
    finally:
        run(repo, "git", "checkout", "--", "src/mnist_pipeline/fileio.py")
    changed = {
        stage: [dep for entry in entries for dep in entry.get("changed deps", {})]
        for stage, entries in status.items()
    }
    assert changed == {stage: ["src/mnist_pipeline/fileio.py"] for stage in ALL_STAGES}
    assert run(repo, "dvc", "status").stdout.strip() == "Data and pipelines are up to date."


def _assert_metrics_diff_lists_every_change(repo, *revs, old_rev, new_files):
    """`dvc metrics diff` names every changed number (`test.accuracy`, ...) with both values."""
    diff = json.loads(run(repo, "dvc", "metrics", "diff", "--json", *revs).stdout)
    for path in METRICS:
        old = json.loads(run(repo, "git", "show", f"{old_rev}:{path}").stdout)
        new = new_files[path]
        expected = changed_leaves(old, new)
        assert expected, f"{path}: nothing changed, the check would be empty"
        shown = {name: (d["old"], d["new"]) for name, d in diff[path].items()}
        assert shown == expected
    return diff


def test_metrics_params_and_plots_diff_between_commits_and_against_the_workspace(repo, tmp_path):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    epochs, lr, bins = (params[s][k] for s, k in _DIFFED)
    set_params(repo, {"train": {"epochs": epochs + 1}})
    assert stages_run(run(repo, "dvc", "repro").stdout) == ["train", "evaluate", "export"]
    commit_all(repo, "one more epoch")

    # Two commits.
    head = {p: json.loads(run(repo, "git", "show", f"HEAD:{p}").stdout) for p in METRICS}
    _assert_metrics_diff_lists_every_change(
        repo, "HEAD~1", "HEAD", old_rev="HEAD~1", new_files=head
    )
    table = run(repo, "dvc", "metrics", "diff", "--md", "HEAD~1", "HEAD").stdout
    # Losses move with any extra epoch (an accuracy can stay put on 200 test images).
    assert "| test.loss " in table and "| train.loss " in table
    diff = json.loads(run(repo, "dvc", "params", "diff", "--json", "HEAD~1", "HEAD").stdout)
    assert diff == {"params.yaml": {"train.epochs": {"old": epochs, "new": epochs + 1, "diff": 1}}}
    _assert_plots_diff_html(repo, tmp_path / "plots", "HEAD~1", "HEAD")

    # The workspace against HEAD (no revisions given).
    changed = {"train.lr": (lr, lr * 2), "evaluate.calibration_bins": (bins, bins + 2)}
    set_params(repo, {"train": {"lr": lr * 2}, "evaluate": {"calibration_bins": bins + 2}})
    assert stages_run(run(repo, "dvc", "repro").stdout) == ["train", "evaluate", "export"]
    workspace = {p: read_json(repo / p) for p in METRICS}
    _assert_metrics_diff_lists_every_change(repo, old_rev="HEAD", new_files=workspace)
    diff = json.loads(run(repo, "dvc", "params", "diff", "--json").stdout)["params.yaml"]
    assert {name: (d["old"], d["new"]) for name, d in diff.items()} == changed
    _assert_review_report(repo, tmp_path / "review" / "report.md", head, workspace, changed)
    commit_all(repo, "double lr")


_DIFFED = (("train", "epochs"), ("train", "lr"), ("evaluate", "calibration_bins"))


def _assert_plots_diff_html(repo, out, old_rev, new_rev):
    """Training curves and the confusion matrix as vega specs holding both revisions'
    data, and both revisions' PNG figures copied beside the page."""
    run(repo, "dvc", "plots", "diff", old_rev, new_rev, "-o", str(out))
    html = (out / "index.html").read_text()
    specs = re.findall(r"var spec = (\{.*?\});\n", html, re.S)
    by_title = {json.loads(s)["title"]["text"]: json.loads(s) for s in specs}
    # The curves hold train and valid columns per epoch (the legend says train / valid).
    fields = {"Loss": "valid", "Accuracy": "valid", "Confusion matrix (test)": "actual"}
    assert set(fields) <= set(by_title)
    for title, field in fields.items():
        rows = by_title[title]["data"]["values"]
        assert {row["rev"] for row in rows} == {old_rev, new_rev}
        assert all(field in row for row in rows)
    # The confusion matrix names the classes, in class order (the synthetic data's are
    # the digits' names), from counts: 10 x 10 cells per revision.
    confusion = by_title["Confusion matrix (test)"]
    cells = [row for row in confusion["data"]["values"] if row["rev"] == new_rev]
    assert len(cells) == 100 and cells[0]["actual"] == "0" and cells[-1]["predicted"] == "9"
    assert sum(int(row["count"]) for row in cells) == 200  # every test image once
    assert confusion["spec"]["encoding"]["y"]["field"] == "actual"  # our template, not DVC's
    for rev in (old_rev, new_rev):
        image = f"static/{rev}_figures_evaluate_confusion_test.png"
        assert f'<img src="{image}">' in html and (out / image).stat().st_size > 0
        assert f"<p>{rev}</p>" in html


def _assert_review_report(repo, out, old, new, changed_params):
    command = ["python", "scripts/report.py", "--rev", "HEAD", "--params", "params.yaml"]
    command += ["--metrics", *METRICS, "--figures", "figures/evaluate", "--out", str(out)]
    run(repo, *command)
    report = out.read_text()
    old_acc, new_acc = old[METRICS[0]]["test"]["accuracy"], new[METRICS[0]]["test"]["accuracy"]
    assert re.search(rf"\| test\.accuracy \| {old_acc:.6g} \| {new_acc:.6g} \| [-+0]", report)
    for name, (before, after) in changed_params.items():
        assert f"| {name} | {before:.6g} | {after:.6g} |" in report
    link = re.search(r"\[confusion_test\.png\]\(([^)]+)\)", report).group(1)
    assert (out.parent / link).resolve() == (repo / "figures/evaluate/confusion_test.png")
    bad_rev = ["python", "scripts/report.py", "--rev", "no-such-rev", "--metrics", METRICS[0]]
    bad = run(repo, *bad_rev, check=False)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0


def test_a_fresh_clone_without_cache_or_data_reproduces_the_committed_results(repo, tmp_path):
    clone = tmp_path / "clone"
    run(repo, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "data").exists() and not (clone / ".dvc/cache").exists()
    # Reviews work before anything is reproduced: the plots page and the report read
    # the git-tracked tables (the figures are in no cache here, and nobody pulled them).
    page = tmp_path / "plots"
    run(clone, "dvc", "plots", "diff", "HEAD~1", "HEAD", "-o", str(page))
    html = (page / "index.html").read_text()
    assert "Confusion matrix (test)" in html and "Loss" in html
    report = ["python", "scripts/report.py", "--rev", "HEAD~1", "--metrics", *METRICS]
    report += ["--figures", "figures/evaluate", "--images", "report", "--out", "report.md"]
    report += ["--predictions", "metrics/evaluate/predictions_test.csv"]
    report += ["--curves", "metrics/train/plots/loss.tsv"]
    run(clone, *report)
    text = (clone / "report.md").read_text()
    # The side-by-side figures come from git-tracked tables: drawn in any clone.
    assert "### Is it real?" in text and "![training curves](report/training_curves.png)" in text
    assert "`figures/evaluate`: no figures in the workspace; `dvc pull`" in text
    (clone / "report.md").unlink()
    shutil.rmtree(clone / "report")
    # Same code, params and data on one CPU thread: the same weights, so the same
    # checkpoint bytes.
    ran = stages_run(run(clone, "dvc", "repro").stdout)
    assert lock_out_md5(clone, "train", MODEL) == lock_out_md5(repo, "train", MODEL)
    # evaluate and export re-run only because their cached outputs are missing here.
    assert ran == ALL_STAGES
    # The clone's results are the committed ones byte for byte, dvc.lock included: the
    # metrics hold no timings and the figures are drawn the same way.
    assert run(clone, "git", "status", "--porcelain").stdout == ""


def test_rerunning_identical_work_leaves_git_clean(repo):
    # A forced evaluate rerun draws the same figures (in dvc.lock by digest) and writes
    # the same tables and metrics (in git). The same for train, whose timings live
    # outside both: tests/train/test_resume.py forces a train rerun after a resumed one.
    run(repo, "dvc", "repro", "--force", "--single-item", "evaluate")
    assert stages_run(run(repo, "dvc", "repro").stdout) == []
    assert run(repo, "git", "status", "--porcelain").stdout == ""


def test_results_in_git_are_small_tables_and_the_figures_are_in_dvc(repo):
    tracked = run(repo, "git", "ls-files", "metrics", "figures").stdout.split()
    assert tracked and not [path for path in tracked if path.endswith(".png")]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = {out["path"] for out in lock["stages"]["evaluate"]["outs"]}
    # Cached by DVC (dvc push / dvc pull carry them), each figure an output of its own.
    assert "figures/evaluate/confusion_test.png" in outs
    assert sorted(p.name for p in (repo / "figures/evaluate").glob("confusion_*.png")) == [
        "confusion_test.png",
        "confusion_test_normalized.png",
        "confusion_valid.png",
        "confusion_valid_normalized.png",
    ]
    # What an epoch or two on 1,000 images leaves: metrics of both splits, well above
    # chance, every figure and table of the test split.
    metrics = read_json(repo / "metrics/evaluate.json")
    assert set(metrics) == {"valid", "test"} and metrics["test"]["accuracy"] > 0.3
    for name in ("reliability_test.png", "uncertainty_test.png", "worst_test.png"):
        assert (repo / "figures/evaluate" / name).stat().st_size > 0
    for name in ("predictions_test.csv", "per_class_test.csv"):
        assert (repo / "metrics/evaluate" / name).stat().st_size > 0
    epochs = yaml.safe_load((repo / "params.yaml").read_text())["train"]["epochs"]
    assert read_json(repo / "metrics/train/metrics.json")["epochs_run"] == epochs
