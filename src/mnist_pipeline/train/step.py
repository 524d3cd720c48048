"""The training step: one interface, two implementations, chosen in one place.

A `Step` takes one mini-batch (this process's share of a global batch), leaves in the
`.grad` of each tensor in `step.params` the gradient of the mean loss over the global
batch, adds the batch's summed loss to a running total on the device (no host sync per
step), and returns the logits. The fit loop then calls the optimizer (built over
`step.params`) and the scheduler; it never knows which step it has:

- `AutogradStep`: forward under autocast, cross-entropy, backward; through DDP with
  several processes and through torch.compile when asked. Works for every model.
- `ManualMLPStep` (manual_mlp_step.py): `build_model`'s MLP with hand-written
  gradients: the same maths with less per-step overhead, on CPU in fp32 only.

`make_step` is the one place that picks.
"""

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mnist_pipeline.config.params import TrainConfig
from mnist_pipeline.runtime import autocast, compiled
from mnist_pipeline.train.distributed import Rank
from mnist_pipeline.train.manual_mlp_step import ManualMLPStep, supports_manual_step


class Step(Protocol):
    module: nn.Module  # what `.train()` puts in training mode before an epoch
    params: list[torch.Tensor]  # what the optimizer updates; the step fills their .grad

    def __call__(
        self,
        images_u8: torch.Tensor,
        labels: torch.Tensor,
        global_rows: int,
        loss_total: torch.Tensor,
    ) -> torch.Tensor:
        """Gradients of the mean loss over the `global_rows` rows of the global batch for
        (images (B, H, W) uint8, labels (B,) int64); adds the summed loss of these B rows
        to the 0-dim `loss_total` in place; returns the logits (B, C), detached."""
        ...


class AutogradStep:
    """Forward, cross-entropy and backward through autograd, for any model and device."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, rank: Rank) -> None:
        self.params: list[torch.Tensor] = list(model.parameters())
        self.module = _wrap(model, cfg.compile, rank)
        self.precision = cfg.precision
        self.label_smoothing = cfg.label_smoothing
        self.world_size = rank.world_size

    def __call__(
        self,
        images_u8: torch.Tensor,
        labels: torch.Tensor,
        global_rows: int,
        loss_total: torch.Tensor,
    ) -> torch.Tensor:
        with autocast(labels.device, self.precision):
            logits = self.module(images_u8)
        loss_sum = F.cross_entropy(
            logits.float(), labels, label_smoothing=self.label_smoothing, reduction="sum"
        )
        for param in self.params:  # what optimizer.zero_grad(set_to_none=True) does
            param.grad = None
        # DDP divides the summed gradients by the world size: this scale makes them those
        # of the mean loss over the global batch (the plain mean for one process).
        (loss_sum * (self.world_size / global_rows)).backward()
        loss_total += loss_sum.detach()
        return logits.detach()


class ManualStep:
    """`ManualMLPStep` behind the `Step` interface (one process: B == global_rows)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        self.module = model
        self.manual = ManualMLPStep(model, cfg.label_smoothing)
        # One flat tensor holds every parameter: one tensor for the optimizer to update.
        self.params: list[torch.Tensor] = [self.manual.flat_param]

    def __call__(
        self,
        images_u8: torch.Tensor,
        labels: torch.Tensor,
        global_rows: int,
        loss_total: torch.Tensor,
    ) -> torch.Tensor:
        mean_loss, logits = self.manual.mean_loss_and_grads(images_u8, labels)
        loss_total.add_(mean_loss, alpha=len(labels))
        return logits


def make_step(model: nn.Module, cfg: TrainConfig, rank: Rank) -> Step:
    """The hand-written MLP step where it computes exactly autograd's maths (build_model's
    MLP, fp32, CPU, one process, no torch.compile) and `train.manual_mlp_step` allows it;
    the autograd step everywhere else."""
    if uses_manual_step(model, cfg, rank):
        return ManualStep(model, cfg)
    return AutogradStep(model, cfg, rank)


def uses_manual_step(model: nn.Module, cfg: TrainConfig, rank: Rank) -> bool:
    eligible = cfg.precision == "fp32" and not cfg.compile and not rank.distributed
    return cfg.manual_mlp_step and eligible and supports_manual_step(model)


def eval_module(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """The module that validation runs: never DDP (its batches differ per rank, and DDP's
    buffer broadcast would wait for ranks that have no batch left), compiled if asked."""
    return compiled(model) if cfg.compile else model


def _wrap(model: nn.Module, compile_model: bool, rank: Rank) -> nn.Module:
    """The module to train with: through DDP with several ranks, compiled if asked."""
    device = next(model.parameters()).device
    step_model = model
    if rank.distributed:
        step_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return compiled(step_model) if compile_model else step_model
