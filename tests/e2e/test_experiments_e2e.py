"""DVC experiments as users run them, on a copy of this repository and synthetic data:
a queued grid whose best run is committed, seeds mode, presets in a row, and the reset
after a failed experiment.

The module works on one copy of the reproduced repository (tests/conftest.py): each
test starts from a committed, reproduced workspace and leaves one behind, so each also
runs alone (-k). The data set is a local file outside the copy, so queued experiments
reach it too; nothing touches the network.
"""

import itertools
import json
import re

import pytest
import yaml

from mnist_pipeline.experiments.start import changed_leaves
from mnist_pipeline.testing.dvc_repo import (
    METRICS,
    commit_all,
    head_experiments,
    read_json,
    run,
    stages_run,
    stop_queue_workers,
    wait_for_queue,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(reproduced_copy):
    """A copy of the reproduced, committed repository (tests/conftest.py)."""
    return reproduced_copy("experiments")


def test_queued_grid_runs_its_experiments_and_the_best_one_is_committed(repo):
    # A 2 x 1 grid: two values of one key, and a second key with one, each experiment a
    # full pipeline (a 2 x 2 grid checked nothing more for two more pipelines).
    dropouts, lrs = (0.1, 0.3), (0.03,)
    grid = ["-S", "model.dropout=0.1,0.3", "-S", "train.lr=0.03"]
    run(repo, "dvc", "exp", "run", *grid, "--queue")
    # The workspace's library breaks after the grid is queued: each experiment must run
    # the code it was queued with (DVC's copy), not the workspace's, which `run` puts on
    # PYTHONPATH as an editable install does.
    workspace_module = repo / "src/mnist_pipeline/train/training_log.py"
    queued_text = workspace_module.read_text()
    workspace_module.write_text(queued_text + "raise RuntimeError('the workspace library ran')\n")
    try:
        # train.threads is 1 (SMALL_PARAMS): 2 workers x 2 threads thrash 2 cores.
        run(repo, "dvc", "queue", "start", "-j", "2")
        statuses = wait_for_queue(repo, timeout_s=480, runs=len(dropouts) * len(lrs))
    finally:
        stop_queue_workers(repo)
        workspace_module.write_text(queued_text)
    logs = "".join(run(repo, "dvc", "queue", "logs", name).stdout for name in statuses)
    assert "the workspace library ran" not in logs
    assert sorted(statuses.values()) == ["Success"] * 2, statuses

    experiments = head_experiments(repo)
    grid_points = {(p["model"]["dropout"], p["train"]["lr"]) for p, _ in experiments.values()}
    assert grid_points == set(itertools.product(dropouts, lrs))
    for _, metrics in experiments.values():
        assert set(metrics) == {*METRICS, "metrics/export.json"}
        assert 0 < metrics["metrics/evaluate.json"]["test"]["accuracy"] <= 1

    def accuracy(name):
        return experiments[name][1]["metrics/evaluate.json"]["test"]["accuracy"]

    best = max(experiments, key=accuracy)
    run(repo, "dvc", "exp", "apply", best)
    commit_all(repo, f"apply {best}")
    committed = json.loads(run(repo, "git", "show", "HEAD:metrics/evaluate.json").stdout)
    assert committed == experiments[best][1]["metrics/evaluate.json"]
    shown = json.loads(run(repo, "dvc", "metrics", "show", "--json").stdout)
    assert shown[""]["data"]["metrics/evaluate.json"]["data"] == committed
    assert stages_run(run(repo, "dvc", "repro").stdout) == []  # the applied lock is complete


def test_seeds_mode_trains_two_seeds_in_the_queue_and_writes_their_summary(repo):
    try:
        done = run(repo, "python", "scripts/seeds.py", "--k", "2", "--out", "metrics/seeds.json")
    finally:
        stop_queue_workers(repo)
    assert "wrote metrics/seeds.json (2 seeds)" in done.stdout
    summary = read_json(repo / "metrics/seeds.json")
    assert summary["k"] == 2 and summary["seeds"] == [0, 1]
    accuracy = summary["metrics"]["test.accuracy"]
    assert accuracy["n"] == 2 and accuracy["min"] <= accuracy["mean"] <= accuracy["max"]
    seeds_run = {p["seed"] for p, _ in head_experiments(repo).values()}
    assert {0, 1} <= seeds_run
    command = ["python", "scripts/report.py", "--metrics", *METRICS]
    report = run(repo, *command, "--seeds", "metrics/seeds.json").stdout
    assert "`metrics/seeds.json` is not in `HEAD`: no multi-seed summary there" in report
    commit_all(repo, "seeds")


def test_presets_in_a_row_each_start_from_the_committed_params(repo, tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "unit.yaml").write_text("model:\n  input_norm: unit\n")
    (presets / "wide.yaml").write_text("model:\n  hidden_sizes: [40]\n")
    committed = yaml.safe_load(run(repo, "git", "show", "HEAD:params.yaml").stdout)
    for name in ("unit", "wide"):  # the second must not inherit the first's input_norm
        exp = ["python", "scripts/exp.py", "--presets-dir", str(presets), name]
        run(repo, *exp, "--", "--name", f"preset-{name}")
    experiments = head_experiments(repo)
    assert changed_leaves(committed, experiments["preset-unit"][0]) == {
        "model.input_norm": ("standardize", "unit")
    }
    assert changed_leaves(committed, experiments["preset-wide"][0]) == {
        "model.hidden_sizes": (committed["model"]["hidden_sizes"], [40])
    }
    # The compact table: both against HEAD's committed results, on the same test images.
    table = run(repo, "python", "scripts/exps.py").stdout.splitlines()
    assert max(len(line) for line in table) <= 120 and table[1].startswith("HEAD ")
    rows = {line.split()[0]: line for line in table[2:]}
    assert set(rows) == {"preset-unit", "preset-wide"}
    assert "input_norm=unit" in rows["preset-unit"] and "hidden_sizes=[40]" in rows["preset-wide"]
    for line in rows.values():
        assert re.search(r"\d+\.\d\d% \[\d+\.\d\d, \d+\.\d\d\] +[-+]\d+\.\d\d p[=<]", line)
    run(repo, "python", "scripts/reset.py")


def test_after_a_failed_experiment_make_reset_restores_the_last_commit(repo):
    failed = run(repo, "dvc", "exp", "run", "-S", "train.lr=-0.001", check=False)
    assert failed.returncode != 0 and "train.lr: must be > 0" in failed.stderr + failed.stdout
    assert "deleted" in run(repo, "dvc", "status").stdout  # the failed stage's outputs
    reset = run(repo, "python", "scripts/reset.py")
    assert reset.stdout.startswith("reset: ") and reset.stdout.count("\n") == 1
    assert run(repo, "dvc", "status").stdout.strip() == "Data and pipelines are up to date."
    assert run(repo, "git", "status", "--porcelain").stdout == ""
    assert stages_run(run(repo, "dvc", "repro").stdout) == []
