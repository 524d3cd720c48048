"""Training a model: `fit` runs the epochs (epoch.py), validates after each, keeps the
history dvclive logs, stops early if asked, and picks the step: the hand-written MLP
step (mlp_step.py) where it applies, else autograd, through DDP with several ranks.
"""

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mnist_pipeline.config.params import TrainConfig
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.train.distributed import SINGLE_PROCESS, Rank
from mnist_pipeline.train.epoch import EpochLog, batch_starts, evaluate_loss, train_one_epoch
from mnist_pipeline.train.manual_mlp_step import ManualMLPStep, supports_manual_step
from mnist_pipeline.train.optim import make_optimizer, make_scheduler


@dataclass
class FitResult:
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0  # 1-based epoch whose weights the model holds at the end
    stopped_early: bool = False


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    valid: tuple[torch.Tensor, torch.Tensor],
    cfg: TrainConfig,
    seed: int,
    log_epoch: Callable[[EpochLog], None] = lambda log: None,
    rank: Rank = SINGLE_PROCESS,
) -> FitResult:
    """Train `model` in place; returns the per-epoch history. The data (uint8 images,
    int64 labels) moves to the model's device once, here, and stays there. With
    several ranks, every rank calls `fit` with the whole data and its `rank`.

    With early stopping, training ends after `early_stopping_patience` epochs
    without a lower validation loss and the model gets the best epoch's weights.
    """
    device = next(model.parameters()).device
    train, valid = [tuple(t.to(device) for t in split) for split in (train, valid)]
    step_model, eval_model = _wrap(model, cfg.compile, rank)
    manual_step = ManualMLPStep(model) if uses_manual_step(model, cfg, rank) else None
    steps_per_epoch = len(batch_starts(len(train[1]), cfg.batch_size, rank.world_size))
    # The manual step keeps all parameters in one flat tensor: one for the optimizer.
    params = [manual_step.flat_param] if manual_step is not None else model.parameters()
    optimizer = make_optimizer(params, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)  # data order only, apart from init/dropout
    result, best_loss, best_state = FitResult(), math.inf, None
    for epoch in range(1, cfg.epochs + 1):
        started_s = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        with tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
                  leave=False, disable=None if rank.is_main else True) as progress:  # fmt: skip
            train_log = train_one_epoch(step_model, optimizer, scheduler, *train, cfg,
                                        generator, progress, rank, manual_step)  # fmt: skip
        eval_batch = max(cfg.batch_size, 1024)
        valid_log = evaluate_loss(eval_model, *valid, eval_batch, cfg.precision, rank)
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


def uses_manual_step(model: nn.Module, cfg: TrainConfig, rank: Rank) -> bool:
    """Whether `fit` trains with mlp_step's hand-written gradients instead of autograd:
    only where they compute exactly autograd's maths (build_model's MLP, fp32, CPU, one
    process, no torch.compile) and `train.manual_mlp_step` allows it."""
    eligible = cfg.precision == "fp32" and not cfg.compile and not rank.distributed
    return cfg.manual_mlp_step and eligible and supports_manual_step(model)


def _wrap(model: nn.Module, compile_model: bool, rank: Rank) -> tuple[nn.Module, nn.Module]:
    """The modules to train and to evaluate with. Training goes through DDP when there
    are several ranks; evaluation never does (its batches differ per rank, and DDP's
    buffer broadcast would wait for ranks that have no batch left)."""
    device = next(model.parameters()).device
    step_model = model
    if rank.distributed:
        step_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if compile_model:
        return torch.compile(step_model), torch.compile(model)
    return step_model, model


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
