"""The train stage's log: one printed line per epoch, and at the end the files DVC reads.

Files (in the log directory, written by rank 0 only; the timings go elsewhere, see
`write_timings`):
    metrics.json       results only, each once (`dvc metrics diff`): the last epoch's
                       train loss and accuracy, the epoch whose weights were saved, the
                       epoch with the lowest validation loss, the epochs run. The
                       validation numbers live in evaluate.json; timings and the learning
                       rate are not results.
    plots/loss.tsv     epoch, train, valid: one row per epoch (epochs count from 1)
    plots/accuracy.tsv epoch, train, valid
    plots/lr.tsv       epoch, lr: the learning rate of every optimizer step (every k-th on
                       long runs), at epoch = steps done / steps per epoch
"""

import csv
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from mnist_pipeline.config.params import TrainConfig
from mnist_pipeline.fileio import atomic_file, write_json
from mnist_pipeline.train.distributed import Rank
from mnist_pipeline.train.loop import EpochLog, batch_starts
from mnist_pipeline.train.optim import lr_per_step


def print_epoch(log: EpochLog) -> None:
    print(
        f"epoch {log['epoch']:>3.0f}: train loss {log['train/loss']:.4f} "
        f"acc {log['train/accuracy']:.4f} | valid loss {log['valid/loss']:.4f} "
        f"acc {log['valid/accuracy']:.4f} | lr {log['lr']:.3g} | "
        f"{log['epoch_seconds']:.2f} s",
        flush=True,
    )


def epoch_printer(rank: Rank) -> Callable[[EpochLog], None]:
    """`fit`'s `log_epoch` callback: rank 0 prints each epoch, the other ranks stay silent."""
    return print_epoch if rank.is_main else lambda log: None


def summary_metrics(
    history: Sequence[EpochLog], saved_epoch: int, best_epoch: int
) -> dict[str, object]:
    """metrics.json: the results of training that evaluate.json does not hold."""
    last = history[-1]
    return {
        "train": {"loss": last["train/loss"], "accuracy": last["train/accuracy"]},
        "saved_epoch": saved_epoch,
        "lowest_valid_loss_epoch": best_epoch,
        "epochs_run": len(history),
    }


def saved_summary(history: Sequence[EpochLog], saved_epoch: int, best_epoch: int) -> str:
    """What the checkpoint holds, in words: which epoch's weights, and how that epoch's
    validation loss compares with the lowest one."""
    saved_loss = history[saved_epoch - 1]["valid/loss"]
    best_loss = history[best_epoch - 1]["valid/loss"]
    which = "the last" if saved_epoch == len(history) else "the lowest valid loss"
    text = f"the weights after epoch {saved_epoch} ({which}; valid loss {saved_loss:.4f})"
    if best_epoch != saved_epoch:
        text += f"; the lowest valid loss was {best_loss:.4f}, after epoch {best_epoch}"
    return text


def timings(history: Sequence[EpochLog], train_seconds: float) -> dict[str, object]:
    """How long training took: it changes every run and says nothing about the model, so it
    is neither a metric nor a DVC output (a rerun of identical work leaves git clean)."""
    return {
        "train_seconds": round(train_seconds, 3),
        "epoch_seconds": [round(log["epoch_seconds"], 3) for log in history],
    }


def curve_rows(history: Sequence[EpochLog], name: str) -> list[tuple[int, float, float]]:
    """(epoch, train, valid) of metric `name` ("loss" or "accuracy") per epoch."""
    return [(int(log["epoch"]), log[f"train/{name}"], log[f"valid/{name}"]) for log in history]


def learning_rates(
    cfg: TrainConfig, train_rows: int, world_size: int, epochs_run: int
) -> list[tuple[float, float]]:
    """(epoch, lr) per optimizer step of the run, as `fit` stepped its schedule."""
    steps_per_epoch = len(batch_starts(train_rows, cfg.batch_size, world_size))
    return lr_per_step(cfg, steps_per_epoch, epochs_run)


def write_training_log(
    log_dir: Path,
    history: Sequence[EpochLog],
    saved_epoch: int,
    best_epoch: int,
    lr_points: Sequence[tuple[float, float]],
) -> None:
    """Every file of the module docstring into log_dir (the stage makes it atomic)."""
    write_json(log_dir / "metrics.json", summary_metrics(history, saved_epoch, best_epoch))
    plots = log_dir / "plots"
    for name in ("loss", "accuracy"):
        write_tsv(plots / f"{name}.tsv", ["epoch", "train", "valid"], curve_rows(history, name))
    # Six significant digits: a curve to look at, not a value to recompute from (it keeps
    # a result commit small).
    lr_rows = [(round(epoch, 4), float(f"{lr:.6g}")) for epoch, lr in lr_points]
    write_tsv(plots / "lr.tsv", ["epoch", "lr"], lr_rows)


def write_timings(path: Path, history: Sequence[EpochLog], train_seconds: float) -> None:
    """The run's timings (`timings`) as JSON at `path`, an untracked log of the workspace's
    last run: benchmarks and users read it, DVC and git never see it."""
    write_json(path, timings(history, train_seconds))


def write_tsv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
