"""The classifiers, built from `ModelConfig` plus what the data says (`InputSpec`).

Models take the stored uint8 images (N, 28, 28) directly and normalize inside
`forward`, so the data can stay compact on the device and evaluation needs
nothing but the checkpoint to reproduce the preprocessing.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mnist_pipeline.config.params import ModelConfig


@dataclass(frozen=True)
class InputSpec:
    """What the model must know about its input; taken from the prepare manifest."""

    image_shape: tuple[int, int]  # (height, width) in pixels
    num_classes: int
    pixel_mean: float  # of pixel/255 over the train split
    pixel_std: float


def input_spec_from_manifest(manifest: dict[str, Any]) -> InputSpec:
    """The model's input description from `data/prepared/manifest.json` (see data/prepared.py)."""
    height, width = manifest["image_shape"]
    return InputSpec(
        image_shape=(height, width),
        num_classes=len(manifest["class_names"]),
        pixel_mean=manifest["train_pixel_mean"],
        pixel_std=manifest["train_pixel_std"],
    )


class InputNorm(nn.Module):
    """uint8 pixels -> float32 (x/255 - mean) / std in one fused multiply-add."""

    shift_tensor: torch.Tensor

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std
        # A tensor so one `torch.add` does scale and shift; not persistent: the checkpoint
        # keeps mean and std in its input spec, and old state dicts still load.
        self.register_buffer("shift_tensor", torch.tensor(self.shift), persistent=False)

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        return self.normalize_(images_u8.to(torch.float32, copy=True))

    def normalize_(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalize float32 `pixels` (values 0..255) in place; returns them. The one
        formula for `forward` and manual_mlp_step's reused buffer, so both give the same floats."""
        return torch.add(self.shift_tensor, pixels, alpha=self.scale, out=pixels)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}, shift={self.shift:.6g}"


def build_model(config: ModelConfig, spec: InputSpec) -> nn.Module:
    """The model named by `config.name`, freshly initialized (seed torch beforehand)."""
    if config.input_norm == "standardize":
        norm = InputNorm(spec.pixel_mean, spec.pixel_std)
    else:
        norm = InputNorm(0.0, 1.0)
    if config.name == "mlp":
        return nn.Sequential(
            norm, nn.Flatten(), *_mlp_layers(config, math.prod(spec.image_shape), spec.num_classes)
        )
    if config.name == "cnn":
        # channels_last runs oneDNN's convolutions ~25% faster on CPU, and suits
        # tensor cores on CUDA; the numbers are the same either way.
        cnn = nn.Sequential(norm, *_cnn_layers(config, spec))
        # Module.to takes memory_format at run time; torch's type stubs omit it.
        return cnn.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    raise ValueError(f"unknown model {config.name!r}")  # ModelConfig already refuses it


def _mlp_layers(config: ModelConfig, in_features: int, num_classes: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    width = in_features
    for hidden in config.hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return layers


def _cnn_layers(config: ModelConfig, spec: InputSpec) -> list[nn.Module]:
    """Conv blocks, then an MLP head. A block is a 3x3 conv, 2x2 max pool, batch norm and
    ReLU, then `block_convs - 1` more 3x3 conv, batch norm, ReLU at the pooled size."""
    # (N, H, W) -> (N, 1, H, W): split dim 1 (H) into (1 channel, H).
    layers: list[nn.Module] = [nn.Unflatten(1, (1, spec.image_shape[0]))]
    channels, (height, width) = 1, spec.image_shape
    for out_channels in config.conv_channels:
        # Pooling before norm and activation: both then touch a quarter of the values
        # (the same maths as pooling last where the norm's scale is positive). At 28x28
        # this order halves the first block's time on CPU.
        layers += [_conv3x3(channels, out_channels), nn.MaxPool2d(2)]
        layers += [nn.BatchNorm2d(out_channels), nn.ReLU()]
        for _ in range(config.block_convs - 1):
            layers += [_conv3x3(out_channels, out_channels), nn.BatchNorm2d(out_channels)]
            layers.append(nn.ReLU())
        channels, height, width = out_channels, height // 2, width // 2
    layers.append(nn.Flatten())
    if config.dropout > 0:
        layers.append(nn.Dropout(config.dropout))
    layers += _mlp_layers(config, channels * height * width, spec.num_classes)
    return layers


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    # No bias: the batch norm that follows has its own shift.
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)


def has_dropout(model: nn.Module) -> bool:
    """Whether any dropout layer is active (p > 0): MC dropout needs one."""
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
