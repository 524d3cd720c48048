"""Multi-seed mode: the orchestration against a scripted `dvc`, the summary it writes, the
script's refusal of K < 2 or K > 50 before any work (no dvc needed), and what a stopped run
leaves in DVC's queue: nothing (scripted, and once with the real queue and SIGTERM)."""

import json
import signal
import subprocess
import sys
import time

import pytest

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.review.seeds import (
    cancel_seed_runs,
    experiment_metrics,
    live_workers,
    queue_statuses,
    run_seeds,
    seeds_document,
    wait_for,
)
from mnist_pipeline.testing.bounds import HANG_GUARD_S
from mnist_pipeline.testing.dvc_repo import (
    commit_all,
    env_for,
    queue_tasks,
    queue_worker_pids,
    set_params,
    stop_queue_workers,
)
from mnist_pipeline.testing.holds import hold_matching_params_sitecustomize
from tests.support import REPO, python_env

HOLD = "SEEDS_TEST_HOLD"

QUEUE_STATUS = """Task     Name        Created    Status
ffb34b0  seeds-t-0  07:24 PM   {0}
990dc71  seeds-t-1  07:24 PM   {1}
a5a0405  older-one   07:20 PM   Failed

Worker status: 1 active, 0 idle
"""


def _shown(accuracies):
    """`dvc exp show --json` with one experiment per accuracy, named seeds-t-<i>."""
    experiments = [
        {
            "name": f"seeds-t-{i}",
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
            name = args[4]  # --name NAME
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
        [("Queued",) * 2, ("Running", "Queued"), ("Success", "Running"), ("Success",) * 2],
        [0.8, 0.9],
    )
    document = run_seeds(2, dvc, timeout_s=60, poll_s=0, token="t")
    assert dvc.calls[:4] == [
        ["exp", "run", "--queue", "--name", "seeds-t-0", "-S", "seed=0"],
        ["exp", "run", "--queue", "--name", "seeds-t-1", "-S", "seed=1"],
        ["queue", "status"],  # is a worker there already (not ours to stop)?
        ["queue", "start", "-j", "1"],
    ]
    assert dvc.calls.count(["queue", "status"]) == 4  # then polled until both succeeded
    assert document["k"] == 2 and document["seeds"] == [0, 1]
    accuracy = document["metrics"]["test.accuracy"]
    assert accuracy == pytest.approx(
        {"mean": 0.85, "std": 0.0707107, "min": 0.8, "max": 0.9, "n": 2}, rel=1e-5
    )
    assert document["metrics"]["best_epoch"]["mean"] == 3.5
    json.dumps(document)  # what the script writes


def test_a_failed_seed_run_or_a_queue_that_never_finishes_is_one_error():
    failed = ScriptedDvc([("Success", "Failed")], [])
    with pytest.raises(PipelineError, match=r"did not succeed: seeds-t-1 \(Failed\)"):
        wait_for(["seeds-t-0", "seeds-t-1"], failed, timeout_s=60, poll_s=0)
    ticks = iter(range(100))
    stuck = ScriptedDvc([("Running", "Queued")] * 10, [])
    with pytest.raises(PipelineError, match=r"2 seed run\(s\) still queued or running after 3 s"):
        wait_for(
            ["seeds-t-0", "seeds-t-1"],
            stuck,
            timeout_s=3,
            clock=lambda: next(ticks),
            sleep=lambda s: None,
        )


def test_queue_statuses_skip_the_worker_line():
    statuses = queue_statuses(QUEUE_STATUS.format("Running", "Success"))
    assert statuses == {"seeds-t-0": "Running", "seeds-t-1": "Success", "older-one": "Failed"}


def test_experiment_metrics_merge_the_metrics_files_and_name_a_missing_experiment():
    shown = _shown([0.75])
    assert experiment_metrics(shown, "seeds-t-0") == {"test.accuracy": 0.75, "best_epoch": 3}
    with pytest.raises(PipelineError, match="experiment nope is not in `dvc exp show`"):
        experiment_metrics(shown, "nope")


def test_seeds_document_needs_two_runs():
    with pytest.raises(ValueError, match="at least 2 runs"):
        seeds_document([0], [{"test.accuracy": 0.9}])


@pytest.mark.parametrize("k", ["1", "0", "-3"])
def test_the_script_refuses_fewer_than_two_seeds_before_any_work(tmp_path, k):
    # Not a git or DVC repository: a script that went on would fail differently.
    env = python_env()
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

    wait_for(["seeds-t-0", "seeds-t-1"], dvc, timeout_s=60, poll_s=0)
    assert calls == [
        ["queue", "status"],
        ["queue", "start", "-j", "1"],
        ["queue", "status"],
        ["queue", "status"],
    ]
    assert live_workers(QUEUE_STATUS.format("Running", "Queued")) == 1
    assert live_workers("Task Name Created Status\n") == 0


@pytest.mark.parametrize("k", ["51", "100000"])
def test_the_script_refuses_more_than_50_seeds_before_any_work(tmp_path, k):
    env = python_env()
    command = [sys.executable, str(REPO / "scripts/seeds.py"), "--k", k, "--out", "s.json"]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"seeds.py: error: --k {k}: at most 50 seeds (each is a full training run, one at a time)\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("option", "value"), [("--timeout-min", "0"), ("--poll-s", "nan")])
def test_the_script_refuses_a_wait_that_is_not_a_positive_number(tmp_path, option, value):
    env = python_env()
    command = [sys.executable, str(REPO / "scripts/seeds.py"), "--k", "2", "--out", "s.json"]
    result = subprocess.run(
        [*command, option, value], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1 and list(tmp_path.iterdir()) == []
    assert result.stderr == f"seeds.py: error: {option} {value}: must be a positive number\n"


class InterruptedDvc:
    """A queue of three seed runs: seed 0 runs, 1 and 2 are queued, and no worker was there
    before the run started its own. The `interrupt_at`-th `queue status` (1-based) raises
    `interrupt` (what Ctrl-C or cli's SIGTERM handler do in the middle of a dvc call)."""

    def __init__(self, interrupt, interrupt_at):
        self.calls = []
        self.interrupt, self.interrupt_at = interrupt, interrupt_at
        self.statuses = {}
        self.polls = 0

    def __call__(self, args):
        args = list(args)
        self.calls.append(args)
        if args[:3] == ["exp", "run", "--queue"]:
            self.statuses[args[4]] = "Queued"
            return f"Queued experiment '{args[4]}' for future execution.\n"
        if args == ["queue", "status"]:
            self.polls += 1
            if self.polls == self.interrupt_at:
                raise self.interrupt
            rows = "".join(f"abc1234  {n}  07:24 PM  {s}\n" for n, s in self.statuses.items())
            workers = "0 active" if self.polls == 1 else "1 active"
            return f"Task  Name  Created  Status\n{rows}\nWorker status: {workers}, 0 idle\n"
        if args == ["queue", "start", "-j", "1"]:
            self.statuses["seeds-t-0"] = "Running"
        if args[:2] == ["queue", "remove"]:
            for name in args[2:]:
                assert self.statuses[name] not in ("Running",), f"removed running {name}"
                del self.statuses[name]
        if args[:2] == ["queue", "kill"]:
            for name in args[2:]:
                self.statuses[name] = "Failed"
        return ""


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), PipelineError("boom")])
def test_a_stopped_run_removes_its_queued_runs_kills_the_running_one_and_its_worker(interrupt):
    dvc = InterruptedDvc(interrupt, interrupt_at=3)  # while waiting for the runs
    notes = []
    with pytest.raises(type(interrupt)) as raised:
        run_seeds(3, dvc, timeout_s=60, poll_s=0, notes=notes, token="t")
    # After the start: a poll, then the interrupted one; the cleanup follows.
    cleanup = dvc.calls[dvc.calls.index(["queue", "start", "-j", "1"]) + 3 :]
    assert cleanup == [
        ["queue", "status"],
        ["queue", "remove", "seeds-t-1", "seeds-t-2"],  # first: the worker takes none next
        ["queue", "kill", "seeds-t-0"],
        ["queue", "status"],
        ["queue", "remove", "seeds-t-0"],  # once it stopped
        ["queue", "stop"],  # the worker this run started
    ]
    assert dvc.statuses == {}
    note = (
        "removed its 3 unfinished seed run(s) from DVC's queue and stopped the queue worker "
        "it started"
    )
    assert notes == [note]
    if isinstance(interrupt, PipelineError):
        assert str(raised.value) == f"boom; {note}"


def test_a_run_stopped_while_queueing_clears_what_it_queued_and_no_worker():
    """Before `queue start` (a worker may be someone else's): only its tasks go."""
    calls = []

    def dvc(args):
        calls.append(list(args))
        if args[:3] == ["exp", "run", "--queue"]:
            if args[4] == "seeds-t-1":
                raise KeyboardInterrupt
            return f"Queued experiment '{args[4]}' for future execution.\n"
        if args == ["queue", "status"]:
            queued = "seeds-t-0" if ["queue", "remove", "seeds-t-0"] not in calls else "other"
            return f"Task Name Created Status\nabc  {queued}  07:24 PM  Queued\n"
        return ""

    notes = []
    with pytest.raises(KeyboardInterrupt):
        run_seeds(3, dvc, timeout_s=60, poll_s=0, notes=notes, token="t")
    assert calls[2:] == [
        ["queue", "status"],
        ["queue", "remove", "seeds-t-0"],
        ["queue", "status"],
    ]
    assert notes == ["removed its 1 unfinished seed run(s) from DVC's queue"]


def test_a_cleanup_that_cannot_finish_says_what_is_left_and_never_raises():
    def dvc(args):
        if args == ["queue", "status"]:
            return "Task Name Created Status\nabc  seeds-t-0  07:24 PM  Running\n"
        raise PipelineError("dvc queue kill failed: no such task")

    ticks = iter(range(100))
    note = cancel_seed_runs(
        ["seeds-t-0", "seeds-t-1"], dvc, True, 5, clock=lambda: next(ticks), sleep=lambda s: None
    )
    assert note == (
        "could not clear its seed runs from DVC's queue in 5 s (dvc queue kill failed: no such "
        "task); `dvc queue kill` and `dvc queue remove` these if listed: seeds-t-0, seeds-t-1"
    )


@pytest.mark.e2e
def test_sigterm_removes_the_queued_runs_and_stops_the_worker_it_started(tmp_path, reproduced_copy):
    """The real `dvc` queue: once a seed run is running, SIGTERM; then none of the runs is
    left in the queue and no worker of the repository is alive."""
    repo = reproduced_copy("seeds")  # tests/conftest.py: data prepared, scripts in
    set_params(repo, {"train": {"epochs": 20}})
    # The stages run with PYTHONPATH=src: a seed run's train stage holds after epoch 1
    # (while HOLD is set) and says so in `held`, so it is running when the signal comes.
    (repo / "src/sitecustomize.py").write_text(hold_matching_params_sitecustomize(1, HOLD))
    commit_all(repo, "baseline")
    held = tmp_path / "held"
    env = {**env_for(repo), HOLD: "train.epochs=20", f"{HOLD}_HELD": str(held)}
    command = [sys.executable, "scripts/seeds.py", "--k", "3", "--out", "seeds.json"]
    with (tmp_path / "out").open("w+") as out, (tmp_path / "err").open("w+") as err:
        script = subprocess.Popen(command, cwd=repo, env=env, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + HANG_GUARD_S
            while not held.exists():  # the event: a run is training
                assert script.poll() is None, err.read()
                assert time.monotonic() < deadline, f"no seed run started: {_seed_tasks(repo)}"
                time.sleep(0.2)
            assert "Running" in _seed_tasks(repo).values()
            script.send_signal(signal.SIGTERM)
            assert script.wait(timeout=300) == 143
        finally:
            if script.poll() is None:
                script.kill()
            stop_queue_workers(repo)  # whatever the test's outcome, nothing keeps running
        err.seek(0)
        stderr = err.read()
    assert stderr == (
        "seeds.py: interrupted (SIGTERM); removed its 3 unfinished seed run(s) from DVC's "
        "queue and stopped the queue worker it started\n"
    )
    assert _seed_tasks(repo) == {}
    deadline = time.monotonic() + 120  # a stopped worker takes a moment to exit
    while queue_worker_pids(repo) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert queue_worker_pids(repo) == []
    assert not (repo / "seeds.json").exists()


def _seed_tasks(repo):
    return {name: s for name, s in queue_tasks(repo).items() if name.startswith("seeds-")}
