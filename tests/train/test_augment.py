"""Training augmentation (shifts, mirror flips) and the test-time flip: exact pixel
geometry against a slow reference, seeded draws, and the per-data-set mirror rule."""

import numpy as np
import pytest
import torch
from torch import nn

from mnist_pipeline.data.registry import resolve_hflip
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.evaluate.metrics import predict_logits
from mnist_pipeline.model.networks import InputSpec, build_model
from mnist_pipeline.testing.configs import augment_config, model_config, train_config
from mnist_pipeline.train.augment import Augment, for_epoch, make_augment
from mnist_pipeline.train.loop import fit


def _reference(image: np.ndarray, dy: int, dx: int, flip: int) -> np.ndarray:
    """Mirror (if flip), then move content down by dy and right by dx, zero fill."""
    source = image[:, ::-1] if flip else image
    height, width = source.shape
    out = np.zeros_like(source)
    for y in range(height):
        for x in range(width):
            sy, sx = y - dy, x - dx
            if 0 <= sy < height and 0 <= sx < width:
                out[y, x] = source[sy, sx]
    return out


def test_apply_matches_the_pixel_by_pixel_reference():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (300, 7, 9), dtype=torch.uint8, generator=generator)
    augment = Augment(shift_px=3, hflip=True)
    draws = augment.draw(len(images), seed=5, epoch=2)
    out = augment.apply(images, draws)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    for image, result, (dy, dx, flip) in zip(images, out, draws.tolist(), strict=True):
        assert np.array_equal(result.numpy(), _reference(image.numpy(), dy, dx, flip))
    # The draws cover every shift and both flip states, so the check above saw them all.
    assert set(draws[:, 0].tolist()) == set(draws[:, 1].tolist()) == set(range(-3, 4))
    assert set(draws[:, 2].tolist()) == {0, 1}


def test_no_shift_and_flip_only_mirrors():
    images = torch.arange(2 * 4 * 5, dtype=torch.uint8).view(2, 4, 5)
    draws = torch.tensor([[0, 0, 1], [0, 0, 0]])
    out = Augment(shift_px=0, hflip=True).apply(images, draws)
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])


def test_draws_are_seeded_per_seed_and_epoch_and_bounded():
    augment = Augment(shift_px=2, hflip=False)
    first = augment.draw(1000, seed=1, epoch=1)
    assert torch.equal(first, augment.draw(1000, seed=1, epoch=1))
    assert not torch.equal(first, augment.draw(1000, seed=1, epoch=2))
    assert not torch.equal(first, augment.draw(1000, seed=2, epoch=1))
    assert first[:, :2].abs().max() == 2 and not first[:, 2].any()  # no flips asked


def test_nothing_to_augment_draws_nothing():
    assert for_epoch(None, 10, 0, 1) is None
    assert for_epoch(Augment(0, False), 10, 0, 1) is None
    assert for_epoch(Augment(1, False), 10, 0, 1) is not None


def test_mnist_digits_are_never_mirrored():
    assert resolve_hflip("auto", "mnist", "k") is False
    assert resolve_hflip("auto", "fashion-mnist", "k") is True
    assert resolve_hflip(True, "fashion-mnist", "k") is True
    assert resolve_hflip(False, "fashion-mnist", "k") is False
    with pytest.raises(PipelineError, match=r"train\.augment\.hflip: mnist images must never"):
        make_augment(augment_config(shift_px=1, hflip=True), "mnist")
    assert make_augment(augment_config(shift_px=1, hflip="auto"), "mnist") == Augment(1, False)


def test_test_time_flip_averages_the_two_probabilities():
    spec = InputSpec((6, 6), 3, 0.5, 0.25)
    torch.manual_seed(0)
    model = build_model(model_config(name="mlp", hidden_sizes=(8,)), spec).eval()
    images = torch.randint(0, 256, (10, 6, 6), dtype=torch.uint8)
    combined = predict_logits(model, images, batch_size=4, hflip=True)
    expected = (model(images).softmax(1) + model(images.flip(-1)).softmax(1)) / 2
    torch.testing.assert_close(combined.softmax(1), expected.detach())
    assert not torch.allclose(combined.softmax(1), model(images).softmax(1).detach())


def _fit(augment: Augment | None, seed: int = 0) -> nn.Module:
    spec = InputSpec((8, 8), 3, 0.5, 0.25)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 3, (96,), generator=generator)
    torch.manual_seed(seed)
    config = model_config(name="cnn", conv_channels=(4, 8), block_convs=2, hidden_sizes=())
    model = build_model(config, spec)
    # bf16 as the CNN presets train: oneDNN's bf16 kernels must be deterministic too.
    cfg = train_config(device="cpu", epochs=2, batch_size=32, lr=0.01, precision="bf16")
    fit(model, (images, labels), (images[:32], labels[:32]), cfg, seed, augment=augment)
    return model


def test_augmented_training_is_bit_identical_on_reruns_and_differs_from_plain():
    augment = Augment(shift_px=2, hflip=True)
    first, again, plain = _fit(augment), _fit(augment), _fit(None)
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert any(
        not torch.equal(a, c)
        for a, c in zip(first.state_dict().values(), plain.state_dict().values(), strict=True)
        if a.is_floating_point()
    )
