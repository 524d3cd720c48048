"""Model builders: shapes, dropout placement, input normalization."""

import pytest
import torch

from mnist_pipeline.model.networks import InputSpec, build_model, count_parameters, has_dropout
from mnist_pipeline.testing.configs import model_config

SPEC = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.13, pixel_std=0.31)


@pytest.mark.parametrize(
    "config",
    [
        model_config(name="mlp", hidden_sizes=(128, 256)),
        model_config(name="mlp", hidden_sizes=(), dropout=0.0),
        model_config(name="mlp", hidden_sizes=(32,), dropout=0.5),
        model_config(name="cnn", conv_channels=(8, 16), hidden_sizes=(32,), dropout=0.25),
        model_config(name="cnn", conv_channels=(4, 4, 4, 4), hidden_sizes=()),
    ],
)
def test_output_shape_is_batch_by_classes(config):
    model = build_model(config, SPEC)
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    assert model(images).shape == (5, 10)


def test_tutorial_mlp_has_the_tutorial_parameter_count():
    model = build_model(model_config(name="mlp", hidden_sizes=(128, 256), dropout=0.0), SPEC)
    expected = (784 * 128 + 128) + (128 * 256 + 256) + (256 * 10 + 10)
    assert count_parameters(model) == expected
    assert not has_dropout(model)


def test_dropout_sits_after_each_hidden_layer():
    model = build_model(model_config(name="mlp", hidden_sizes=(16, 8), dropout=0.3), SPEC)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert [d.p for d in dropouts] == [0.3, 0.3]
    assert has_dropout(model)


def test_input_is_standardized_with_the_train_statistics():
    model = build_model(model_config(name="mlp"), SPEC)
    norm = model[0]
    pixels = torch.tensor([[0, 255]], dtype=torch.uint8)
    expected = (pixels.float() / 255 - SPEC.pixel_mean) / SPEC.pixel_std
    torch.testing.assert_close(norm(pixels), expected)
    unit = build_model(model_config(name="mlp", input_norm="unit"), SPEC)[0]
    torch.testing.assert_close(unit(pixels), pixels.float() / 255)


def test_float_input_is_not_modified_in_place():
    norm = build_model(model_config(name="mlp"), SPEC)[0]
    pixels = torch.tensor([[10.0, 20.0]])
    norm(pixels)
    assert pixels.tolist() == [[10.0, 20.0]]


def test_cnn_blocks_pool_first_and_extra_convs_keep_the_size():
    spec = InputSpec((28, 28), 10, 0.5, 0.25)
    config = model_config(name="cnn", conv_channels=(8, 16), block_convs=2, hidden_sizes=())
    model = build_model(config, spec)
    kinds = [type(m).__name__ for m in model]
    block = ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU"]
    assert kinds == ["InputNorm", "Unflatten", *block, *block, "Flatten", "Linear"]
    assert model[-1].in_features == 16 * 7 * 7
    assert model(torch.zeros(2, 28, 28, dtype=torch.uint8)).shape == (2, 10)
