"""The fit loop: epochs of seeded mini-batches, a validation pass after each, the history
that the training log keeps, early stopping. Which training step runs is `step.make_step`'s choice.

The data arrives as whole uint8 tensors and moves to the model's device once; each epoch
draws one seeded permutation and each mini-batch gathers its rows with one
`index_select`, which avoids the per-sample Python work of
`DataLoader(TensorDataset(...))`. The loop never synchronizes with the device inside an
epoch (losses accumulate on the device and are read once at its end).

With several processes (see distributed.py) every rank draws the same permutation and
trains its slice of each global batch; DDP averages the gradients, and the step scales
each rank's loss so that the average is the mean over the whole global batch: the same
step as one process with that batch.
"""

import copy
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mnist_pipeline.config.params import TrainConfig
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.runtime import autocast
from mnist_pipeline.train.augment import Augment, EpochAugment, for_epoch
from mnist_pipeline.train.distributed import SINGLE_PROCESS, Rank, all_reduce_sum
from mnist_pipeline.train.optim import Scheduler, make_optimizer, make_scheduler
from mnist_pipeline.train.resume import Expected, TrainState
from mnist_pipeline.train.step import Step, eval_module, make_step

EpochLog = dict[str, float]
Split = tuple[torch.Tensor, torch.Tensor]  # images uint8 (N, H, W), labels int64 (N,)
VALID_BATCH_MIN = 1024  # validation has no gradients to hold: larger batches are cheaper


@dataclass
class FitResult:
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0  # 1-based epoch with the lowest validation loss
    # 1-based epoch whose weights the model holds at the end: with early stopping on, the
    # best one (its weights are restored), otherwise the last.
    saved_epoch: int = 0
    stopped_early: bool = False


def fit(
    model: nn.Module,
    train: Split,
    valid: Split,
    cfg: TrainConfig,
    seed: int,
    log_epoch: Callable[[EpochLog], None] = lambda log: None,
    rank: Rank = SINGLE_PROCESS,
    resume: TrainState | None = None,
    save_state: Callable[[TrainState], None] | None = None,
    augment: Augment | None = None,
) -> FitResult:
    """Train `model` in place; returns the per-epoch history. With several ranks, every
    rank calls `fit` with the whole data and its `rank`.

    With early stopping, training ends after `early_stopping_patience` epochs without a
    lower validation loss, and the model gets the best epoch's weights (also when it ran
    every epoch); without, it keeps the last epoch's. `saved_epoch` says which.

    `save_state` receives the full state after every epoch that training continues
    from (see resume.py); `resume` continues from such a state (built from the same
    arguments), and the result is the very same as one uninterrupted call. Its logged
    epochs are not logged again.

    `augment` changes the training images of each epoch with draws from (seed, epoch).
    """
    device = next(model.parameters()).device
    train = (train[0].to(device), train[1].to(device))
    valid = (valid[0].to(device), valid[1].to(device))
    step = make_step(model, cfg, rank)
    validation_model = eval_module(model, cfg)
    steps_per_epoch = len(batch_starts(len(train[1]), cfg.batch_size, rank.world_size))
    optimizer = make_optimizer(step.params, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)  # data order only, apart from init/dropout
    result, best_loss, best_state = FitResult(), math.inf, None
    first_epoch = 1
    if resume is not None:
        _restore(resume, model, optimizer, scheduler, generator)
        first_epoch, result.history = resume.epoch + 1, list(resume.history)
        best_loss, result.best_epoch, best_state = (
            resume.best_loss,
            resume.best_epoch,
            resume.best_state,
        )
    for epoch in range(first_epoch, cfg.epochs + 1):
        started_s = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        with tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch}/{cfg.epochs}",
            unit="batch",
            leave=False,
            disable=None if rank.is_main else True,
        ) as progress:
            order = torch.randperm(len(train[1]), generator=generator)
            train_log = train_one_epoch(
                step,
                optimizer,
                scheduler,
                train,
                order,
                cfg.batch_size,
                rank,
                progress,
                for_epoch(augment, len(order), seed, epoch),
            )
        valid_batch = max(cfg.batch_size, VALID_BATCH_MIN)
        valid_log = evaluate_loss(validation_model, valid, valid_batch, cfg.precision, rank)
        log = _epoch_log(epoch, lr, time.perf_counter() - started_s, train_log, valid_log, cfg)
        result.history.append(log)
        if valid_log["loss"] < best_loss:
            best_loss, result.best_epoch = valid_log["loss"], epoch
            if cfg.early_stopping_patience:
                best_state = copy.deepcopy(model.state_dict())
        elif 0 < cfg.early_stopping_patience <= epoch - result.best_epoch:
            result.stopped_early = True
        if save_state is not None and not result.stopped_early:
            # Before the log line: an epoch that was printed is one that can be resumed.
            save_state(
                _capture(
                    epoch, model, optimizer, scheduler, generator, result, best_loss, best_state
                )
            )
        log_epoch(log)
        if result.stopped_early:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.saved_epoch = result.best_epoch if best_state is not None else len(result.history)
    return result


def _capture(
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler | None,
    generator: torch.Generator,
    result: FitResult,
    best_loss: float,
    best_state: dict[str, torch.Tensor] | None,
) -> TrainState:
    """Copies (on the CPU) of everything the next epochs depend on."""
    return TrainState(
        epoch=epoch,
        model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        optimizer=_to_cpu(optimizer.state_dict()),
        scheduler=None if scheduler is None else scheduler.state_dict(),
        torch_rng=torch.get_rng_state(),
        cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        data_order_rng=generator.get_state(),
        best_loss=best_loss,
        best_epoch=result.best_epoch,
        best_state=None if best_state is None else _to_cpu(best_state),
        history=list(result.history),
    )


def _restore(
    state: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler | None,
    generator: torch.Generator,
) -> None:
    # load_state_dict copies into the existing tensors: the hand-written step's flat
    # parameter, whose views the model's parameters are, stays the one it updates.
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    if scheduler is not None and state.scheduler is not None:
        scheduler.load_state_dict(state.scheduler)
    generator.set_state(state.data_order_rng)
    torch.set_rng_state(state.torch_rng)
    if state.cuda_rng:
        torch.cuda.set_rng_state_all(state.cuda_rng)


def _to_cpu(value: Any) -> Any:
    """A copy of nested dicts/lists with every tensor cloned to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


def state_expectation(
    model: nn.Module, cfg: TrainConfig, train_rows: int, world_size: int
) -> Expected:
    """What a state `fit` saves for this model, config and data holds: what a resumed
    state is checked against (resume.check_state)."""
    return Expected(
        model={k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()},
        epochs=cfg.epochs,
        steps_per_epoch=len(batch_starts(train_rows, cfg.batch_size, world_size)),
    )


def batch_starts(num_rows: int, batch_size: int, world_size: int = 1) -> range:
    """Start rows of the (global) mini-batches. A last batch of one row is dropped (batch
    norm cannot normalize a single sample, and one sample is noise anyway), and so is one
    with fewer rows than processes, which would leave a rank without data."""
    remainder = num_rows % batch_size
    too_small = 0 < remainder < max(2, world_size) and num_rows > remainder
    return range(0, num_rows - remainder if too_small else num_rows, batch_size)


def train_one_epoch(
    step: Step,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler | None,
    train: Split,
    order: torch.Tensor,
    batch_size: int,
    rank: Rank = SINGLE_PROCESS,
    progress: tqdm | None = None,
    augment: EpochAugment | None = None,
) -> EpochLog:
    """One pass over `train` in the row `order` (a permutation, on the CPU); each rank
    trains its slice of every global batch of `batch_size` rows, augmented by `augment`."""
    images, labels = train
    step.module.train()
    order = order.to(labels.device)
    # Each batch gathers its own images: half the time of permuting all images at once,
    # which moves 40 MB through memory each epoch. Labels are small: permuted at once.
    labels = labels[order]
    loss_total = torch.zeros((), device=labels.device)
    # Each step writes its predictions here (one op); rows this rank did not train keep
    # -1, which matches no label, so one comparison at the end counts the correct ones.
    predicted = torch.full_like(labels, -1)
    seen = 0
    # Views of every (global) batch, each made in one call: cheaper than slicing per step.
    # batch_starts may drop a last, too small batch.
    num_batches = len(batch_starts(len(labels), batch_size, rank.world_size))
    # Without augmentation, `order` stands in for the draws (never read).
    draws = order if augment is None else augment.draws.to(labels.device)
    views = zip(*(t.split(batch_size) for t in (order, labels, predicted, draws)), strict=True)
    for batch_order, y, batch_predicted, batch_draws in itertools.islice(views, num_batches):
        global_rows = len(y)
        if rank.distributed:  # this rank's share of the batch
            mine = rank.rows(global_rows)
            batch_order, y, batch_predicted = batch_order[mine], y[mine], batch_predicted[mine]
            batch_draws = batch_draws[mine]
        x = images.index_select(0, batch_order)
        if augment is not None:
            x = augment.augment.apply(x, batch_draws)
        logits = step(x, y, global_rows, loss_total)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        torch.argmax(logits, dim=1, out=batch_predicted)
        seen += len(y)
        if progress is not None:
            progress.update(1)
    correct = (predicted == labels).sum()
    return _mean_over_ranks(loss_total, correct, seen, rank)


@torch.inference_mode()
def evaluate_loss(
    model: nn.Module,
    split: Split,
    batch_size: int,
    precision: str = "fp32",
    rank: Rank = SINGLE_PROCESS,
) -> EpochLog:
    """Mean cross-entropy (no label smoothing) and accuracy, in eval mode; each rank
    evaluates its share of the rows and the sums are reduced over the ranks."""
    model.eval()
    mine = rank.rows(len(split[1]))
    images, labels = split[0][mine], split[1][mine]
    loss_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.int64, device=labels.device)
    for start in range(0, len(labels), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        with autocast(labels.device, precision):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(dim=1) == y).sum()
    return _mean_over_ranks(loss_sum, correct, len(labels), rank)


def _mean_over_ranks(
    loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, rank: Rank
) -> EpochLog:
    totals = torch.stack([loss_sum.double(), correct.double(), loss_sum.new_tensor(seen).double()])
    loss_total, correct_total, rows = all_reduce_sum(totals, rank).tolist()
    return {"loss": loss_total / rows, "accuracy": correct_total / rows}


def _epoch_log(
    epoch: int,
    lr: float,
    seconds: float,
    train_log: EpochLog,
    valid_log: EpochLog,
    cfg: TrainConfig,
) -> EpochLog:
    """One epoch's numbers under the training log's names; a non-finite train loss is an error."""
    if not math.isfinite(train_log["loss"]):
        raise PipelineError(
            f"training diverged: train loss is {train_log['loss']} in epoch {epoch}; "
            f"lower train.lr (now {cfg.lr})"
        )
    return {
        "epoch": epoch,
        "lr": lr,
        "epoch_seconds": seconds,
        **{f"train/{k}": v for k, v in train_log.items()},
        **{f"valid/{k}": v for k, v in valid_log.items()},
    }
