"""`make gpu-check`'s CPU quick mode, end to end as a user runs it: every setting trains
and reports, the torchrun part says why it is skipped, and bad use is one clear line.
No timing assertions: on the CPU the numbers only show that the check runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from mnist_pipeline.data.prepared import load_splits, read_manifest
from mnist_pipeline.model.networks import input_spec_from_manifest
from mnist_pipeline.testing.dvc_repo import committed_text
from tests.support import REPO, python_env

pytestmark = pytest.mark.slow  # the check runs as a subprocess and trains three models


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    params = tmp_path / "params.yaml"  # the committed params: a user's edits change nothing
    params.write_text(committed_text(REPO, "params.yaml"))
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--params", str(params), *args]
    env = python_env(REPO)
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_cpu_quick_mode_reports_every_setting(tmp_path):
    out = tmp_path / "gpu-check.json"
    result = _run(tmp_path, "--device", "cpu", "--quick", "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert list(report["results"]) == list(gpu_check.SETTINGS)
    for name, row in report["results"].items():
        assert row["epochs"] == gpu_check.QUICK_EPOCHS, name
        assert row["first_epoch_s"] > 0 and row["median_epoch_s"] > 0
        assert 0 <= row["final_valid_accuracy"] <= 1 and row["target"] == 0.99  # MNIST-like
        assert row["compile"] is False  # on the CPU the check keeps the preset's choices
        assert name in result.stdout
    assert report["results"]["cnn-fast"]["precision"] == "bf16"  # the preset's own
    assert report["torchrun"] == {"skipped": "0 GPU(s)"}
    assert report["environment"]["device"] == "cpu" and report["environment"]["torch"]
    assert "environment:" in result.stdout and "torchrun on 2 GPUs" in result.stdout


@pytest.mark.parametrize("quick", [True, False])
def test_data_from_a_prepared_folder_is_its_splits_described_by_its_manifest(prepared, quick):
    """On one device `--data DIR` changes only what `load_data` returns (the two-GPU
    torchrun row, skipped without GPUs, also trains on it): the prepared train and valid
    splits, their first rows in quick mode, and the manifest's data set and input spec.
    In this process; the run above shows the rest with synthetic data of the same data
    set, so a second whole run on this folder would show nothing more."""
    data = gpu_check.load_data(prepared, quick)
    manifest = read_manifest(prepared)
    splits = load_splits(prepared, ("train", "valid"))
    assert data.dataset == manifest["dataset"] == "mnist"  # the target the run above uses
    assert data.spec == input_spec_from_manifest(manifest)
    rows = gpu_check.QUICK_ROWS[:2] if quick else (None, None)
    pairs = zip((data.train, data.valid), ("train", "valid"), rows, strict=True)
    for (images, labels), name, limit in pairs:
        whole_images, whole_labels = splits[name]
        assert torch.equal(images, whole_images[:limit]), name
        assert torch.equal(labels, whole_labels[:limit]), name
    if quick:  # the fixture's 300 train rows are cut to one batch; its 60 valid rows kept
        assert (len(data.train[1]), len(data.valid[1])) == (256, 60)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "cuda"], "no CUDA device here"),
        (["--device", "cpu"], "--data DIR"),
        (["--device", "cpu", "--quick", "--data", "no-such-dir"], "no-such-dir/manifest.json"),
        (["--device", "tpu!", "--quick"], "--device 'tpu!' is not a device"),
    ],
)
def test_bad_use_is_one_line(tmp_path, monkeypatch, args, message):
    """In this process (`sys.exit` with a text: Python prints it as one line and exits 1;
    the test below runs one case as a user does)."""
    if args == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run")
    params = tmp_path / "params.yaml"
    params.write_text(committed_text(REPO, "params.yaml"))
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--params", str(params), *args])
    with pytest.raises(SystemExit) as exited:
        gpu_check.main()
    assert isinstance(exited.value.code, str) and exited.value.code.startswith("gpu_check: ")
    assert message in exited.value.code and "\n" not in exited.value.code


def test_bad_use_exits_1_with_one_line_on_stderr(tmp_path):
    result = _run(tmp_path, "--device", "tpu!", "--quick")
    assert result.returncode == 1
    assert result.stderr == "gpu_check: --device 'tpu!' is not a device (cuda, cuda:N, cpu)\n"
