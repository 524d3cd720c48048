"""Multi-seed mode: the orchestration against a scripted `dvc`, the summary it writes, and
the script's refusal of K < 2 before any work (no dvc needed)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.review.seeds import (
    experiment_metrics,
    live_workers,
    queue_statuses,
    run_seeds,
    seeds_document,
    wait_for,
)

REPO = Path(__file__).resolve().parents[1]

QUEUE_STATUS = """Task     Name        Created    Status
ffb34b0  seed-run-0  07:24 PM   {0}
990dc71  seed-run-1  07:24 PM   {1}
a5a0405  older-one   07:20 PM   Failed

Worker status: 1 active, 0 idle
"""


def _shown(accuracies):
    """`dvc exp show --json` with one experiment per accuracy, named seed-run-<i>."""
    experiments = [
        {
            "name": f"seed-run-{i}",
            "revs": [
                {
                    "data": {
                        "metrics": {
                            "metrics/evaluate.json": {"data": {"test": {"accuracy": accuracy}}},
                            "metrics/train/metrics.json": {"data": {"best_epoch": 3 + i}},
                        }
                    }
                }
            ],
        }
        for i, accuracy in enumerate(accuracies)
    ]
    return [{"rev": "workspace"}, {"rev": "abc123", "name": "main", "experiments": experiments}]


class ScriptedDvc:
    """Answers dvc commands like the real one would; records every call."""

    def __init__(self, statuses, accuracies):
        self.calls = []
        self.statuses = list(statuses)  # one `dvc queue status` answer per poll
        self.accuracies = accuracies
        self.queued = 0

    def __call__(self, args):
        self.calls.append(list(args))
        if args[:3] == ["exp", "run", "--queue"]:
            name = f"seed-run-{self.queued}"
            self.queued += 1
            return (
                f"Queueing with overrides ...\nQueued experiment '{name}' for future execution.\n"
            )
        if args == ["queue", "status"]:
            return QUEUE_STATUS.format(*self.statuses.pop(0))
        if args == ["exp", "show", "--json"]:
            return json.dumps(_shown(self.accuracies))
        return ""


def test_run_seeds_queues_each_seed_runs_them_one_at_a_time_and_summarizes():
    dvc = ScriptedDvc(
        [("Running", "Queued"), ("Success", "Running"), ("Success", "Success")], [0.8, 0.9]
    )
    document = run_seeds(2, dvc, timeout_s=60, poll_s=0)
    assert dvc.calls[:3] == [
        ["exp", "run", "--queue", "-S", "seed=0"],
        ["exp", "run", "--queue", "-S", "seed=1"],
        ["queue", "start", "-j", "1"],
    ]
    assert dvc.calls.count(["queue", "status"]) == 3  # polled until both succeeded
    assert document["k"] == 2 and document["seeds"] == [0, 1]
    accuracy = document["metrics"]["test.accuracy"]
    assert accuracy == pytest.approx(
        {"mean": 0.85, "std": 0.0707107, "min": 0.8, "max": 0.9, "n": 2}, rel=1e-5
    )
    assert document["metrics"]["best_epoch"]["mean"] == 3.5
    json.dumps(document)  # what the script writes


def test_a_failed_seed_run_or_a_queue_that_never_finishes_is_one_error():
    failed = ScriptedDvc([("Success", "Failed")], [])
    with pytest.raises(PipelineError, match=r"did not succeed: seed-run-1 \(Failed\)"):
        wait_for(["seed-run-0", "seed-run-1"], failed, timeout_s=60, poll_s=0)
    ticks = iter(range(100))
    stuck = ScriptedDvc([("Running", "Queued")] * 10, [])
    with pytest.raises(PipelineError, match=r"2 seed run\(s\) still queued or running after 3 s"):
        wait_for(
            ["seed-run-0", "seed-run-1"],
            stuck,
            timeout_s=3,
            clock=lambda: next(ticks),
            sleep=lambda s: None,
        )


def test_queue_statuses_skip_the_worker_line():
    statuses = queue_statuses(QUEUE_STATUS.format("Running", "Success"))
    assert statuses == {"seed-run-0": "Running", "seed-run-1": "Success", "older-one": "Failed"}


def test_experiment_metrics_merge_the_metrics_files_and_name_a_missing_experiment():
    shown = _shown([0.75])
    assert experiment_metrics(shown, "seed-run-0") == {"test.accuracy": 0.75, "best_epoch": 3}
    with pytest.raises(PipelineError, match="experiment nope is not in `dvc exp show`"):
        experiment_metrics(shown, "nope")


def test_seeds_document_needs_two_runs():
    with pytest.raises(ValueError, match="at least 2 runs"):
        seeds_document([0], [{"test.accuracy": 0.9}])


@pytest.mark.parametrize("k", ["1", "0", "-3"])
def test_the_script_refuses_fewer_than_two_seeds_before_any_work(tmp_path, k):
    # Not a git or DVC repository: a script that went on would fail differently.
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, str(REPO / "scripts/seeds.py"), "--k", k, "--out", "s.json"]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr == f"seeds.py: error: --k {k}: a multi-seed run needs at least 2 seeds\n"
    assert list(tmp_path.iterdir()) == []


def test_a_queued_seed_with_no_worker_left_gets_a_worker_again():
    """DVC's worker can exit with a task still queued: the wait starts one again."""
    answers = [
        QUEUE_STATUS.format("Success", "Queued").replace("1 active", "0 active"),
        QUEUE_STATUS.format("Success", "Running"),
        QUEUE_STATUS.format("Success", "Success"),
    ]
    calls = []

    def dvc(args):
        calls.append(list(args))
        return answers.pop(0) if args == ["queue", "status"] else ""

    wait_for(["seed-run-0", "seed-run-1"], dvc, timeout_s=60, poll_s=0)
    assert calls == [
        ["queue", "status"],
        ["queue", "start", "-j", "1"],
        ["queue", "status"],
        ["queue", "status"],
    ]
    assert live_workers(QUEUE_STATUS.format("Running", "Queued")) == 1
    assert live_workers("Task Name Created Status\n") == 0
