"""What a user writes in their working params.yaml never changes what the tests run.

Two halves: inside the test process, tests/conftest.py refuses every open of the
checkout's working params.yaml (an audit hook, for the whole run), so no test can read
it; and what tests and benchmarks take instead, `committed_text`, is HEAD's file whatever
the working copy holds, and is what the end-to-end repositories (`make_repo`) get.
"""

import subprocess

import pytest
import yaml

from mnist_pipeline.testing.dvc_repo import committed_text, env_for, make_repo
from tests.support import REPO, WorkingParamsRead


def test_reading_the_working_params_yaml_is_refused_in_every_way(monkeypatch):
    with pytest.raises(WorkingParamsRead, match="committed_params"):
        (REPO / "params.yaml").read_text()
    with pytest.raises(WorkingParamsRead):
        open(str(REPO / "params.yaml").encode(), "rb")  # noqa: SIM115 (never opened)
    monkeypatch.chdir(REPO)
    with pytest.raises(WorkingParamsRead):
        open("params.yaml")  # noqa: SIM115
    # Any other file is read as ever, params.yaml elsewhere included.
    assert (REPO / "dvc.yaml").read_text()


def test_committed_text_is_heads_file_whatever_the_working_copy_holds(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "src/mnist_pipeline").mkdir(parents=True)
    committed = "train:\n  lr: 0.001\n"
    (checkout / "params.yaml").write_text(committed)
    env = env_for(checkout)
    for command in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"]):
        subprocess.run(command, cwd=checkout, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "params"], cwd=checkout, env=env, check=True)
    # The README's offline setting pointed at a folder that does not exist, and more.
    edited = {"fetch": {"source": str(tmp_path / "no-such-folder")}, "train": {"lr": 123.0}}
    (checkout / "params.yaml").write_text(yaml.safe_dump(edited))

    assert committed_text(checkout, "params.yaml") == committed
    built = make_repo(tmp_path / "e2e", checkout)
    assert (built / "params.yaml").read_text() == committed
    # The edit is still there: read around, never rewritten.
    assert yaml.safe_load((checkout / "params.yaml").read_text()) == edited


def test_this_checkouts_committed_params_are_what_the_fixture_gives(committed_params):
    assert committed_params.read_text() == committed_text(REPO, "params.yaml")
    assert committed_params != REPO / "params.yaml"
