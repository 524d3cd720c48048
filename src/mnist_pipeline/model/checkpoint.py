"""The model file: weights plus everything needed to rebuild and describe them.

Only plain containers and tensors go in, so `torch.load(weights_only=True)`
can read it back without executing code. Layout (all keys required):

    format_version: 2 (1: CNN blocks pooled after the ReLU; its MLPs still load)
    state_dict:     the model's weights (no `module.`/`_orig_mod.` prefixes)
    model_config:   ModelConfig as a dict
    input_spec:     InputSpec as a dict (image shape, classes, pixel mean/std)
    class_names:    list of class names, index = label
    params:         the params training depended on (seed, model, train sections)
    run:            torch version, device, threads, epochs run, seconds

Loading is bounded: before torch.load, the file's size and its zip entries are checked
(`archive.check_archive`: nothing compressed, a small object tree); the model config is
validated like params (at most MAX_MODEL_PARAMETERS); the model it describes is built on
the meta device (no memory) and compared, tensor by tensor (shape and dtype), with the
weights the file holds, each of which must really be stored (no stride-0 views) and
finite, before the real model is allocated. So a small file whose config claims huge
layers fails at once, and what loading allocates is bounded by what the file holds.
Class names are validated as a manifest's are (`registry.class_names_problem`): they
reach CSV, HTML, Markdown and terminals downstream.
"""

import dataclasses
import io
import math
import stat
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_pipeline.config.params import MAX_MODEL_PARAMETERS, ModelConfig, to_dict
from mnist_pipeline.config.strict import parse
from mnist_pipeline.data.registry import IMAGE_SHAPE, MAX_CLASSES, class_names_problem
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import atomic_file
from mnist_pipeline.model.archive import MAX_PICKLE_BYTES, check_archive, check_tensors
from mnist_pipeline.model.networks import InputSpec, build_model

FORMAT_VERSION = 2  # 2: CNN blocks pool before batch norm; MLPs are as in format 1
TRAIN_PARAMS = ("seed", "model", "train")  # the params sections of the train stage
# The largest model params allow, in float32 (batch-norm buffers are a rounding error
# beside it), plus the object tree.
MAX_CHECKPOINT_BYTES = 4 * MAX_MODEL_PARAMETERS + MAX_PICKLE_BYTES + 1_000_000
KEYS = (
    "format_version",
    "state_dict",
    "model_config",
    "input_spec",
    "class_names",
    "params",
    "run",
)


def save_checkpoint(
    path: Path,
    model: nn.Module,
    model_config: ModelConfig,
    spec: InputSpec,
    class_names: list[str],
    params: Any,
    run: dict[str, Any],
) -> None:
    """Write the checkpoint atomically: an interrupted run leaves the old file or none."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format_version": FORMAT_VERSION,
        "state_dict": state,
        "model_config": to_dict(model_config),
        "input_spec": {**dataclasses.asdict(spec), "image_shape": list(spec.image_shape)},
        "class_names": list(class_names),
        # Only what train depends on: the file's bytes must not change with fetch or
        # evaluate params, or DVC would re-run evaluate for nothing.
        "params": {k: v for k, v in to_dict(params).items() if k in TRAIN_PARAMS},
        "run": run,
    }
    # Saved to memory first: given a path, torch names the archive's inner folder after
    # the (temporary) file name, and the same weights must give the same bytes for DVC.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_file(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_checkpoint(
    path: Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from the checkpoint alone; returns (model in eval mode, payload)."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError:
        raise PipelineError(f"{path}: checkpoint not found; run `dvc repro train` first") from None
    if not stat.S_ISREG(info.st_mode):
        raise PipelineError(f"{path}: not a regular file, so not a checkpoint")
    if info.st_size > MAX_CHECKPOINT_BYTES:
        raise PipelineError(
            f"{path}: {info.st_size} bytes, over the checkpoint limit of {MAX_CHECKPOINT_BYTES}"
        )
    check_archive(path, MAX_CHECKPOINT_BYTES, "checkpoint")
    try:
        # On the CPU first: the checks below run before anything reaches a device.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip errors, unpickling refusals, truncation
        raise PipelineError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None
    if not isinstance(payload, dict) or set(KEYS) - set(payload):
        raise PipelineError(f"{path}: not a checkpoint of this pipeline (missing keys)")
    check_tensors(path, payload["state_dict"])
    version = payload["format_version"]
    if version not in (1, FORMAT_VERSION):
        raise PipelineError(f"{path}: checkpoint format {version} unsupported")
    try:
        config = parse(ModelConfig, payload["model_config"], "model_config")
        spec = _input_spec(payload["input_spec"])
    except PipelineError as exc:
        raise PipelineError(f"{path}: {exc}") from None
    names_problem = class_names_problem(payload["class_names"])
    if names_problem is None and len(payload["class_names"]) != spec.num_classes:
        names_problem = f"{len(payload['class_names'])} class_names for {spec.num_classes} classes"
    if names_problem:
        raise PipelineError(f"{path}: {names_problem}")
    if version == 1 and config.name == "cnn":
        raise PipelineError(
            f"{path}: a format 1 CNN, whose blocks pool after the ReLU, which this version "
            "no longer builds; retrain it (dvc repro train)"
        )
    _check_weights_fit(path, config, spec, payload["state_dict"])
    model = build_model(config, spec)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise PipelineError(
            f"{path}: weights do not match the model config ({_first_line(exc)})"
        ) from None
    return model.to(device).eval(), payload


def _input_spec(data: Any) -> InputSpec:
    """The checkpoint's input_spec, checked as a manifest's values are."""
    fields = {f.name for f in dataclasses.fields(InputSpec)}
    if not isinstance(data, dict) or set(data) != fields:
        raise PipelineError(f"input_spec: expected the keys {', '.join(sorted(fields))}")
    if data["image_shape"] != list(IMAGE_SHAPE):
        raise PipelineError(f"input_spec.image_shape: expected {list(IMAGE_SHAPE)}")
    classes = data["num_classes"]
    if not isinstance(classes, int) or not 2 <= classes <= MAX_CLASSES:
        raise PipelineError(f"input_spec.num_classes: expected 2 to {MAX_CLASSES}, got {classes!r}")
    for key, low_ok in (("pixel_mean", True), ("pixel_std", False)):
        value = data[key]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not (0 <= value <= 1 and (low_ok or value)):
            interval = "[0, 1]" if low_ok else "(0, 1]"
            raise PipelineError(f"input_spec.{key}: expected a number in {interval}, got {value!r}")
    return InputSpec(
        image_shape=IMAGE_SHAPE,
        num_classes=classes,
        pixel_mean=data["pixel_mean"],
        pixel_std=data["pixel_std"],
    )


def _check_weights_fit(path: Path, config: ModelConfig, spec: InputSpec, state: Any) -> None:
    """Every tensor the config implies is in `state` with its shape and dtype, and nothing
    else; checked on a meta-device model, which allocates nothing however large it claims
    to be."""
    with torch.device("meta"):
        meta_state = build_model(config, spec).state_dict()
    expected = {k: tuple(v.shape) for k, v in meta_state.items()}
    implied = sum(math.prod(shape) for shape in expected.values())
    if implied > MAX_MODEL_PARAMETERS:
        raise PipelineError(
            f"{path}: its model config implies {implied:,} values, over the limit of "
            f"{MAX_MODEL_PARAMETERS:,}"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(f"{path}: state_dict must map names to tensors")
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found == expected:
        for key, tensor in state.items():
            if tensor.dtype != meta_state[key].dtype:
                raise PipelineError(
                    f"{path}: {key} holds {tensor.dtype}, the model needs {meta_state[key].dtype}"
                )
        return
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    differ = [k for k in expected if k in found and found[k] != expected[k]]  # in model order
    if differ:
        key = differ[0]
        problem = f"{key} is {list(found[key])}, the config needs {list(expected[key])}"
    elif missing:
        problem = f"missing {', '.join(missing[:3])}"
    else:
        problem = f"unexpected {', '.join(unexpected[:3])}"
    raise PipelineError(
        f"{path}: weights do not match the model config ({problem}; {implied:,} values "
        f"implied, {sum(math.prod(s) for s in found.values()):,} held)"
    )


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300] if lines else type(exc).__name__
