"""Optimizers and learning-rate schedules, as `train` params name them."""

from collections.abc import Iterable

import torch

from mnist_pipeline.config.params import TrainConfig

Scheduler = torch.optim.lr_scheduler.LRScheduler


def make_optimizer(params: Iterable[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg` names over `params` (one device)."""
    params = list(params)
    # The fused kernels update all tensors in one call: a third of Adam's step time of
    # the per-tensor loop on this MLP, half of SGD's with momentum. They exist for CPU
    # and CUDA (the same maths elsewhere).
    fused = params[0].device.type in ("cpu", "cuda")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
            fused=fused,
        )
    optimizer_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return optimizer_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> Scheduler | None:
    """A per-step schedule (None for constant) over epochs * steps_per_epoch steps."""
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=cfg.warmup_fraction
        )
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if cfg.schedule == "step":
        step_size = cfg.step_epochs * steps_per_epoch
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=cfg.gamma)
    return None
