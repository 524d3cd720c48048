"""Sweeps end to end, on a copy of this repository and synthetic data, through the real
`dvc exp run`: a 2-job local sweep with failing trials, killed with SIGKILL and run
again, its confirmation and report; two workers sharing a PostgreSQL study.

The module works on one copy of the reproduced repository (tests/conftest.py); each
test has a sweep of its own name, so their experiments never meet.
"""

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from mnist_pipeline.config.params import usable_cpus
from mnist_pipeline.testing.bounds import HANG_GUARD_S
from mnist_pipeline.testing.dvc_repo import (
    commit_all,
    env_for,
    run,
)
from mnist_pipeline.testing.holds import hold_matching_params_sitecustomize
from mnist_pipeline.testing.postgres import find_bin_dir, local_server
from tests.support import REPO

pytestmark = pytest.mark.e2e

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOLD = "SWEEP_TEST_HOLD"


@pytest.fixture(scope="module")
def repo(reproduced_copy):
    """A copy of the reproduced repository (tests/conftest.py): trials take the
    prepared data from its DVC cache."""
    repo = reproduced_copy("sweep")
    # The stages run with PYTHONPATH=src: a hold there (committed, as trials run a copy
    # of the commit) that holds only the trial HOLD names, only while HOLD is set.
    (repo / "src/sitecustomize.py").write_text(hold_matching_params_sitecustomize(1, HOLD))
    commit_all(repo, "a hold for the trials")
    return repo


def write_sweep(folder: Path, name: str, document: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return folder


def sweep_command(sweeps: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "scripts/sweep.py",
        *args,
        "--sweeps-dir",
        str(sweeps),
        "--presets-dir",
        str(REPO / "presets"),
    ]


def study(repo: Path, name: str, url: str | None = None) -> optuna.Study:
    url = url or f"sqlite:///{repo / '.sweeps' / f'{name}.db'}"
    return optuna.load_study(study_name=name, storage=url)


def refs(repo: Path, name_prefix: str) -> dict[str, str]:
    """Experiment name -> commit, for the experiments whose name starts with the prefix."""
    listed = run(repo, "git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps/")
    found = {}
    for line in listed.stdout.splitlines():
        ref, sha = line.split()
        name = ref.rsplit("/", 1)[-1]
        if ref.count("/") == 4 and name.startswith(name_prefix):
            found[name] = sha
    return found


def overlap(trials) -> bool:
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    return any(b[0] < a[1] for a, b in itertools.pairwise(spans))


def guard_processes(repo: Path) -> list[int]:
    """Sweep guards (and the experiments they hold) still running for this repository."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"sweep/guard.py" in cmdline and cwd == str(repo):
            found.append(int(entry.name))
    return found


def wait_until(condition, what: str) -> None:
    """Poll `condition` (a state other processes reach) until it holds or HANG_GUARD_S."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.2)


def test_a_two_job_sweep_killed_and_run_again_confirms_its_winner_and_reports(repo, tmp_path):
    """Two jobs; two trials fail in their train stage (mps is not on this machine); the
    sweep is killed (SIGKILL) while a trial runs, and the next run keeps the trials it
    had done, retries the one that died with it, confirms the winner; the report."""
    sweeps = write_sweep(
        tmp_path / "sweeps",
        "local",
        {
            "objective": {"metric": "valid.accuracy", "direction": "maximize"},
            "trials": 4,
            "sampler": {"name": "grid", "seed": 0},
            "trial_timeout_min": 10,
            "confirm": {"top_k": 1, "seeds": 2},
            "space": {
                "train.lr": {"choices": [0.0005, 0.02]},
                "train.device": {"choices": ["cpu", "mps"]},
            },
        },
    )
    command = sweep_command(sweeps, "run", "local", "--jobs", "2", "--heartbeat-s", "1")
    # The cpu trial of lr 0.0005 is held after its first epoch (the mps one fails before
    # any) and says so in `held`: it is running when the sweep dies, however fast the
    # other three end.
    held = tmp_path / "held"
    env = {**env_for(repo), HOLD: "train.lr=0.0005", f"{HOLD}_HELD": str(held)}
    ended = []
    with subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, text=True) as driver:
        assert driver.stdout is not None
        for line in driver.stdout:
            if line.startswith("sweep: local-"):
                ended.append(line)
                if len(ended) == 3:
                    break
        try:
            wait_until(held.exists, "the held trial")
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=HANG_GUARD_S)
    assert len(ended) == 3, ended
    failed = [line for line in ended if "failed: " in line]
    assert len(failed) == 2
    assert all("train.py: error: train.device: 'mps' asked for" in line for line in failed)
    first = [t for t in study(repo, "local").get_trials() if t.state == TrialState.COMPLETE]
    assert len(first) == 1 and first[0].params["train.lr"] == 0.02
    kept = refs(repo, "local-")
    # The guards notice their sweep is gone and stop the experiments they ran.
    wait_until(lambda: guard_processes(repo) == [], "the guards to stop")

    done = run(repo, *command)
    lines = done.stdout.splitlines()
    search = [line for line in lines if line.startswith("sweep: local-") and "seed" not in line]
    assert len(search) == 1 and "failed" not in search[0], done.stdout  # the retry
    assert lines[-1].startswith("sweep local: winner local-"), done.stdout

    trials = study(repo, "local").get_trials()
    states = sorted(t.state.name for t in trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "FAIL", "FAIL"]
    assert overlap(trials), "two trials at once"
    own_fault = [t for t in trials if t.state == TrialState.FAIL and "error" in t.user_attrs]
    assert len(own_fault) == 2
    assert all(t.user_attrs["error"].startswith("train.py: error:") for t in own_fault)
    # The held trial died with the sweep: not its fault, so run again with its params.
    (crashed,) = [t for t in trials if t.state == TrialState.FAIL and "error" not in t.user_attrs]
    assert crashed.params == {"train.lr": 0.0005, "train.device": "cpu"}
    (retried,) = [t for t in trials if t.system_attrs.get("failed_trial") is not None]
    assert retried.system_attrs["failed_trial"] == crashed.number
    assert retried.state == TrialState.COMPLETE and retried.params == crashed.params
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value)
    assert best.number == first[0].number  # 1 epoch: the larger step learns more

    made = refs(repo, "local-")
    assert made[f"local-{best.number}"] == kept[f"local-{best.number}"]  # kept as it was
    complete = {f"local-{t.number}" for t in trials if t.state == TrialState.COMPLETE}
    confirm = {
        f"local-c{best.number}-s1",
        f"local-c{best.number}-s2",
        "local-base-s1",
        "local-base-s2",
    }
    assert set(made) == complete | confirm
    # Each experiment is HEAD's params + the trial's values + the threads of one of 2 jobs.
    params = yaml.safe_load(
        run(repo, "git", "show", f"{made[f'local-{best.number}']}:params.yaml").stdout
    )
    assert params["train"]["lr"] == 0.02 and params["train"]["threads"] == usable_cpus() // 2
    head = yaml.safe_load(run(repo, "git", "show", "HEAD:params.yaml").stdout)
    seed_2 = yaml.safe_load(run(repo, "git", "show", f"{made['local-base-s2']}:params.yaml").stdout)
    assert seed_2["seed"] == 2 and seed_2["train"]["lr"] == head["train"]["lr"]
    assert "local" not in run(repo, "dvc", "queue", "status").stdout  # no queue was used
    assert run(repo, "git", "status", "--porcelain", "--untracked-files=no").stdout == ""
    assert list((repo / ".dvc/tmp/exps").glob("tmp*")) == []  # no temporary copy left

    out = tmp_path / "report"
    reported = run(repo, *sweep_command(sweeps, "report", "local", "--out", str(out)))
    assert reported.stdout.startswith(f"sweep-report: wrote {out / 'report.md'}")
    text = (out / "report.md").read_text()
    for heading in (
        "## Winner: `local-",
        "## The winner on the test split",
        "## Search",
        "## Trials",
    ):
        assert heading in text
    assert "Paired on the same 200 test images" in text and "McNemar" in text
    assert "optimism, points" in text
    assert text.split("## Trials")[1].count("\n| local-") == len(trials)
    for figure in ("history", "importances", "slices", "confirmation"):
        assert f"({figure}.png)" in text or figure == "importances"
        assert (out / f"{figure}.png").read_bytes()[:8] == PNG_MAGIC


@pytest.fixture(scope="module")
def postgres():
    bin_dir = find_bin_dir()
    if bin_dir is None:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    with local_server(bin_dir) as url:
        yield url


def test_two_workers_share_a_postgres_study_and_push_every_experiment(repo, tmp_path, postgres):
    sweeps = write_sweep(
        tmp_path / "sweeps",
        "pg",
        {
            "objective": {"metric": "valid.accuracy", "direction": "maximize"},
            "trials": 3,
            "sampler": {"name": "random", "seed": 0},
            "space": {"model.dropout": {"low": 0.0, "high": 0.5}},
        },
    )
    remote = tmp_path / "origin.git"
    run(tmp_path, "git", "init", "-q", "--bare", str(remote))
    run(repo, "git", "push", "-q", str(remote), "HEAD:refs/heads/main")
    workers = []
    for index in range(2):  # two machines: clones sharing DVC's cache (a shared disk)
        clone = tmp_path / f"machine{index}"
        run(tmp_path, "git", "clone", "-q", "-b", "main", str(remote), str(clone))
        run(clone, "dvc", "config", "--local", "cache.dir", str(repo / ".dvc" / "cache"))
        command = sweep_command(sweeps, "worker", "pg", "--storage", postgres)
        log = tmp_path / f"worker{index}.log"
        with open(log, "w") as out:
            workers.append(
                subprocess.Popen(command, cwd=clone, env=env_for(clone), stdout=out, stderr=out)
            )
    for index, process in enumerate(workers):
        assert process.wait(timeout=600) == 0, (tmp_path / f"worker{index}.log").read_text()

    trials = optuna.load_study(study_name="pg", storage=postgres).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    assert {t.user_attrs["host"] for t in complete}  # each says where it ran
    ran = [t for t in trials if not t.user_attrs.get("surplus")]
    assert len(ran) == 3  # every trial ran exactly once (a surplus ask is never run)
    pushed = run(tmp_path, "git", "ls-remote", str(remote), "refs/exps/*").stdout.split()[1::2]
    names = sorted(ref.rsplit("/", 1)[-1] for ref in pushed)
    assert names == sorted(f"pg-{t.number}" for t in complete)
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert sum(log.count("sweep: pg-") for log in logs) == 3
    # Home: `dvc exp pull` brings them into the repository the sweep began in.
    run(repo, "git", "remote", "add", "origin", str(remote))
    for name in names:
        run(repo, "dvc", "exp", "pull", "origin", name)
    assert sorted(refs(repo, "pg-")) == names
