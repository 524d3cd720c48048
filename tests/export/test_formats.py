"""TorchScript and ONNX copies of the model: the same logits as the eager model on uint8
input of any batch size, and the export stage refuses to write a copy that drifts."""

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from mnist_pipeline.config.params import ModelConfig
from mnist_pipeline.data.prepared import load_split
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.export import formats
from mnist_pipeline.model.checkpoint import save_checkpoint
from mnist_pipeline.model.networks import InputSpec, build_model
from mnist_pipeline.testing.configs import make_params, model_config
from tests.support import REPO, python_env

SPEC = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.13, pixel_std=0.31)
CONFIGS = {
    "mlp": model_config(name="mlp", hidden_sizes=(32,), dropout=0.2),
    "cnn": model_config(name="cnn", conv_channels=(4, 8), hidden_sizes=(16,), dropout=0.2),
    "unit-norm": model_config(name="mlp", hidden_sizes=(16,), input_norm="unit"),
}


def _model(config: ModelConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(config, SPEC)
    for module in model.modules():  # batch norm's running stats must matter too
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_both_formats_match_the_eager_model_at_any_batch_size(name):
    model = _model(CONFIGS[name])
    images = torch.randint(0, 256, (37, 28, 28), dtype=torch.uint8)
    torchscript = formats.load_torchscript(formats.torchscript_bytes(model, images))
    session = formats.onnx_session(formats.onnx_bytes(model, images))
    assert session.get_inputs()[0].type == "tensor(uint8)"
    for rows in (1, 5, 37):  # traced with 2 images: the batch axis is dynamic
        batch = images[:rows]
        reference = formats.eager_logits(model, batch)
        for logits in (
            formats.torchscript_logits(torchscript, batch),
            formats.onnx_logits(session, batch),
        ):
            result = formats.parity(reference, logits)
            assert result.ok() and result.images == rows, result
    # TorchScript runs the same kernels: the same floats.
    assert torch.equal(formats.torchscript_logits(torchscript, images), reference)


def test_check_parity_names_every_failing_format():
    results = {
        "torchscript": formats.Parity(10, 0.0, 0),
        "onnx": formats.Parity(10, 2e-3, 1),
    }
    with pytest.raises(PipelineError) as caught:
        formats.check_parity(results)
    message = str(caught.value)
    assert "\n" not in message and "torchscript" not in message
    assert "onnx: max |logit diff| 0.002 (limit 0.0001), 1 of 10 argmax differ" in message
    formats.check_parity({"onnx": formats.Parity(10, 1e-4, 0)})  # at the limit: fine


def _export_args(tmp_path: Path, prepared: Path, checkpoint: Path) -> list[str]:
    out = tmp_path / "out"
    return [
        "--data",
        str(prepared),
        "--model",
        str(checkpoint),
        "--torchscript",
        str(out / "model.ts"),
        "--onnx",
        str(out / "model.onnx"),
        "--metrics",
        str(out / "export.json"),
    ]


def _checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    config = CONFIGS["cnn"]
    save_checkpoint(path, _model(config), config, SPEC, list("0123456789"), make_params(), {})
    return path


@pytest.mark.slow
def test_export_stage_writes_both_files_and_the_parity_metrics(tmp_path, prepared):
    argv = [sys.executable, str(REPO / "stages/export.py")]
    argv += _export_args(tmp_path, prepared, _checkpoint(tmp_path))
    env = python_env()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "out/export.json").read_text())
    rows = len(load_split(prepared, "test")[1])
    assert metrics["max_abs_logit_diff_limit"] == formats.MAX_LOGIT_DIFF
    for name in ("torchscript", "onnx"):
        assert metrics[name]["images"] == rows and metrics[name]["argmax_mismatches"] == 0
        assert metrics[name]["max_abs_logit_diff"] <= formats.MAX_LOGIT_DIFF
    module = formats.load_torchscript((tmp_path / "out/model.ts").read_bytes())
    images = load_split(prepared, "test")[0][:3]
    assert module(images).shape == (3, 10)


def test_a_parity_failure_is_one_line_and_writes_nothing(tmp_path, prepared, capsys, monkeypatch):
    sys.path.insert(0, str(REPO / "stages"))
    try:
        import export as stage
    finally:
        sys.path.remove(str(REPO / "stages"))
    # Even the TorchScript copy's exact logits fail a negative limit.
    monkeypatch.setattr(formats, "MAX_LOGIT_DIFF", -1.0)
    args = _export_args(tmp_path, prepared, _checkpoint(tmp_path))
    assert stage.run_stage(stage.main, stage.parser, args) == 1
    err = capsys.readouterr().err
    assert ": error: export parity failed: torchscript: max |logit diff| 0 (limit -1)" in err
    assert len(err.strip().splitlines()) == 1 and "onnx: " in err
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, prepared, capsys):
    sys.path.insert(0, str(REPO / "stages"))
    try:
        import export as stage
    finally:
        sys.path.remove(str(REPO / "stages"))
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    assert stage.run_stage(stage.main, stage.parser, _export_args(tmp_path, prepared, bad)) == 1
    err = capsys.readouterr().err
    assert "not a readable checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


EXPORT_SCRIPT = """
import sys, torch
from mnist_pipeline.export import formats
from mnist_pipeline.model.networks import InputSpec, build_model
from mnist_pipeline.testing.configs import model_config
torch.manual_seed(0)
spec = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.13, pixel_std=0.3)
model = build_model(model_config(hidden_sizes=(16,), dropout=0.2), spec)
images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
sys.stdout.buffer.write(formats.torchscript_bytes(model, images))
"""


@pytest.mark.slow
def test_torchscript_bytes_are_the_same_from_any_checkout_and_any_run(tmp_path):
    # A queued experiment exports from DVC's copy of the repository, a fresh clone from
    # another folder: the same model must give the same file, or dvc.lock changes.
    outputs = []
    for name in ("one", "two"):
        shutil.copytree(REPO / "src", tmp_path / name / "src")
        env = {**os.environ, "PYTHONPATH": str(tmp_path / name / "src")}
        command = [sys.executable, "-c", EXPORT_SCRIPT]
        outputs.append(subprocess.run(command, env=env, capture_output=True, check=True).stdout)
    assert outputs[0] == outputs[1]
    archive = zipfile.ZipFile(io.BytesIO(outputs[0]))
    assert not [name for name in archive.namelist() if name.endswith(".debug_pkl")]
    model = formats.load_torchscript(outputs[0])
    assert model(torch.zeros(3, 28, 28, dtype=torch.uint8)).shape == (3, 10)
