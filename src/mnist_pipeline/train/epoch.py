"""One epoch: a seeded pass over the training data, and the loss over a split.

The data arrives as whole uint8 tensors already on the device; each epoch
draws one seeded permutation and each mini-batch gathers its rows with one
`index_select`, which avoids the per-sample Python work of
`DataLoader(TensorDataset(...))`. The loop never synchronizes with the device
inside an epoch (losses accumulate on the device and are read once at its end).

With several processes (see distributed.py) every rank draws the same
permutation and trains its slice of each global batch; DDP averages the
gradients, and each rank's loss is scaled so that the average is the mean over
the whole global batch: the same step as one process with that batch.
"""

import itertools

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mnist_pipeline.config.params import TrainConfig
from mnist_pipeline.runtime import autocast
from mnist_pipeline.train.distributed import SINGLE_PROCESS, Rank, all_reduce_sum
from mnist_pipeline.train.manual_mlp_step import ManualMLPStep

EpochLog = dict[str, float]


def batch_starts(num_rows: int, batch_size: int, world_size: int = 1) -> range:
    """Start rows of the (global) mini-batches. A last batch of one row is dropped (batch
    norm cannot normalize a single sample, and one sample is noise anyway), and so is one
    with fewer rows than processes, which would leave a rank without data."""
    remainder = num_rows % batch_size
    too_small = 0 < remainder < max(2, world_size) and num_rows > remainder
    return range(0, num_rows - remainder if too_small else num_rows, batch_size)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    progress: tqdm | None = None,
    rank: Rank = SINGLE_PROCESS,
    manual_step: ManualMLPStep | None = None,
) -> EpochLog:
    """One pass over (images (N, H, W) uint8, labels (N,) int64) in a seeded random order;
    each rank trains its slice of every global batch of `cfg.batch_size` rows. With
    `manual_step` (one process only) its hand-written gradients replace autograd's."""
    model.train()
    order = torch.randperm(len(labels), generator=generator).to(labels.device)
    # Each batch gathers its own images: half the time of permuting all images at once,
    # which moves 40 MB through memory each epoch. Labels are small: permuted at once.
    labels = labels[order]
    loss_sum = torch.zeros((), device=labels.device)
    # Each step writes its predictions here (one op); rows this rank did not train keep
    # -1, which matches no label, so one comparison at the end counts the correct ones.
    predicted = torch.full_like(labels, -1)
    seen = 0
    # Views of every (global) batch, each made in one call: cheaper than slicing per step.
    # batch_starts may drop a last, too small batch.
    num_batches = len(batch_starts(len(labels), cfg.batch_size, rank.world_size))
    views = zip(*(t.split(cfg.batch_size) for t in (order, labels, predicted)), strict=True)
    for batch_order, y, batch_predicted in itertools.islice(views, num_batches):
        batch_rows = len(y)  # all ranks together
        if rank.distributed:  # this rank's share of the batch
            mine = rank.rows(batch_rows)
            batch_order, y, batch_predicted = batch_order[mine], y[mine], batch_predicted[mine]
        x = images.index_select(0, batch_order)
        if manual_step is not None:  # sets the grads of the mean loss (one process)
            mean_loss, logits = manual_step.step(x, y, cfg.label_smoothing)
            loss_sum.add_(mean_loss, alpha=len(y))
        else:
            # DDP divides the summed gradients by the world size: this scale makes them
            # those of the mean loss over the global batch (plain mean for one process).
            step_loss_sum, logits = _autograd_step(
                model, optimizer, x, y, cfg, grad_scale=rank.world_size / batch_rows
            )
            loss_sum += step_loss_sum
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        torch.argmax(logits, dim=1, out=batch_predicted)
        seen += len(y)
        if progress is not None:
            progress.update(1)
    correct = (predicted == labels).sum()
    return _mean_over_ranks(loss_sum, correct, seen, rank)


def _autograd_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                   y: torch.Tensor, cfg: TrainConfig, grad_scale: float):  # fmt: skip
    """Forward, then backward of the summed loss times `grad_scale`; returns the summed
    loss and the logits (both detached)."""
    with autocast(y.device, cfg.precision):
        logits = model(x)
    loss_sum = F.cross_entropy(
        logits.float(), y, label_smoothing=cfg.label_smoothing, reduction="sum"
    )
    optimizer.zero_grad(set_to_none=True)
    (loss_sum * grad_scale).backward()
    return loss_sum.detach(), logits.detach()


def _mean_over_ranks(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int,
                     rank: Rank) -> EpochLog:  # fmt: skip
    """Mean loss and accuracy over the rows of every rank (one device sync)."""
    totals = torch.stack([loss_sum.double(), correct.double(), loss_sum.new_tensor(seen).double()])
    loss_total, correct_total, rows = all_reduce_sum(totals, rank).tolist()
    return {"loss": loss_total / rows, "accuracy": correct_total / rows}


@torch.inference_mode()
def evaluate_loss(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    precision: str = "fp32",
    rank: Rank = SINGLE_PROCESS,
) -> EpochLog:
    """Mean cross-entropy (no label smoothing) and accuracy, in eval mode; each rank
    evaluates its share of the rows and the sums are reduced over the ranks."""
    model.eval()
    mine = rank.rows(len(labels))
    images, labels = images[mine], labels[mine]
    loss_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.int64, device=labels.device)
    for start in range(0, len(labels), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        with autocast(labels.device, precision):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(dim=1) == y).sum()
    return _mean_over_ranks(loss_sum, correct, len(labels), rank)
