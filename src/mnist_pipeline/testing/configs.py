"""Complete configs for unit tests, built in code.

Every params key is required in params.yaml, so the config classes have no defaults. A
unit test takes the base config of its section here and changes the few keys it is
about (`train_config(epochs=2)`). The bases are fixed here, not read from params.yaml:
neither a user's params nor a change of the shipped values changes what a unit test
does. (End-to-end tests and benchmarks run the committed params.yaml instead.)
"""

import dataclasses
from typing import Any

import yaml

from mnist_pipeline.config.params import (
    AugmentConfig,
    DistributedConfig,
    EvaluateConfig,
    FetchConfig,
    ModelConfig,
    Params,
    PrepareConfig,
    TrainConfig,
    to_dict,
)
from mnist_pipeline.config.strict import merged

FETCH = FetchConfig(
    dataset="mnist",
    source=None,
    checksums={},
    timeout_s=60.0,
    deadline_s=900.0,
    retries=3,
    backoff_s=1.0,
    max_bytes=200_000_000,
)
PREPARE = PrepareConfig(shard_size=10_000)
MODEL = ModelConfig(
    name="mlp",
    dropout=0.0,
    hidden_sizes=(128, 256),
    conv_channels=(32, 64),
    block_convs=1,
    input_norm="standardize",
)
AUGMENT = AugmentConfig(shift_px=0, hflip=False)
TRAIN = TrainConfig(
    device="auto",
    epochs=10,
    batch_size=128,
    optimizer="adamw",
    lr=1e-3,
    momentum=0.0,
    nesterov=False,
    weight_decay=0.0,
    schedule="constant",
    warmup_fraction=0.3,
    step_epochs=10,
    gamma=0.1,
    label_smoothing=0.0,
    early_stopping_patience=0,
    precision="fp32",
    compile=False,
    manual_mlp_step=True,
    threads=0,
    augment=AUGMENT,
)
DISTRIBUTED = DistributedConfig(
    nproc_per_node=1, nnodes=1, rdzv_endpoint="", rdzv_id="mnist-pipeline", timeout_s=300.0
)
EVALUATE = EvaluateConfig(
    device="auto",
    batch_size=1000,
    mc_samples=0,
    calibration_bins=15,
    calibrate=True,
    worst_examples=16,
    tta_hflip=False,
)
PARAMS = Params(
    seed=0,
    fetch=FETCH,
    prepare=PREPARE,
    model=MODEL,
    train=TRAIN,
    distributed=DISTRIBUTED,
    evaluate=EVALUATE,
)


def fetch_config(**changes: Any) -> FetchConfig:
    return dataclasses.replace(FETCH, **changes)


def model_config(**changes: Any) -> ModelConfig:
    return dataclasses.replace(MODEL, **changes)


def augment_config(**changes: Any) -> AugmentConfig:
    return dataclasses.replace(AUGMENT, **changes)


def train_config(**changes: Any) -> TrainConfig:
    return dataclasses.replace(TRAIN, **changes)


def distributed_config(**changes: Any) -> DistributedConfig:
    return dataclasses.replace(DISTRIBUTED, **changes)


def evaluate_config(**changes: Any) -> EvaluateConfig:
    return dataclasses.replace(EVALUATE, **changes)


def make_params(**changes: Any) -> Params:
    """The base params with whole sections (or the seed) replaced."""
    return dataclasses.replace(PARAMS, **changes)


def params_data(updates: dict[str, Any] | None = None) -> dict[str, Any]:
    """The base params as params.yaml data (nested, lists for tuples), with `updates`
    merged in key by key: what a test feeds to the YAML-level parser."""
    return merged(to_dict(PARAMS), updates or {})


def complete_params(partial: str | dict[str, Any]) -> str:
    """A whole params file's text: the base params with `partial` (YAML text or nested
    data, e.g. "train: {epochs: 2}") merged in; what a test gives a stage script."""
    updates = yaml.safe_load(partial) if isinstance(partial, str) else partial
    return yaml.safe_dump(params_data(updates), sort_keys=False)
