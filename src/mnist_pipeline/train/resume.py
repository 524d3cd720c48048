"""Training state saved at the end of every epoch, so a killed run resumes bit for bit.

`fit` hands a `TrainState` to its `save_state` hook after each epoch and accepts one as
`resume`: everything that decides the numbers of the epochs still to come.

    model, optimizer, scheduler   state dicts (the hand-written MLP step's optimizer
                                  runs over one flat tensor: its state maps to that)
    torch_rng, cuda_rng           the global generators (the dropout masks); with torchrun,
                                  every rank's own (`saver`)
    data_order_rng                `fit`'s own generator (the mini-batch permutations)
    best_loss, best_epoch,        early stopping
    best_state
    history                       the per-epoch logs so far (replayed into dvclive)

On disk (`write_state`) the state sits in one file beside a *key*: hashes of what the
run's numbers depend on (each params section the train stage reads, the prepared data's
manifest, which checksums every shard, the package's source code) and the runtime that
bit-exactness needs (torch version, device type, threads). A state is resumed only when every
part of the key matches (`read_state` names the parts that differ), so a state of other
params, data or code never leaks into a run. The file is written atomically: a kill
leaves the previous epoch's state or this one's, never half of one.

A state whose key matches is still checked before it is used (`check_state`): a file
whose size, archive or tensors are out of bounds (`model.archive`), or whose contents do
not fit this run (an epoch past the last, weights of other shapes, NaN values, a step
count that is not the epochs' steps) would make every later run fail, or crash, the same
way; it is removed, with one line saying why, and training starts fresh.
"""

import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import mnist_pipeline
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import atomic_file
from mnist_pipeline.model.archive import MAX_PICKLE_BYTES, check_archive, check_tensors
from mnist_pipeline.train.distributed import Rank

STATE_FILE = "state.pt"
TRAIN_SECTIONS = ("seed", "model", "train", "distributed")  # the train stage's params
FORMAT_VERSION = 1
EpochLog = dict[str, float]
# Random generators' states, and the per-epoch logs, beside the weights and optimizer.
STATE_SLACK_BYTES = 16_000_000


@dataclass
class TrainState:
    """What `fit` needs to continue after `epoch` exactly as if it had never stopped."""

    epoch: int  # 1-based: the last completed epoch
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor]
    data_order_rng: torch.Tensor
    best_loss: float
    best_epoch: int
    best_state: dict[str, torch.Tensor] | None
    history: list[EpochLog]


@dataclass(frozen=True)
class Expected:
    """What a state this run resumes must hold (see `check_state`)."""

    model: dict[str, tuple[tuple[int, ...], torch.dtype]]  # state dict: shapes and dtypes
    epochs: int
    steps_per_epoch: int

    def max_bytes(self) -> int:
        """The largest state file this run could write: the weights four times (model,
        best weights, two Adam moments), the object tree and the generators."""
        weights = sum(
            math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            for shape, dtype in self.model.values()
        )
        return 4 * weights + MAX_PICKLE_BYTES + STATE_SLACK_BYTES


def check_state(state: TrainState, expected: Expected) -> str | None:
    """What makes `state` unusable by this run, if anything (one phrase)."""
    epoch = state.epoch
    if not isinstance(epoch, int) or not 1 <= epoch <= expected.epochs:
        return f"epoch {epoch!r} is not in 1..{expected.epochs}"
    if not isinstance(state.history, list) or len(state.history) != epoch:
        return f"its history does not have {epoch} epochs"
    if not isinstance(state.best_epoch, int) or not 0 <= state.best_epoch <= epoch:
        return f"best_epoch {state.best_epoch!r} is not in 0..{epoch}"
    if not isinstance(state.best_loss, float) or math.isnan(state.best_loss):
        return f"best_loss {state.best_loss!r} is not a number"
    for name, weights in (("model", state.model), ("best_state", state.best_state)):
        if weights is None and name == "best_state":
            continue
        found = None
        if isinstance(weights, dict) and all(isinstance(v, torch.Tensor) for v in weights.values()):
            found = {k: (tuple(v.shape), v.dtype) for k, v in weights.items()}
        if found != expected.model:
            return f"its {name} weights are not this model's (names, shapes or dtypes differ)"
    steps_done = epoch * expected.steps_per_epoch
    problem = _optimizer_problem(state.optimizer, expected, steps_done)
    if problem:
        return problem
    if state.scheduler is not None and (
        not isinstance(state.scheduler, dict) or state.scheduler.get("last_epoch") != steps_done
    ):
        return f"its schedule is not at step {steps_done}"
    for name, rng, reference in (
        ("torch_rng", state.torch_rng, torch.get_rng_state()),
        ("data_order_rng", state.data_order_rng, torch.Generator().get_state()),
    ):
        same = isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8
        if not same or rng.shape != reference.shape:
            return f"{name} is not a generator state"
    return None


def _optimizer_problem(optimizer: Any, expected: Expected, steps_done: int) -> str | None:
    """Every optimizer tensor has a parameter's shape (or the hand-written MLP step's flat
    vector of all of them, or none), and every step count is the epochs' steps."""
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict):
        return "its optimizer state is not a state dict"
    shapes = {shape for shape, dtype in expected.model.values() if dtype.is_floating_point}
    shapes |= {(), (sum(math.prod(shape) for shape in shapes),)}
    for slot in optimizer["state"].values():
        if not isinstance(slot, dict):
            return "its optimizer state is not a state dict"
        for key, value in slot.items():
            if isinstance(value, torch.Tensor) and tuple(value.shape) not in shapes:
                return f"its optimizer's {key} has shape {list(value.shape)}, no parameter's"
            if key == "step" and float(value) != steps_done:
                return f"its optimizer has taken {float(value):g} steps, not {steps_done}"
    return None


def run_key(
    params: dict[str, Any], manifest_file: Path, device: torch.device, threads: int
) -> dict[str, str]:
    """The key a state must match to be resumed: one entry per thing it depends on.
    `params`: the params sections the train stage reads, as plain data."""
    key = {
        f"params {name}": _digest(json.dumps(value, sort_keys=True).encode())
        for name, value in sorted(params.items())
    }
    key["data"] = _digest(Path(manifest_file).read_bytes())
    key["code"] = _source_digest()
    # The device type, not its index: ranks on cuda:0 and cuda:1 share one key.
    key["runtime"] = f"torch {torch.__version__}, {device.type}, {threads} thread(s)"
    return key


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _source_digest() -> str:
    """sha256 over every module of the package (relative path and bytes): a state is
    never resumed by different code, which could compute different numbers."""
    root = Path(mnist_pipeline.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def write_state(
    state_dir: Path, key: dict[str, str], state: TrainState, extra: dict[str, Any]
) -> None:
    """Save `state` with its key (and `extra`, e.g. seconds trained) atomically."""
    payload = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "extra": extra,
        "state": dataclasses.asdict(state),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_file(Path(state_dir) / STATE_FILE) as tmp:
        tmp.write_bytes(buffer.getvalue())


def saver(
    state_dir: Path, key: dict[str, str], started_s: float, earlier_s: float, rank: Rank
) -> Callable[[TrainState], None]:
    """`fit`'s `save_state` hook: `write_state` with the seconds trained so far (the
    `time.perf_counter()` at the start of this process's training, plus `earlier_s`).

    With several ranks (one machine) every rank calls it: weights, optimizer and data
    order are the same on all of them (DDP), but each rank draws its own dropout masks,
    so every rank's torch generator is gathered and rank 0 writes them all."""

    def save(state: TrainState) -> None:
        extra: dict[str, Any] = {"train_seconds": earlier_s + time.perf_counter() - started_s}
        if rank.distributed:
            rngs: list[Any] = [None] * rank.world_size
            dist.all_gather_object(rngs, state.torch_rng)
            extra["rank_torch_rngs"] = rngs
        if rank.is_main:
            write_state(state_dir, key, state, extra)

    return save


def for_rank(state: TrainState, extra: dict[str, Any], rank: Rank) -> TrainState:
    """The state as `rank` resumes it: with its own torch generator (see `saver`)."""
    rngs = extra.get("rank_torch_rngs")
    if not rank.distributed or not rngs:
        return state
    return dataclasses.replace(state, torch_rng=rngs[rank.rank])


def read_state(
    state_dir: Path, key: dict[str, str], expected: Expected
) -> tuple[TrainState | None, dict[str, Any], str]:
    """(state, extra, why) of the saved state if its key matches `key`; else (None, {},
    one line saying why training starts fresh; empty when there is no state at all)."""
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        return None, {}, ""
    try:
        check_archive(path, expected.max_bytes(), "training state")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        saved_key, extra = payload["key"], payload["extra"]
        if payload["format_version"] != FORMAT_VERSION:
            return None, {}, f"{path} has format {payload['format_version']}; starting fresh"
        differ = sorted(
            name for name in key.keys() | saved_key.keys() if key.get(name) != saved_key.get(name)
        )
        if differ:
            return (
                None,
                {},
                f"{path} is from another run ({', '.join(differ)} differ); starting fresh",
            )
        check_tensors(path, payload)
        state = TrainState(**payload["state"])
    except PipelineError as exc:  # out of bounds: says which bound
        reason = " ".join(str(exc).split())[:300]
        return None, {}, f"{reason}; removed it, starting fresh"
    except Exception as exc:  # truncated, foreign or from an older layout: never fatal
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        return None, {}, f"{path} is unreadable ({reason}); starting fresh"
    problem = check_state(state, expected)
    if problem:
        return None, {}, f"{path} does not fit this run ({problem}); removed it, starting fresh"
    return state, extra, ""


def interrupted_note(state_dir: Path | None) -> str | None:
    """What a train run stopped part-way should tell its user: where its progress is and
    that the next run resumes it; None when nothing is saved (no state dir or no epoch yet:
    `prepare` removed any other run's state)."""
    if state_dir is None or not (Path(state_dir) / STATE_FILE).is_file():
        return None
    return (
        f"the last complete epoch is saved in {state_dir}/; the next `dvc repro` resumes "
        "from it (changed train params, data or code start afresh)"
    )


def remove_state(state_dir: Path) -> None:
    """Delete the state file (a completed run needs it no more), and the folder if empty."""
    path = Path(state_dir) / STATE_FILE
    path.unlink(missing_ok=True)
    if path.parent.is_dir() and not any(path.parent.iterdir()):
        path.parent.rmdir()


@dataclass(frozen=True)
class Resume:
    """What the train stage needs to resume and to keep saving (see `prepare`)."""

    state: TrainState | None  # the state this rank continues from; None: from scratch
    save_state: Callable[[TrainState], None] | None  # fit's hook; None: nothing saved
    earlier_s: float  # seconds trained by the killed run(s) before this one
    message: str  # one line for the user ("" when there is nothing to say)


def prepare(
    state_dir: Path | None,
    params: dict[str, Any],
    manifest_file: Path,
    device: torch.device,
    rank: Rank,
    started_s: float,
    expected: Expected,
) -> Resume:
    """Read the state of an earlier killed run from `state_dir` if its key matches this
    run's, and build the hook that saves this run's state there. `params`: the params as
    plain data. Every rank decides the same way: the file changes only after the first
    epoch, which needs every rank. With several machines nothing is saved (every rank
    would read the state file)."""
    if state_dir is None or params["distributed"]["nnodes"] != 1:
        return Resume(None, None, 0.0, "")
    sections = {name: value for name, value in params.items() if name in TRAIN_SECTIONS}
    key = run_key(sections, manifest_file, device, torch.get_num_threads())
    state, extra, why = read_state(state_dir, key, expected)
    earlier_s = float(extra.get("train_seconds", 0.0))
    if state is None and why and rank.is_main:
        # Never resumable by this run, which starts fresh: it goes, so that what the state
        # folder holds is always this run's progress (an interrupted run says so).
        remove_state(state_dir)
    if state is not None:
        state = for_rank(state, extra, rank)
        why = f"resuming after epoch {state.epoch} from {state_dir}"
    return Resume(state, saver(state_dir, key, started_s, earlier_s, rank), earlier_s, why)
