"""The model leaves the repository: `dvc repro` exports it, `dvc push` stores it in a
remote, and `dvc artifacts get` from anywhere else returns the very same bytes."""

import pytest

from mnist_pipeline.export import formats
from mnist_pipeline.testing.dvc_repo import (
    SMALL_PARAMS,
    commit_all,
    make_repo,
    read_json,
    run,
    set_params,
    stages_run,
    write_local_source,
)
from tests.support import REPO

pytestmark = pytest.mark.e2e


def test_repro_push_then_artifacts_get_returns_the_model(tmp_path):
    (tmp_path / "source").mkdir()
    fetch = write_local_source(tmp_path / "source", (600, 120, 120), seed=11)
    repo = make_repo(tmp_path / "repo", REPO)
    set_params(repo, SMALL_PARAMS)
    set_params(repo, {"fetch": fetch})
    run(repo, "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    ran = stages_run(run(repo, "dvc", "repro").stdout)
    assert ran[:3] == ["fetch", "prepare", "train"]
    assert sorted(ran[3:]) == ["evaluate", "export"]  # both need only train's output
    parity = read_json(repo / "metrics/export.json")
    for name in ("torchscript", "onnx"):
        assert parity[name]["images"] == 120 and parity[name]["argmax_mismatches"] == 0
        assert parity[name]["max_abs_logit_diff"] <= formats.MAX_LOGIT_DIFF
    commit_all(repo, "trained and exported")
    run(repo, "dvc", "push")

    # `dvc artifacts get` resolves a version from a git tag in GTO's format (what
    # `gto register` writes): name@vX.Y.Z, annotated.
    for name in ("mnist-classifier", "mnist-classifier-onnx"):
        run(repo, "git", "tag", "-a", f"{name}@v0.1.0", "-m", f"register {name}")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A local path is a git URL: the repository is cloned, the file comes from its remote.
    run(elsewhere, "dvc", "artifacts", "get", str(repo), "mnist-classifier")
    run(elsewhere, "dvc", "artifacts", "get", str(repo), "mnist-classifier-onnx")
    run(elsewhere, "dvc", "get", str(repo), "models/model.ts")  # any output, without a tag
    for name in ("model.pt", "model.onnx", "model.ts"):
        assert (elsewhere / name).read_bytes() == (repo / "models" / name).read_bytes()
    listed = run(repo, "dvc", "ls", "--dvc-only", "-R", ".").stdout.split()
    assert {"models/model.pt", "models/model.ts", "models/model.onnx"} <= set(listed)
