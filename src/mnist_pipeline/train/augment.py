"""Training-time augmentation: random shifts and mirror flips of whole uint8 batches.

Each epoch draws one (dy, dx, flip) per row of the epoch's order from a generator seeded
by (seed, epoch), so a resumed run draws the same as an uninterrupted one and every rank
of a distributed run sees the same draws for the same global rows. Applying them is one
`gather` per batch on the data's device: no per-image Python work.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mnist_pipeline.config.params import AugmentConfig
from mnist_pipeline.data.registry import resolve_hflip


@dataclass(frozen=True)
class Augment:
    shift_px: int  # largest translation each way, in pixels
    hflip: bool  # mirror half the images left-right

    @property
    def active(self) -> bool:
        return self.shift_px > 0 or self.hflip

    def draw(self, rows: int, seed: int, epoch: int) -> torch.Tensor:
        """(rows, 3) int64 on the CPU: dy and dx in [-shift_px, shift_px], flip 0 or 1."""
        # SeedSequence mixes (seed, epoch) into one well-spread seed: nearby seeds and
        # epochs give unrelated draws.
        mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])
        generator = torch.Generator().manual_seed(mixed)
        shifts = torch.randint(-self.shift_px, self.shift_px + 1, (rows, 2), generator=generator)
        flips = torch.randint(0, 2, (rows, 1), generator=generator)
        return torch.cat([shifts, flips if self.hflip else torch.zeros_like(flips)], dim=1)

    def apply(self, images_u8: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Images (B, H, W) moved by (dy, dx) with zero fill, mirrored where flip is 1."""
        batch, height, width = images_u8.shape
        pad = self.shift_px
        padded = F.pad(images_u8, (pad, pad, pad, pad))  # (B, H + 2 pad, W + 2 pad)
        draws = draws.to(images_u8.device)
        dy, dx, flip = (draws[:, i : i + 1] for i in range(3))  # each (B, 1)
        steps_y = torch.arange(height, device=images_u8.device)
        steps_x = torch.arange(width, device=images_u8.device)
        # Output pixel (y, x) shows pixel (y - dy, x - dx) of the (mirrored) image: of the
        # original, column x - dx, or width - 1 - (x - dx) when mirrored; + pad in `padded`.
        src_y = steps_y - dy + pad  # (B, H)
        moved_x = steps_x - dx  # (B, W)
        src_x = torch.where(flip.bool(), width - 1 - moved_x, moved_x) + pad
        index = src_y[:, :, None] * padded.shape[2] + src_x[:, None, :]  # (B, H, W)
        return padded.flatten(1).gather(1, index.flatten(1)).view(batch, height, width)


@dataclass(frozen=True)
class EpochAugment:
    """One epoch's augmentation: `draws` row i goes with row i of the epoch's order."""

    augment: Augment
    draws: torch.Tensor  # (rows, 3), see `Augment.draw`


def for_epoch(augment: Augment | None, rows: int, seed: int, epoch: int) -> EpochAugment | None:
    """The draws of `epoch`; None when there is nothing to augment."""
    if augment is None or not augment.active:
        return None
    return EpochAugment(augment, augment.draw(rows, seed, epoch))


def make_augment(config: AugmentConfig, dataset: str) -> Augment:
    """The augmentation `config` asks for on `dataset` (its `hflip: auto` resolved)."""
    hflip = resolve_hflip(config.hflip, dataset, "train.augment.hflip")
    return Augment(config.shift_px, hflip)
