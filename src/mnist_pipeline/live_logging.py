"""Per-epoch logging of the train stage: dvclive files and a printed line, on rank 0."""

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from .distributed import Rank
from .fileio import atomic_dir


@contextlib.contextmanager
def epoch_logger(live_dir: Path, rank: Rank) -> Iterator[Callable[..., None]]:
    """A `fit` callback that logs each epoch to dvclive in `live_dir` and prints it, on
    rank 0; a no-op on other ranks. `callback.summary(**values)` adds to the summary.
    The directory appears only when the block succeeds (no half-written logs)."""
    if not rank.is_main:
        no_op = lambda log: None  # noqa: E731
        no_op.summary = lambda **values: None
        yield no_op
        return
    from dvclive import Live  # only rank 0 needs it

    with atomic_dir(live_dir) as tmp_dir, \
            Live(str(tmp_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:  # fmt: skip

        def log_epoch(log: dict[str, float]) -> None:
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

        log_epoch.summary = lambda **values: live.summary.update(values)
        yield log_epoch
