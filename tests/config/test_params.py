"""params.yaml validation: unknown keys, wrong types and bad ranges are one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.config.params import Location, Params, load_params, to_dict
from mnist_pipeline.config.strict import parse
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.testing.configs import PARAMS, params_data
from tests.support import python_env


def test_repository_params_load_and_cover_every_key(committed_params):
    params = load_params(committed_params)
    # Every field is spelled out in params.yaml: DVC tracks only keys that exist there.
    raw = yaml.safe_load(committed_params.read_text())
    # The committed file is checked (a user's edits never change the suite): a new param
    # needs params.yaml committed together with its field.
    assert set(_flat(raw)) == set(_flat(to_dict(params))), "commit params.yaml with the field"


def _flat(data, prefix=""):
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"trian": {}}, "unknown key(s) trian"),
        ({"train": {"lr": -0.1}}, "train.lr: must be > 0"),
        ({"train": {"lr": 0}}, "train.lr: must be > 0"),
        ({"train": {"lr": "fast"}}, "train.lr: expected a number, got 'fast'"),
        ({"train": {"epochs": True}}, "train.epochs: expected an integer"),
        ({"train": {"epochs": 2.5}}, "train.epochs: expected an integer"),
        ({"train": {"batch_size": 0}}, "train.batch_size: must be >= 1"),
        ({"train": {"optimizer": "rmsprop"}}, "train.optimizer: 'rmsprop' is not one of: sgd"),
        ({"train": {"schedule": "linear"}}, "train.schedule: 'linear' is not one of"),
        ({"train": {"device": "tpu"}}, "train.device: 'tpu' is not one of: auto, cpu, cuda"),
        ({"train": {"optimizer": "adam", "momentum": 0.9}}, "train.momentum: applies to sgd"),
        ({"train": {"nesterov": True}}, "train.nesterov: needs momentum > 0"),
        ({"model": {"name": "resnet"}}, "model.name: 'resnet' is not one of: mlp, cnn"),
        ({"model": {"dropout": 1.0}}, "model.dropout: must be in [0, 1)"),
        ({"model": {"dropout": -0.1}}, "model.dropout: must be in [0, 1)"),
        ({"model": {"hidden_sizes": [128, "x"]}}, "model.hidden_sizes[1]: expected an integer"),
        ({"model": {"hidden_sizes": 128}}, "model.hidden_sizes: expected a list"),
        ({"model": {"extra": 1}}, "model: unknown key(s) extra"),
        ({"fetch": {"dataset": "cifar"}}, "fetch.dataset: 'cifar' is not one of: mnist, fashion"),
        ({"fetch": {"dataset": 5}}, "fetch.dataset: expected a string, got 5"),
        ({"fetch": {"checksums": {"a.gz": "nothex"}}}, "fetch.checksums.a.gz: expected 32"),
        ({"fetch": {"source": "ftp://h/m.gz"}}, "fetch.source: ftp://h/m.gz: unsupported URL"),
        ({"fetch": {"source": "file://host/m.gz"}}, "file:// URLs must name a local path"),
        ({"fetch": {"source": "http:///m.gz"}}, "fetch.source: http:///m.gz: an http(s) URL"),
        ({"fetch": {"source": ["/a", "s3://b/c"]}}, "fetch.source[1]: s3://b/c: unsupported"),
        ({"fetch": {"source": ""}}, "fetch.source: an empty string names no source"),
        ({"fetch": {"source": []}}, "fetch.source: an empty list names no source"),
        ({"evaluate": {"mc_samples": 1}}, "evaluate.mc_samples: 1 pass has no spread"),
        ({"seed": "0"}, "seed: expected an integer"),
        ({"train": None}, "train: expected a mapping, got null"),
        # Every numeric param has an upper bound, named in the message.
        ({"evaluate": {"mc_samples": 1001}}, "evaluate.mc_samples: must be <= 1000, got 1001"),
        ({"evaluate": {"calibration_bins": 10**6}}, "evaluate.calibration_bins: must be <= 1000"),
        ({"evaluate": {"worst_examples": 257}}, "evaluate.worst_examples: must be <= 256"),
        ({"evaluate": {"batch_size": 65537}}, "evaluate.batch_size: must be <= 65536"),
        ({"train": {"batch_size": 10**9}}, "train.batch_size: must be <= 65536"),
        ({"train": {"epochs": 10001}}, "train.epochs: must be <= 10000"),
        ({"train": {"threads": 100_000}}, "train.threads: 100000 > the "),
        ({"fetch": {"retries": 21}}, "fetch.retries: must be <= 20"),
        ({"fetch": {"timeout_s": 3601}}, "fetch.timeout_s: must be <= 3600"),
        ({"fetch": {"backoff_s": 601}}, "fetch.backoff_s: must be <= 600"),
        ({"fetch": {"deadline_s": 0}}, "fetch.deadline_s: must be > 0"),
        ({"fetch": {"max_bytes": 5 * 10**9}}, "fetch.max_bytes: must be <= 4e+09"),
        ({"prepare": {"shard_size": 10**7}}, "prepare.shard_size: must be <= 1e+06"),
        ({"model": {"hidden_sizes": [10**6]}}, "model.hidden_sizes: widths must be <= 65536"),
        ({"model": {"hidden_sizes": [8] * 9}}, "model.hidden_sizes: at most 8 hidden layers"),
        ({"model": {"conv_channels": [5000]}}, "model.conv_channels: must be <= 4096"),
        ({"distributed": {"nproc_per_node": 2000}}, "distributed.nproc_per_node: must be <= 1024"),
        ({"distributed": {"timeout_s": 1e9}}, "distributed.timeout_s: must be <= 86400"),
        ({"seed": -1}, "seed: must be in [0, 4294967295], got -1"),
        # NaN and infinities would slip through every range check (NaN compares false).
        ({"train": {"lr": float("nan")}}, "train.lr: must be a finite number, got nan"),
        ({"model": {"dropout": float("nan")}}, "model.dropout: must be a finite number"),
        ({"fetch": {"timeout_s": float("inf")}}, "fetch.timeout_s: must be a finite number"),
        ({"train": {"weight_decay": 10**400}}, "train.weight_decay: must be a finite number"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(data, message):
    with pytest.raises(PipelineError) as info:
        parse(Params, params_data(data), "")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("https://h/m.pkl.gz", [Location("url", "https://h/m.pkl.gz")]),
        ("file:///srv/mnist", [Location("path", "/srv/mnist")]),
        ("file://localhost/srv/m%20n", [Location("path", "/srv/m n")]),
        ("~/data", [Location("path", str(Path("~/data").expanduser()))]),
        (["/a", "http://h/"], [Location("path", "/a"), Location("url", "http://h/")]),
        (None, None),
    ],
)
def test_fetch_source_is_classified_once_at_load(source, expected):
    locations = parse(Params, params_data({"fetch": {"source": source}}), "").fetch.locations
    assert (None if locations is None else list(locations)) == expected


@pytest.mark.parametrize(("text", "value"), [("1e-05", 1e-05), ("3E2", 300.0), ("+.5e+1", 5.0)])
def test_floats_as_dvc_writes_them_are_numbers_not_strings(tmp_path, text, value):
    """`dvc exp run -S train.lr=1e-05` writes `lr: 1e-05`, a string to YAML 1.1."""
    assert load_params(_file_with_lr(tmp_path, text)).train.lr == value


def test_a_float_field_still_refuses_words(tmp_path):
    path = _file_with_lr(tmp_path, "1e-05x")
    with pytest.raises(PipelineError, match=r"train\.lr: expected a number, got '1e-05x'"):
        load_params(path)


def test_threads_beyond_the_cores_name_the_count(monkeypatch):
    from mnist_pipeline.config import params as params_module

    monkeypatch.setattr(params_module, "usable_cpus", lambda: 2)
    with pytest.raises(PipelineError, match=r"^train.threads: 64 > the 2 CPU cores here"):
        parse(Params, params_data({"train": {"threads": 64}}), "")
    assert parse(Params, params_data({"train": {"threads": 2}}), "").train.threads == 2


def test_the_allowed_data_sets_are_the_registry_keys(monkeypatch):
    """A data set registered in data/registry.py is a valid fetch.dataset, with no second
    list to edit; the error names the registry's keys."""
    from mnist_pipeline.data import registry

    monkeypatch.setitem(registry.DATASETS, "kmnist", registry.MNIST)
    assert (
        parse(Params, params_data({"fetch": {"dataset": "kmnist"}}), "").fetch.dataset == "kmnist"
    )
    allowed = ", ".join(registry.DATASETS)
    with pytest.raises(
        PipelineError, match=rf"^fetch\.dataset: 'emnist' is not one of: {allowed}$"
    ):
        parse(Params, params_data({"fetch": {"dataset": "emnist"}}), "")


def test_config_imports_nothing_heavy_and_no_cycle():
    """config/ imports the registry, which must stay plain Python: no torch, and nothing
    that imports config back (a cycle would break whichever side loads first)."""
    code = (
        "import sys; import mnist_pipeline.data.registry; "
        "assert not any(m.startswith('mnist_pipeline.config') for m in sys.modules); "
        "import mnist_pipeline.config.params; "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    )
    env = python_env()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_nan_in_the_yaml_file_is_refused(tmp_path):
    path = _file_with_lr(tmp_path, ".nan")
    with pytest.raises(PipelineError, match=r"train.lr: must be a finite number, got nan$"):
        load_params(path)


def test_a_float_string_beyond_float_range_is_refused(tmp_path):
    path = _file_with_lr(tmp_path, "1e999")  # a string to YAML 1.1, infinity as a float
    with pytest.raises(PipelineError, match=r"train.lr: must be a finite number, got '1e999'$"):
        load_params(path)


def test_load_params_names_the_file(tmp_path):
    path = _file_with_lr(tmp_path, "-1")
    with pytest.raises(PipelineError, match=r"params.yaml: train.lr: must be > 0"):
        load_params(path)
    path.write_text("train: [1, 2\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_params(path)
    with pytest.raises(PipelineError, match="file not found"):
        load_params(tmp_path / "missing.yaml")


def test_valid_values_are_typed():
    params = parse(
        Params,
        params_data(
            {
                "train": {
                    "lr": 1,
                    "optimizer": "sgd",
                    "momentum": 0.9,
                    "nesterov": True,
                    "device": "cuda:1",
                },
                "model": {"hidden_sizes": [64]},
            }
        ),
        "",
    )
    assert params.train.lr == 1.0 and isinstance(params.train.lr, float)
    assert params.model.hidden_sizes == (64,)
    assert params.train.device == "cuda:1"


def _file_with_lr(tmp_path: Path, lr_text: str) -> Path:
    """A complete params file whose train.lr is `lr_text` as written (DVC's spelling)."""
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump(params_data({"train": {"lr": "LR_TEXT"}})).replace("LR_TEXT", lr_text)
    )
    return path


@pytest.mark.parametrize("key", ["train.lr", "model.dropout", "evaluate.mc_samples", "seed"])
def test_a_key_deleted_from_params_yaml_is_an_error_naming_it(committed_params, key):
    # params.yaml is the one source of values: a deleted line must not fall back to a
    # default that lives somewhere else.
    *sections, name = key.split(".")
    lines = committed_params.read_text().splitlines(keepends=True)
    indent = "  " * len(sections)
    section_line = (
        next(i for i, line in enumerate(lines) if line.startswith(f"{sections[0]}:"))
        if sections
        else -1
    )
    index = next(
        i
        for i, line in enumerate(lines)
        if i > section_line and line.startswith(f"{indent}{name}:")
    )
    committed_params.write_text("".join(lines[:index] + lines[index + 1 :]))
    with pytest.raises(PipelineError) as info:
        load_params(committed_params)
    assert str(info.value) == f"{committed_params}: {key}: missing; every key must be given"


def test_the_unit_test_base_params_cover_every_key(committed_params):
    # The configs unit tests start from (testing/configs.py) set every key params.yaml has.
    raw = yaml.safe_load(committed_params.read_text())
    assert set(_flat(to_dict(PARAMS))) == set(_flat(raw))
