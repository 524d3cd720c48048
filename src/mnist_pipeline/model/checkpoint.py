"""The model file: weights plus everything needed to rebuild and describe them.

Only plain containers and tensors go in, so `torch.load(weights_only=True)`
can read it back without executing code. Layout (all keys required):

    format_version: 1
    state_dict:     the model's weights (no `module.`/`_orig_mod.` prefixes)
    model_config:   ModelConfig as a dict
    input_spec:     InputSpec as a dict (image shape, classes, pixel mean/std)
    class_names:    list of class names, index = label
    params:         the params training depended on (seed, model, train sections)
    run:            torch version, device, threads, epochs run, seconds
"""

import dataclasses
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_pipeline.config.params import ModelConfig, to_dict
from mnist_pipeline.config.strict import parse
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import atomic_file
from mnist_pipeline.model.networks import InputSpec, build_model

FORMAT_VERSION = 1
TRAIN_PARAMS = ("seed", "model", "train")  # the params sections of the train stage
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
    if not path.is_file():
        raise PipelineError(f"{path}: checkpoint not found; run `dvc repro train` first")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # zip errors, unpickling refusals, truncation
        raise PipelineError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None
    if not isinstance(payload, dict) or set(KEYS) - set(payload):
        raise PipelineError(f"{path}: not a checkpoint of this pipeline (missing keys)")
    if payload["format_version"] != FORMAT_VERSION:
        raise PipelineError(f"{path}: checkpoint format {payload['format_version']} unsupported")
    config = parse(ModelConfig, payload["model_config"], "model_config")
    spec_data = dict(payload["input_spec"], image_shape=tuple(payload["input_spec"]["image_shape"]))
    model = build_model(config, InputSpec(**spec_data))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise PipelineError(
            f"{path}: weights do not match the model config ({_first_line(exc)})"
        ) from None
    return model.to(device).eval(), payload


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300] if lines else type(exc).__name__
