"""The checkpoint rebuilds the model alone, loads weights-only, refuses bad files."""

import pytest
import torch

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.model.checkpoint import load_checkpoint, save_checkpoint
from mnist_pipeline.model.networks import InputSpec, build_model
from mnist_pipeline.runtime import run_info
from mnist_pipeline.testing.configs import make_params, model_config

SPEC = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.2, pixel_std=0.3)
NAMES = [str(i) for i in range(10)]


def _save(path, config):
    torch.manual_seed(0)
    model = build_model(config, SPEC)
    run = run_info(torch.device("cpu"))  # what the train stage records, as it records it
    save_checkpoint(path, model, config, SPEC, NAMES, make_params(model=config), run)
    return model


def test_round_trip_rebuilds_the_same_model(tmp_path):
    config = model_config(name="cnn", conv_channels=(4, 8), hidden_sizes=(16,), dropout=0.2)
    model = _save(tmp_path / "m.pt", config).eval()
    loaded, payload = load_checkpoint(tmp_path / "m.pt")
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    assert torch.equal(model(images), loaded(images))
    assert payload["class_names"] == NAMES
    assert payload["model_config"]["conv_channels"] == [4, 8]
    assert payload["params"]["model"]["name"] == "cnn"
    assert set(payload["params"]) == {"seed", "model", "train"}  # no fetch/evaluate params
    assert payload["run"]["torch_version"] == torch.__version__
    assert not loaded.training
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary left behind


def test_same_weights_give_the_same_bytes_whatever_the_file_name(tmp_path):
    config = model_config(hidden_sizes=(8,))
    _save(tmp_path / "a.pt", config)
    _save(tmp_path / "b.pt", config)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    path = tmp_path / "m.pt"
    _save(path, model_config(hidden_sizes=(16,)))
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["hidden_sizes"] = [32]
    torch.save(payload, path)
    with pytest.raises(PipelineError, match="weights do not match the model config") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_corrupt_missing_and_foreign_files_are_refused(tmp_path):
    for content, message in [
        (b"not a zip", "not a readable checkpoint"),
        (None, "checkpoint not found"),
    ]:
        path = tmp_path / "bad.pt"
        path.unlink(missing_ok=True)
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(PipelineError, match=message):
            load_checkpoint(path)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(PipelineError, match="not a checkpoint of this pipeline"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_format_1_loads_mlps_and_refuses_cnns_built_the_old_way(tmp_path):
    """Format 2 moved each CNN block's pooling before its batch norm; MLPs are unchanged."""
    for config in (model_config(hidden_sizes=(8,)), model_config(name="cnn", conv_channels=(4,))):
        path = tmp_path / f"{config.name}.pt"
        _save(path, config)
        payload = torch.load(path, weights_only=True)
        payload["format_version"] = 1
        torch.save(payload, path)
        if config.name == "mlp":
            load_checkpoint(path)
        else:
            with pytest.raises(PipelineError, match=r"a format 1 CNN.*retrain it"):
                load_checkpoint(path)
    payload["format_version"] = 3
    torch.save(payload, path)
    with pytest.raises(PipelineError, match="checkpoint format 3 unsupported"):
        load_checkpoint(path)
