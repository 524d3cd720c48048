"""Hostile checkpoints: what loading one makes a stage allocate is bounded by what the
file really holds, and its text (class names) is validated where it enters.

Each case is refused in one line before the model is allocated; the subprocess cases
measure the peak memory of the real commands (predict, evaluate, export) against what
the command needs anyway."""

import io
import json
import zipfile
from pathlib import Path

import psutil
import pytest
import torch

from mnist_pipeline.config.params import MAX_MODEL_PARAMETERS, ModelConfig, parse_params
from mnist_pipeline.config.strict import parse
from mnist_pipeline.data.registry import DIGIT_NAMES
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.model.checkpoint import load_checkpoint, save_checkpoint
from mnist_pipeline.model.networks import InputSpec, build_model, count_parameters
from mnist_pipeline.testing import bounds
from mnist_pipeline.testing.bounds import MB, STAGE_BASE_RSS_KB, fails_within
from mnist_pipeline.testing.configs import make_params, model_config, params_data
from tests.support import REPO

SPEC = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.1, pixel_std=0.3)


def small_checkpoint(path: Path, hidden: tuple[int, ...] = (4,)) -> dict:
    """Write a real checkpoint of a small MLP; return its payload as loaded."""
    config = model_config(hidden_sizes=hidden)
    model = build_model(config, SPEC)
    save_checkpoint(path, model, config, SPEC, list(DIGIT_NAMES), make_params(model=config), {})
    return torch.load(path, weights_only=True)


def expanded_checkpoint(path: Path, hidden: tuple[int, ...]) -> None:
    """A checkpoint whose config asks for `hidden` and whose every weight is a stride-0
    view of one stored value: a few kB that claim the whole model."""
    payload = small_checkpoint(path)
    config = model_config(hidden_sizes=hidden)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_model(config, SPEC).state_dict().items()}
    payload["model_config"]["hidden_sizes"] = list(hidden)
    payload["state_dict"] = {k: torch.zeros(1).expand(shape) for k, shape in shapes.items()}
    torch.save(payload, path)


def deflated(path: Path) -> None:
    """Rewrite the archive with every entry deflate-compressed (torch.load reads it)."""
    with zipfile.ZipFile(path) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info, data in entries:
            target.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    path.write_bytes(buffer.getvalue())


def test_parameter_count_formula_is_the_built_models():
    configs = [
        model_config(),
        model_config(hidden_sizes=(), dropout=0.0),
        model_config(name="cnn", conv_channels=(8, 16), hidden_sizes=(32,), block_convs=2),
        model_config(name="cnn", conv_channels=(4, 8, 16, 32), hidden_sizes=(), block_convs=3),
    ]
    for config in configs:
        for classes in (2, 10, 37):
            spec = InputSpec((28, 28), classes, 0.1, 0.3)
            assert config.parameter_count(classes) == count_parameters(build_model(config, spec))


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        # 34 billion parameters: widths each within their own limit.
        (
            {"hidden_sizes": [65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536]},
            "model.hidden_sizes: the model would have 30,117,330,954 parameters",
        ),
        (
            {"name": "cnn", "conv_channels": [4096, 4096], "block_convs": 4},
            "model.conv_channels: the model would have 1,082,792,842 parameters",
        ),
    ],
)
def test_params_refuse_a_model_past_the_parameter_limit(model, problem):
    data = params_data()
    data["model"].update(model)
    with pytest.raises(PipelineError) as info:
        parse_params(data)
    assert str(info.value).startswith(problem)
    limit = f"over the limit of {MAX_MODEL_PARAMETERS:,}; use smaller layers"
    assert str(info.value).endswith(limit)


def test_the_largest_model_params_allow_is_within_the_limit():
    widest = parse(ModelConfig, {**params_data()["model"], "hidden_sizes": [65_536]}, "model")
    assert widest.parameter_count(10) <= MAX_MODEL_PARAMETERS


def test_stride0_weights_are_refused_before_the_model_is_built(tmp_path):
    path = tmp_path / "model.pt"
    expanded_checkpoint(path, (2048, 2048))  # 6 M values, 24 MB as float32, in a few kB
    assert path.stat().st_size < 20_000
    process = psutil.Process()
    rss_before = process.memory_info().rss
    error = fails_within(lambda: load_checkpoint(path), max_traced_bytes=5 * MB)
    assert process.memory_info().rss - rss_before < 20 * MB
    assert "is a view of 4 stored bytes, not 6422528; torch.save writes every tensor whole" in str(
        error
    )


def test_a_deflated_archive_is_refused_before_torch_load(tmp_path):
    path = tmp_path / "model.pt"
    small_checkpoint(path, hidden=(2048, 2048))  # 24 MB of weights
    deflated(path)
    error = fails_within(lambda: load_checkpoint(path), max_traced_bytes=5 * MB)
    assert "is compressed; torch.save stores entries uncompressed" in str(error)


def test_too_many_entries_are_refused_from_the_end_record(tmp_path):
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(10_001):
            archive.writestr(f"archive/data/{index}", b"")
    error = fails_within(lambda: load_checkpoint(path), max_traced_bytes=5 * MB)
    assert "a zip of 10001 entries" in str(error) and "at most 10000" in str(error)


def test_a_huge_object_tree_is_refused_before_unpickling(tmp_path):
    path = tmp_path / "model.pt"
    payload = small_checkpoint(path)
    payload["run"] = {"padding": "x" * 9_000_000}
    torch.save(payload, path)
    error = fails_within(lambda: load_checkpoint(path), max_traced_bytes=5 * MB)
    assert "its object tree is" in str(error) and "over the limit of 8000000" in str(error)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad):
    path = tmp_path / "model.pt"
    payload = small_checkpoint(path)
    payload["state_dict"]["2.weight"][0, 0] = bad
    torch.save(payload, path)
    with pytest.raises(PipelineError, match=r"tensor 2\.weight holds NaN or infinite values$"):
        load_checkpoint(path)


def test_weights_of_another_dtype_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    payload = small_checkpoint(path)
    payload["state_dict"] = {k: v.double() for k, v in payload["state_dict"].items()}
    torch.save(payload, path)
    with pytest.raises(PipelineError, match=r"2\.weight holds torch\.float64, the model needs"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        (
            ["</script><script>alert(document.domain)</script>", *DIGIT_NAMES[1:]],
            "class_names[0] is '</script><script>alert(document.domain)</script>': only",
        ),
        (["[x](https://evil.example)", *DIGIT_NAMES[1:]], "class_names[0] is '[x](https"),
        ([*DIGIT_NAMES[:9], "@octocat"], "class_names[9] is '@octocat'"),
        ([*DIGIT_NAMES[:9], "nine\x1b[2J"], "class_names[9] is 'nine\\x1b[2J'"),
        ([*DIGIT_NAMES[:9], "a|b"], "class_names[9] is 'a|b'"),
        ([*DIGIT_NAMES[:9], " "], "class_names[9] is ' '"),
        (list(DIGIT_NAMES[:9]), "9 class_names for 10 classes"),
        ([*DIGIT_NAMES[:9], "0"], "class_names must be distinct"),
        ("0123456789", "class_names must be a list of 2 to 1000 names, got str"),
        ([*DIGIT_NAMES[:9], 9], "class_names[9] must be a string of at most 100 characters"),
    ],
)
def test_class_names_are_validated_where_they_enter(tmp_path, names, problem):
    path = tmp_path / "model.pt"
    payload = small_checkpoint(path)
    payload["class_names"] = names
    torch.save(payload, path)
    with pytest.raises(PipelineError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: {problem}")


def test_ordinary_class_names_pass():
    from mnist_pipeline.data.registry import FASHION_NAMES, class_names_problem

    assert class_names_problem(list(FASHION_NAMES)) is None
    assert class_names_problem(["Äpfel", "猫", "T-shirt/top", "O'Neil (b.)", "R&B"]) is None


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "export"])
def test_commands_refuse_a_stride0_checkpoint_in_bounded_memory(tmp_path, command):
    path = tmp_path / "model.pt"
    # 1.1 G values: 4.5 GB if materialized. Within the parameter limit it would be
    # allocated by the model itself, so the size claim uses the widest allowed MLP.
    expanded_checkpoint(path, (65_536,))
    if command == "predict":
        image = tmp_path / "x.npy"
        image.write_bytes(_npy_zeros())
        argv = ["-m", "mnist_pipeline", "predict", "--model", str(path), str(image)]
        prog = "predict"
    else:
        out = tmp_path / "out"
        argv = [
            str(REPO / "stages" / "export.py"),
            *("--data", str(tmp_path), "--model", str(path)),
            *("--torchscript", str(out / "m.ts"), "--onnx", str(out / "m.onnx")),
            *("--metrics", str(out / "parity.json")),
        ]
        prog = "export.py"
    run = bounds.run_measured(argv, REPO)
    bounds.assert_one_line_failure(run, prog, "is a view of 4 stored bytes")
    assert run.peak_rss_kb < STAGE_BASE_RSS_KB + 100_000, run.peak_rss_kb
    assert not (tmp_path / "out").exists()


def _npy_zeros() -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.zeros((28, 28), dtype=np.uint8))
    return buffer.getvalue()


def test_json_of_a_checkpoint_never_reaches_here(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text(json.dumps({"format_version": 2}))
    with pytest.raises(PipelineError, match=r"not a readable checkpoint \(no zip end record\)$"):
        load_checkpoint(path)
