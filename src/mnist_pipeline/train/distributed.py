"""Data-parallel training over several processes with torchrun and DDP.

With `distributed.nproc_per_node * nnodes > 1` the train script re-runs itself
under PyTorch's own launcher (`torch.distributed.run`, i.e. torchrun:
`--standalone` on one machine, the c10d rendezvous across machines). Each
worker reads its rank from the environment torchrun sets, joins the process
group (gloo on CPU, nccl on CUDA with one GPU per process) and trains its
slice of every global batch; DDP averages the gradients.

A failing worker ends the run: torchrun stops the others and `launch` turns the
failure into one line naming the rank and its error, which each worker leaves
in the error file torchrun gives it (worker_errors.py).

Workers never outlive the launcher (torchrun starts them in sessions of their own,
so a killed launcher would otherwise leave them training, and writing outputs, on
their own): each asks Linux for SIGKILL when its parent dies (`die_with_launcher`),
and rank 0 checks that the launcher is still there before writing anything
(`check_launcher_alive`), which also covers other systems.
"""

import contextlib
import ctypes
import datetime
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import NoReturn

import torch
import torch.distributed as dist

from mnist_pipeline.cli import Terminated
from mnist_pipeline.config.params import DistributedConfig, usable_cpus
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.train import worker_errors

LAUNCHER_PID_ENV = "MNIST_PIPELINE_LAUNCHER_PID"  # set by `launch` for its workers
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class Rank:
    """Where this process sits in the run; the defaults describe a single process."""

    rank: int = 0  # global index of this process
    local_rank: int = 0  # index on this machine (picks the GPU)
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints progress and writes outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def rows(self, num_rows: int) -> slice:
        """This rank's contiguous share of `num_rows` rows (shares differ by at most one)."""
        return slice(
            self.rank * num_rows // self.world_size, (self.rank + 1) * num_rows // self.world_size
        )


SINGLE_PROCESS = Rank()


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def needs_launch(cfg: DistributedConfig) -> bool:
    """Whether this process must start the workers (rather than be one)."""
    return cfg.world_size > 1 and not under_torchrun()


def torchrun_args(cfg: DistributedConfig, script_argv: Sequence[str]) -> list[str]:
    """Command-line arguments of torchrun (`torch.distributed.run`) for this config."""
    args = [
        f"--nproc-per-node={cfg.nproc_per_node}",
        f"--nnodes={cfg.nnodes}",
        "--max-restarts=0",  # a failed rank ends the run (a restart would repeat the error)
        "--monitor-interval=0.1",  # how soon the other ranks are stopped after a failure
    ]
    if cfg.nnodes == 1:
        args.append("--standalone")
    else:
        args += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={cfg.rdzv_endpoint}",
            f"--rdzv-id={cfg.rdzv_id}",
            f"--rdzv-conf=join_timeout={int(cfg.timeout_s)}",
        ]
    return [*args, *script_argv]


def launch(
    cfg: DistributedConfig, threads: int, script_argv: Sequence[str], device: torch.device
) -> None:
    """Run `script_argv` (this script and its arguments) on every rank; wait for all.
    `device` is the one train.device resolves to here."""
    cores = usable_cpus()
    if device.type == "cpu" and cfg.nproc_per_node > cores:
        raise PipelineError(
            f"distributed.nproc_per_node: {cfg.nproc_per_node} processes > the {cores} CPU "
            "cores here (training on cpu)"
        )
    args = torchrun_args(cfg, script_argv)
    print(f"torchrun {' '.join(args)}", flush=True)
    # The workers inherit it. torchrun's own default for several processes is 1 thread
    # each (with a warning banner); train.threads says otherwise when set.
    os.environ["OMP_NUM_THREADS"] = str(threads or 1)
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())  # the workers' parent: see die_with_launcher
    # Each worker's error file goes to a log directory, which torchrun would otherwise
    # create in /tmp and never remove.
    with tempfile.TemporaryDirectory(prefix="torchrun-logs-") as log_dir:
        _run_torchrun([f"--log-dir={log_dir}", *args], cfg.world_size)


def _run_torchrun(args: list[str], world_size: int) -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(args))
    except SignalException as exc:  # torchrun's own handler, once it has stopped the workers
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise Terminated from None
    except ChildFailedError as exc:
        rank, message = worker_errors.first_failure(exc.failures)
        raise PipelineError(f"rank {rank} of {world_size} failed: {message}") from None
    except Exception as exc:  # rendezvous errors: unreachable endpoint, timeout, ...
        text = " ".join(str(exc).split())
        raise PipelineError(f"torchrun could not start the workers: {text}") from exc


def die_with_launcher() -> None:
    """In a worker that `launch` started: be killed (SIGKILL) as soon as the launcher dies,
    whatever kills it; if it is gone already, stop now. Nothing outside torchrun."""
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if not under_torchrun() or launcher is None:
        return
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    check_launcher_alive()  # it may have died before prctl took effect


def check_launcher_alive() -> None:
    """Raise unless this worker's launcher is still its parent (a dead one's children are
    re-parented): called before writing outputs, so an orphan never writes any."""
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if under_torchrun() and launcher is not None and os.getppid() != int(launcher):
        raise PipelineError(f"the launcher (pid {launcher}) is gone; not writing any outputs")


def current_rank(cfg: DistributedConfig) -> Rank:
    """This process's rank from torchrun's environment; a single process outside it."""
    if not under_torchrun():
        return Rank()
    world_size = int(os.environ["WORLD_SIZE"])
    if world_size != cfg.world_size:
        raise PipelineError(
            f"torchrun started {world_size} processes, but distributed.nproc_per_node * "
            f"nnodes = {cfg.world_size}; set them to match (or let the stage start torchrun)"
        )
    return Rank(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), world_size)


def rank_device(device: torch.device, rank: Rank) -> torch.device:
    """The device this rank trains on: its own GPU (cuda:LOCAL_RANK) or the CPU."""
    if not rank.distributed or device.type == "cpu":
        return device
    if device.type != "cuda":
        raise PipelineError(
            f"train.device: {device.type} cannot train with several processes; use cpu or cuda"
        )
    if device.index not in (None, 0):
        raise PipelineError(
            f"train.device: {device} names one GPU, but each of the "
            f"{rank.world_size} processes takes its own; use cuda"
        )
    if rank.local_rank >= torch.cuda.device_count():
        raise PipelineError(
            f"distributed.nproc_per_node: process {rank.local_rank} has no GPU of its own "
            f"(this machine has {torch.cuda.device_count()})"
        )
    return torch.device("cuda", rank.local_rank)


@contextlib.contextmanager
def process_group(rank: Rank, device: torch.device, timeout_s: float) -> Iterator[None]:
    """Join the ranks (gloo on CPU, nccl on CUDA) for the block; nothing for one process."""
    if not rank.distributed:
        yield
        return
    # torchrun stops the other ranks with SIGTERM when one fails: unwind (removing
    # temporary outputs) instead of dying on the spot.
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=timeout, device_id=device)
    else:
        dist.init_process_group(backend, timeout=timeout)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise PipelineError("stopped by torchrun (SIGTERM), as another rank failed")


def seed_rank(seed: int, rank: Rank) -> None:
    """After the (identical) model init: a different dropout stream on every rank."""
    if rank.distributed:
        torch.manual_seed(seed + 1_000_003 * rank.rank)


def all_reduce_sum(values: torch.Tensor, rank: Rank) -> torch.Tensor:
    """`values` summed over the ranks (returned as is for one process)."""
    if rank.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
