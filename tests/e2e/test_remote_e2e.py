"""Sharing results through a DVC remote, on a copy of this repository and synthetic data:
what one user pushes, another pulls into a fresh clone without re-running anything, and an
experiment travels through a git remote with its outputs, and a release's exported models
reach anyone through `dvc artifacts get`.

The module works on one copy of the reproduced repository (tests/conftest.py); the
DVC remote is a local folder and the git remote a bare repository, both on disk; nothing
touches the network.
"""

import json
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.export import formats
from mnist_pipeline.testing.dvc_repo import (
    ALL_STAGES,
    MODEL,
    commit_all,
    copy_into,
    read_json,
    run,
    stages_run,
)
from tests.support import REPO

pytestmark = pytest.mark.e2e

UP_TO_DATE = "Data and pipelines are up to date."
# Outputs whose bytes must travel unchanged: git-tracked metrics, DVC-cached model and
# figures.
OUTPUTS = (
    "metrics/evaluate.json",
    "metrics/train/metrics.json",
    "metrics/export.json",
    "models/model.pt",
    "models/model.onnx",
    "figures/evaluate/confusion_test.png",
)

TEST_ROWS = 200  # the reproduced repository's test split (tests/conftest.py)
EXPERIMENT = "e2e-two-epochs"


@pytest.fixture(scope="module")
def repo(reproduced_copy):
    """A copy of the reproduced repository (tests/conftest.py) with a default DVC
    remote (a local folder, given as an absolute path so that clones find it too)."""
    repo = reproduced_copy("remote")
    run(repo, "dvc", "remote", "add", "-d", "local", str(repo.parent / "dvc-storage"))
    commit_all(repo, "a DVC remote")
    return repo


def test_a_fresh_clone_pulls_the_outputs_and_has_nothing_to_reproduce(repo, tmp_path):
    run(repo, "dvc", "push")
    clone = tmp_path / "clone"
    run(repo, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "models").exists() and not (clone / ".dvc/cache").exists()

    run(clone, "dvc", "pull")
    assert run(clone, "dvc", "status").stdout.strip() == UP_TO_DATE
    assert "in sync" in run(clone, "dvc", "status", "--cloud").stdout
    again = run(clone, "dvc", "repro").stdout
    assert stages_run(again) == [] and UP_TO_DATE in again
    for stage in ALL_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in again
    for path in OUTPUTS:
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path


def test_an_experiment_travels_through_a_git_remote_with_its_outputs(repo, tmp_path):
    origin = tmp_path / "origin.git"
    run(repo, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    run(repo, "git", "remote", "add", "origin", str(origin))
    run(repo, "git", "push", "-q", "origin", "main")
    ran = run(repo, "dvc", "exp", "run", "-S", "train.epochs=2", "--name", EXPERIMENT)
    assert stages_run(ran.stdout) == ["train", "evaluate", "export"]
    # The workspace now holds the experiment's results (exp run applies them).
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["epochs"] == 2
    # Git refs to the git remote, cached outputs to the DVC remote.
    run(repo, "dvc", "exp", "push", "origin", EXPERIMENT)

    clone = tmp_path / "clone"
    run(repo, "git", "clone", "-q", str(origin), str(clone))
    assert EXPERIMENT not in run(clone, "dvc", "exp", "list", "--name-only").stdout
    run(clone, "dvc", "exp", "pull", "origin", EXPERIMENT)
    assert EXPERIMENT in run(clone, "dvc", "exp", "list", "--name-only").stdout.split()
    shown = json.loads(run(clone, "dvc", "exp", "show", "--json").stdout)
    experiments = [e for row in shown for e in row.get("experiments") or []]
    found = next(e for e in experiments if e["name"] == EXPERIMENT)
    assert found["revs"][0]["data"]["params"]["params.yaml"]["data"] == params

    run(clone, "dvc", "exp", "apply", EXPERIMENT)
    assert yaml.safe_load((clone / "params.yaml").read_text()) == params
    for path in OUTPUTS:
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path
    commit_all(repo, f"apply {EXPERIMENT}")  # leave a committed workspace behind


def test_a_release_tags_each_artifact_and_dvc_artifacts_get_fetches_them(repo, tmp_path):
    copy_into(repo, REPO, "scripts/release.py")
    commit_all(repo, "the release script")
    bad = run(repo, "python", "scripts/release.py", "--version", "1.0", check=False)
    assert bad.returncode == 1 and bad.stderr == (
        "release.py: error: VERSION '1.0': expected a semantic version with a leading v, "
        "e.g. v1.0.0\n"
    )
    done = run(repo, "python", "scripts/release.py", "--version", "v1.0.0").stdout
    tags = ["mnist-classifier@v1.0.0", "mnist-classifier-onnx@v1.0.0"]
    assert done.strip().endswith(f"share them: git push origin {' '.join(tags)}")
    assert sorted(run(repo, "git", "tag", "--list").stdout.split()) == sorted(tags)
    again = run(repo, "python", "scripts/release.py", "--version", "v1.0.0", check=False)
    assert again.returncode == 1 and "already released; choose another VERSION" in again.stderr

    # As the README says: push the commit and the tags; anywhere, get each by version.
    origin = tmp_path / "shared.git"
    run(repo, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    run(repo, "git", "push", "-q", str(origin), "HEAD:main", *tags)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for name, path in (("mnist-classifier", MODEL), ("mnist-classifier-onnx", "models/model.onnx")):
        got = outside / Path(path).name
        run(
            outside, "dvc", "artifacts", "get", str(origin), name, "--rev", "v1.0.0", "-o", str(got)
        )
        assert got.read_bytes() == (repo / path).read_bytes(), name
    latest = outside / "latest.pt"
    run(outside, "dvc", "artifacts", "get", str(origin), "mnist-classifier", "-o", str(latest))
    assert latest.read_bytes() == (repo / MODEL).read_bytes()
    # Any output, without a tag; the exports are outputs like the checkpoint.
    run(outside, "dvc", "get", str(origin), "models/model.ts")
    assert (outside / "model.ts").read_bytes() == (repo / "models/model.ts").read_bytes()
    listed = run(repo, "dvc", "ls", "--dvc-only", "-R", ".").stdout.split()
    assert {"models/model.pt", "models/model.ts", "models/model.onnx"} <= set(listed)
    # What was released passed the export stage's parity check on every test image.
    parity = read_json(repo / "metrics/export.json")
    for name in ("torchscript", "onnx"):
        assert parity[name]["images"] == TEST_ROWS and parity[name]["argmax_mismatches"] == 0
        assert parity[name]["max_abs_logit_diff"] <= formats.MAX_LOGIT_DIFF
