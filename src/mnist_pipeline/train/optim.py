"""Optimizers and learning-rate schedules, as `train` params name them."""

import warnings
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


MAX_LR_POINTS = 500  # enough for the schedule's shape; a long run logs every k-th step


def lr_per_step(
    cfg: TrainConfig, steps_per_epoch: int, epochs_run: int
) -> list[tuple[float, float]]:
    """(epoch, lr) of the optimizer steps of `epochs_run` epochs, every k-th step so that
    at most MAX_LR_POINTS remain; epoch = steps done / steps_per_epoch, so epoch k ends at
    x = k, where the per-epoch curves put it.

    Replays the schedule on a fresh optimizer over one dummy parameter: training itself
    logs only each epoch's first lr, and its loop stays untouched. The scheduler depends
    only on the step count, so this is the lr every step used."""
    dummy = torch.zeros(1, requires_grad=True)
    optimizer = make_optimizer([dummy], cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    # The schedule never looks at the parameter, so the optimizer never steps (a step
    # costs more than the whole replay); torch warns once about that order, needlessly.
    warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
    total = epochs_run * steps_per_epoch
    every = max(1, -(-total // MAX_LR_POINTS))
    points = []
    for step in range(total):
        if step % every == 0 or step == total - 1:
            points.append((step / steps_per_epoch, optimizer.param_groups[0]["lr"]))
        if scheduler is not None:
            scheduler.step()
    return points
