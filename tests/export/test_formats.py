"""TorchScript and ONNX copies of the model: the same logits as the eager model on uint8
input of any batch size, their metadata read back and checked as untrusted text, and the
export stage refuses to write a copy that drifts."""

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
from tests.support import REPO, load_script, python_env

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


CLASSES = [f"class {i}" for i in range(10)]
META = formats.metadata(CLASSES, "fashion-mnist")


@pytest.mark.parametrize("suffix", [".ts", ".onnx"])
def test_an_exported_file_carries_its_metadata_and_loads_as_the_model(tmp_path, suffix):
    model = _model(CONFIGS["cnn"])
    images = torch.randint(0, 256, (9, 28, 28), dtype=torch.uint8)
    write = formats.torchscript_bytes if suffix == ".ts" else formats.onnx_bytes
    path = tmp_path / f"model{suffix}"
    path.write_bytes(write(model, images, META))
    loaded, meta = formats.read_exported(path)
    assert meta == META and meta["dataset"] == "fashion-mnist" and meta["class_names"] == CLASSES
    assert meta["input"] == {
        "name": "images",
        "dtype": "uint8",
        "shape": ["batch", 28, 28],
        "pixels": "0..255, light ink on a dark background, as the prepared data",
    }
    assert meta["output"]["shape"] == ["batch", 10]
    assert formats.parity(formats.eager_logits(model, images), loaded(images)).ok()


def _onnx_with(tmp_path: Path, changes: dict[str, str | None]) -> Path:
    """An ONNX export whose metadata_props are META's JSON texts with `changes` (None
    drops the key)."""
    import onnx

    model = _model(CONFIGS["mlp"])
    proto = onnx.load_from_string(formats.onnx_bytes(model, torch.zeros(2, 28, 28).byte()))
    texts = {key: json.dumps(META[key]) for key in formats.METADATA_KEYS} | changes
    for key, value in texts.items():
        if value is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    path = tmp_path / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"producer": None}, "no mnist-pipeline metadata (class names, data set, input"),
        ({"class_names": None}, "metadata has no 'class_names'"),
        ({"class_names": "[not json"}, "metadata 'class_names' is not JSON"),
        (
            {"class_names": json.dumps(["\x1b[31mred", *CLASSES[1:]])},
            "metadata: class_names[0] is '\\x1b[31mred': only letters",
        ),
        ({"class_names": json.dumps(["a"] * 10)}, "metadata: class_names must be distinct"),
        ({"dataset": json.dumps("cifar")}, "metadata: unknown data set 'cifar'"),
        ({"dataset": json.dumps(["mnist"])}, "metadata: unknown data set"),
        (
            {"input": json.dumps({**META["input"], "shape": ["batch", 32, 32]})},
            "metadata: its input is not the contract this version feeds",
        ),
        (
            {"output": json.dumps({**META["output"], "shape": ["batch", 9]})},
            "metadata: its output is not the contract this version feeds",
        ),
    ],
)
def test_exported_metadata_is_checked_where_it_enters(tmp_path, changes, problem):
    path = _onnx_with(tmp_path, changes)
    with pytest.raises(PipelineError) as caught:
        formats.read_exported(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and problem in message, message
    assert "\n" not in message and "\x1b" not in message


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace and save
def test_a_torchscript_file_without_metadata_or_with_bad_metadata_is_refused(tmp_path):
    model, images = _model(CONFIGS["mlp"]), torch.zeros(2, 28, 28, dtype=torch.uint8)
    plain = tmp_path / "plain.ts"
    plain.write_bytes(formats.torchscript_bytes(model, images))
    with pytest.raises(PipelineError, match="no mnist-pipeline metadata"):
        formats.read_exported(plain)
    traced = torch.jit.trace(model, images)
    broken = tmp_path / "broken.ts"
    torch.jit.save(traced, str(broken), _extra_files={formats.METADATA_FILE: "{not json"})
    with pytest.raises(PipelineError, match=f"{formats.METADATA_FILE} is not JSON"):
        formats.read_exported(broken)


def test_files_that_are_not_exported_models_are_one_line(tmp_path, monkeypatch):
    cases = {
        tmp_path / "model.bin": "not a .ts or .onnx file",
        tmp_path / "missing.onnx": "no such file",
        tmp_path / "folder.ts": "is a folder, not a model",
        tmp_path / "fifo.onnx": "is a FIFO, not a model",  # never read: it would block
        tmp_path / "garbage.onnx": "not a readable ONNX file (",
        tmp_path / "garbage.ts": "not a readable TorchScript file (",
    }
    (tmp_path / "model.bin").write_bytes(b"x")
    (tmp_path / "folder.ts").mkdir()
    os.mkfifo(tmp_path / "fifo.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07 not a protobuf" * 10)
    (tmp_path / "garbage.ts").write_bytes(b"PK\x03\x04 truncated zip")
    for path, problem in cases.items():
        with pytest.raises(PipelineError) as caught:
            formats.read_exported(path)
        assert str(caught.value).startswith(f"{path}: {problem}"), caught.value
        assert "\n" not in str(caught.value)
    big = tmp_path / "big.onnx"
    big.write_bytes(bytes(2000))
    monkeypatch.setattr(formats, "MAX_CHECKPOINT_BYTES", 1000)
    with pytest.raises(PipelineError, match="2000 bytes, over the limit of 1000 for a model"):
        formats.read_exported(big)


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
    images = load_split(prepared, "test")[0][:3]
    for name in ("model.ts", "model.onnx"):  # the prepared fixture is MNIST
        loaded, meta = formats.read_exported(tmp_path / "out" / name)
        assert meta["dataset"] == "mnist" and meta["class_names"] == list("0123456789")
        assert loaded(images).shape == (3, 10)


def test_a_parity_failure_is_one_line_and_writes_nothing(tmp_path, prepared, capsys, monkeypatch):
    stage = load_script("stages/export.py")
    # Even the TorchScript copy's exact logits fail a negative limit.
    monkeypatch.setattr(formats, "MAX_LOGIT_DIFF", -1.0)
    args = _export_args(tmp_path, prepared, _checkpoint(tmp_path))
    assert stage.run_stage(stage.main, stage.parser, args) == 1
    err = capsys.readouterr().err
    assert ": error: export parity failed: torchscript: max |logit diff| 0 (limit -1)" in err
    assert len(err.strip().splitlines()) == 1 and "onnx: " in err
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, prepared, capsys):
    stage = load_script("stages/export.py")
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
