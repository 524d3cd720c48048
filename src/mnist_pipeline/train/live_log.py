"""Per-epoch logging of the train stage: dvclive files and a printed line, on rank 0."""

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_pipeline.fileio import atomic_dir
from mnist_pipeline.train.distributed import Rank

if TYPE_CHECKING:  # imported at run time on rank 0 only
    from dvclive.live import Live


class EpochLogger:
    """`fit`'s `log_epoch` callback: each epoch's numbers to a dvclive `Live` and one
    printed line; without a `Live` (ranks other than 0) it does nothing."""

    def __init__(self, live: "Live | None" = None) -> None:
        self._live = live

    def __call__(self, log: dict[str, float]) -> None:
        if self._live is None:
            return
        for name, value in log.items():
            if name != "epoch":
                self._live.log_metric(name, value)
        self._live.next_step()
        print(
            f"epoch {log['epoch']:>3}: train loss {log['train/loss']:.4f} "
            f"acc {log['train/accuracy']:.4f} | valid loss {log['valid/loss']:.4f} "
            f"acc {log['valid/accuracy']:.4f} | lr {log['lr']:.3g} | "
            f"{log['epoch_seconds']:.2f} s",
            flush=True,
        )

    def summary(self, **values: float) -> None:
        """Add to dvclive's summary (metrics.json)."""
        if self._live is not None:
            self._live.summary.update(values)


@contextlib.contextmanager
def epoch_logger(live_dir: Path, rank: Rank) -> Iterator[EpochLogger]:
    """An `EpochLogger` writing to dvclive in `live_dir` on rank 0, a silent one elsewhere.
    The directory appears only when the block succeeds (no half-written logs)."""
    if not rank.is_main:
        yield EpochLogger()
        return
    from dvclive.live import Live  # only rank 0 needs it

    with (
        atomic_dir(live_dir) as tmp_dir,
        Live(str(tmp_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live,
    ):
        yield EpochLogger(live)
