"""The training loop: device and reproducibility setup, optimizers, schedules, fit.

The data arrives as whole uint8 tensors already on the device; each epoch
permutes them once with a seeded generator and slices mini-batches, which
avoids the per-sample Python work of `DataLoader(TensorDataset(...))`. The
loop never synchronizes with the device inside an epoch (losses accumulate
on the device and are read once at its end).
"""

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import TrainConfig
from .devices import autocast
from .errors import PipelineError

EpochLog = dict[str, float]


@dataclass
class FitResult:
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0  # 1-based epoch whose weights the model holds at the end
    stopped_early: bool = False


def dvclive_logger(live) -> Callable[[EpochLog], None]:
    """A `fit` callback that logs each epoch's numbers to a dvclive `Live` and prints them."""

    def log_epoch(log: EpochLog) -> None:
        for name, value in log.items():
            if name != "epoch":
                live.log_metric(name, value)
        live.next_step()
        print(
            f"epoch {log['epoch']:>3}: train loss {log['train/loss']:.4f} "
            f"acc {log['train/accuracy']:.4f} | valid loss {log['valid/loss']:.4f} "
            f"acc {log['valid/accuracy']:.4f} | lr {log['lr']:.3g} | "
            f"{log['epoch_seconds']:.2f} s",
            flush=True,
        )

    return log_epoch


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    optimizer_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    # The fused kernel updates all tensors in one call: a third of the step time of the
    # per-tensor loop on this MLP. It exists for CPU and CUDA (same maths elsewhere).
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return optimizer_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
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


def batch_starts(num_rows: int, batch_size: int) -> range:
    """Start rows of the mini-batches; a last batch of one row is dropped (batch norm
    cannot normalize a single sample, and one sample is noise anyway)."""
    usable_rows = num_rows - 1 if num_rows % batch_size == 1 and num_rows > 1 else num_rows
    return range(0, usable_rows, batch_size)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    progress: tqdm | None = None,
) -> EpochLog:
    """One pass over (images (N, H, W) uint8, labels (N,) int64) in a seeded random order."""
    model.train()
    order = torch.randperm(len(labels), generator=generator).to(labels.device)
    images, labels = images[order], labels[order]  # one gather per epoch; batches are views
    loss_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.int64, device=labels.device)
    seen = 0
    for start in batch_starts(len(labels), cfg.batch_size):
        x, y = images[start : start + cfg.batch_size], labels[start : start + cfg.batch_size]
        with autocast(labels.device, cfg.precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(dim=1) == y).sum()
        seen += len(y)
        if progress is not None:
            progress.update(1)
    return {"loss": loss_sum.item() / seen, "accuracy": correct.item() / seen}


@torch.inference_mode()
def evaluate_loss(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    precision: str = "fp32",
) -> EpochLog:
    """Mean cross-entropy (no label smoothing) and accuracy, in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.int64, device=labels.device)
    for start in range(0, len(labels), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        with autocast(labels.device, precision):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(dim=1) == y).sum()
    return {"loss": loss_sum.item() / len(labels), "accuracy": correct.item() / len(labels)}


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    valid: tuple[torch.Tensor, torch.Tensor],
    cfg: TrainConfig,
    seed: int,
    log_epoch: Callable[[EpochLog], None] = lambda log: None,
) -> FitResult:
    """Train `model` in place; returns the per-epoch history. The data (uint8 images,
    int64 labels) moves to the model's device once, here, and stays there.

    With early stopping, training ends after `early_stopping_patience` epochs
    without a lower validation loss and the model gets the best epoch's weights.
    """
    device = next(model.parameters()).device
    train, valid = [tuple(t.to(device) for t in split) for split in (train, valid)]
    step_model = torch.compile(model) if cfg.compile else model
    steps_per_epoch = len(batch_starts(len(train[1]), cfg.batch_size))
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)  # data order only, apart from init/dropout
    result, best_loss, best_state = FitResult(), math.inf, None
    for epoch in range(1, cfg.epochs + 1):
        started_s = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        with tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
                  leave=False, disable=None) as progress:  # fmt: skip
            train_log = train_one_epoch(
                step_model, optimizer, scheduler, *train, cfg, generator, progress
            )
        valid_log = evaluate_loss(step_model, *valid, max(cfg.batch_size, 1024), cfg.precision)
        log = _epoch_log(epoch, lr, time.perf_counter() - started_s, train_log, valid_log, cfg)
        result.history.append(log)
        log_epoch(log)
        if valid_log["loss"] < best_loss:
            best_loss, result.best_epoch = valid_log["loss"], epoch
            if cfg.early_stopping_patience:
                best_state = copy.deepcopy(model.state_dict())
        elif 0 < cfg.early_stopping_patience <= epoch - result.best_epoch:
            result.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_epoch = len(result.history)
    return result


def _epoch_log(epoch: int, lr: float, seconds: float, train_log: EpochLog,
               valid_log: EpochLog, cfg: TrainConfig) -> EpochLog:  # fmt: skip
    """One epoch's numbers under dvclive's names; a non-finite train loss is an error."""
    if not math.isfinite(train_log["loss"]):
        raise PipelineError(f"training diverged: train loss is {train_log['loss']} in epoch "
                            f"{epoch}; lower train.lr (now {cfg.lr})")  # fmt: skip
    return {
        "epoch": epoch,
        "lr": lr,
        "epoch_seconds": seconds,
        **{f"train/{k}": v for k, v in train_log.items()},
        **{f"valid/{k}": v for k, v in valid_log.items()},
    }
