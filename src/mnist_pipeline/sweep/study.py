"""A sweep's state in Optuna's storage: the search study (NAME) and the confirmation
study (NAME.confirm), in an SQLite file (one machine) or a PostgreSQL database (many).

What a trial needs beside its params lives in the storage too (its experiment name, its
validation metrics, its error), so any machine can resume any sweep from the storage
alone. Crashes are recovered with Optuna's heartbeat: a running trial whose heartbeat
stops (its process was killed) is failed after the grace period and re-queued with the
same params (RetryHeartbeatStaleTrialCallback); a trial that failed on its own (its stage
refused the params, it diverged, it ran past the timeout) is final and keeps its error.
"""

import itertools
import json
import random
import re
import urllib.parse
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.sweep.spec import Dimension, Sweep

CONFIRM_SUFFIX = ".confirm"
MAX_RETRIES = 3  # re-runs of a trial whose process died (not of one that failed itself)
CONNECT_TIMEOUT_S = 30  # a storage server that does not answer
URL_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2")
# user_attrs keys of a trial
ERROR = "error"  # the one-line reason a trial failed (final)
EXPERIMENT = "experiment"  # the DVC experiment's name
METRICS = "valid_metrics"  # the experiment's validation metrics (never the test split)
SECONDS = "seconds"
OVERRIDES = "overrides"  # confirmation trials: the params.yaml overrides to run
CANDIDATE = "candidate"  # confirmation trials: the search trial number, or "baseline"
SEED = "seed"
SURPLUS = "surplus"  # asked past the trial count by a racing worker: never run
BASELINE = "baseline"


def default_url(repo: Path, name: str) -> str:
    return f"sqlite:///{(repo / '.sweeps' / f'{name}.db').as_posix()}"


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and reports."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def check_url(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in URL_SCHEMES:
        raise PipelineError(
            f"storage {redact(url)!r}: expected sqlite:///PATH or postgresql://USER@HOST/DB"
        )


def open_storage(url: str, heartbeat_s: int) -> RDBStorage:
    """Optuna's RDB storage with the heartbeat on; an unreachable server is one line."""
    check_url(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_S}
    else:
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        return RDBStorage(
            url,
            engine_kwargs={"connect_args": connect_args},
            heartbeat_interval=heartbeat_s,
            grace_period=3 * heartbeat_s,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
        )
    except Exception as exc:  # sqlalchemy's OperationalError and kin, whatever the driver
        first = " ".join(str(exc).split())[:300]
        password = urllib.parse.urlsplit(url).password
        if password:
            first = first.replace(password, "***")
        raise PipelineError(f"cannot open the study storage {redact(url)}: {first}") from None


def quiet_optuna() -> None:
    """Optuna's info log (a line per study) and its warnings about the experimental
    heartbeat and ask-and-tell use, which the sweep uses as documented."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)


def make_sampler(sweep: Sweep, salt: int = 0) -> optuna.samplers.BaseSampler:
    """The sweep's sampler. `salt` separates the random streams of processes sharing a
    study (the same seed in two workers would propose the same trials). A grid's points
    are queued in the study instead (enqueue_grid): Optuna's GridSampler stops the study
    through `Study.optimize`, which ask-and-tell does not run."""
    seed = (sweep.file.sampler.seed + salt) % 2**32
    if sweep.file.sampler.name in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: running trials count as bad, so parallel workers spread out.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def grid_plan(sweep: Sweep) -> list[dict[str, Any]]:
    """The grid's points the sweep runs: the first `trials` of every combination in an
    order shuffled by the sampler's seed."""
    keys = [d.key for d in sweep.dimensions]
    points = [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(map(_encode, d.grid_points()) for d in sweep.dimensions))
    ]
    random.Random(sweep.file.sampler.seed).shuffle(points)
    return points[: sweep.file.trials]


def enqueue_grid(search: optuna.Study, sweep: Sweep) -> int:
    """Queue the grid points the study lacks (done, running or queued ones are kept)."""
    if sweep.file.sampler.name != "grid":
        return 0
    present = [
        t.system_attrs.get("fixed_params", t.params)  # a queued trial's params are there
        for t in search.get_trials(deepcopy=False)
        if counted(t)
    ]
    missing = [point for point in grid_plan(sweep) if point not in present]
    for point in missing:
        search.enqueue_trial(point)
    return len(missing)


def distributions(sweep: Sweep) -> dict[str, BaseDistribution]:
    return {d.key: _distribution(d) for d in sweep.dimensions}


def _distribution(d: Dimension) -> BaseDistribution:
    if d.kind == "choice":
        return CategoricalDistribution([_encode(v) for v in d.choices])
    if d.kind == "int":
        return IntDistribution(int(d.low), int(d.high), log=d.log, step=int(d.step or 1))
    return FloatDistribution(d.low, d.high, log=d.log, step=d.step)


def _encode(value: Any) -> Any:
    """Optuna's choices are scalars: a list (hidden sizes) is its JSON text."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def overrides_of(sweep: Sweep, params: dict[str, Any]) -> dict[str, Any]:
    """A search trial's params as params.yaml overrides (JSON choices decoded)."""
    result = {}
    for d in sweep.dimensions:
        value = params[d.key]
        if d.kind == "choice" and isinstance(value, str) and _encode_needed(d):
            value = json.loads(value)
        result[d.key] = value
    return result


def _encode_needed(d: Dimension) -> bool:
    return any(isinstance(v, list | dict) for v in d.choices)


def identity_text(sweep: Sweep, head: str) -> str:
    return json.dumps({"sweep": sweep.identity(), "head": head}, sort_keys=True)


def open_studies(
    storage: RDBStorage, sweep: Sweep, head: str, sampler: optuna.samplers.BaseSampler
) -> tuple[optuna.Study, optuna.Study]:
    """The search and confirmation studies, created on first use; a study begun by
    another sweep file or at another commit is refused (its trials would not compare)."""
    identity = identity_text(sweep, head)
    studies = []
    for suffix in ("", CONFIRM_SUFFIX):
        study = optuna.create_study(
            storage=storage,
            study_name=f"{sweep.name}{suffix}",
            direction=sweep.objective.direction,
            sampler=sampler if not suffix else optuna.samplers.RandomSampler(seed=0),
            load_if_exists=True,
        )
        found = study.user_attrs.get("identity")
        if found is None:
            study.set_user_attr("identity", identity)
        elif found != identity:
            raise PipelineError(f"study {study.study_name!r}: {mismatch(found, identity)}")
        studies.append(study)
    return studies[0], studies[1]


def mismatch(found: str, wanted: str) -> str:
    try:
        old, new = json.loads(found), json.loads(wanted)
    except json.JSONDecodeError:
        old, new = {}, {}
    if old.get("head") != new.get("head"):
        what = f"was begun at commit {str(old.get('head'))[:12]}, HEAD is {new['head'][:12]}"
    else:
        what = "was begun with another version of the sweep file (or PRESET)"
    return (
        f"{what}; trials of both would not compare. Check out that commit, or start "
        "afresh in a new storage (delete .sweeps/NAME.db, or another STORAGE)"
    )


@dataclass(frozen=True)
class Tally:
    complete: int
    failed: int  # final failures (their own error), not crashed ones being retried
    running: int
    waiting: int

    @property
    def settled(self) -> int:
        return self.complete + self.failed

    @property
    def counted(self) -> int:
        """Trials that count toward the study's trial count, done or under way."""
        return self.settled + self.running + self.waiting


def counted(trial: FrozenTrial) -> bool:
    if trial.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING):
        return True
    return trial.state == TrialState.FAIL and ERROR in trial.user_attrs


def tally(trials: Iterable[FrozenTrial]) -> Tally:
    trials = list(trials)
    state = [t.state for t in trials]
    return Tally(
        complete=state.count(TrialState.COMPLETE),
        failed=sum(1 for t in trials if t.state == TrialState.FAIL and ERROR in t.user_attrs),
        running=state.count(TrialState.RUNNING),
        waiting=state.count(TrialState.WAITING),
    )


def is_surplus(trials: Iterable[FrozenTrial], number: int, count: int) -> bool:
    """Whether trial `number` lies past the first `count` counted trials (two workers
    asked for the last one at once): it is then never run."""
    numbers = sorted(t.number for t in trials if counted(t))
    return number not in numbers[:count]


def objective_value(trial: FrozenTrial, metric_name: str) -> float | None:
    metrics = trial.user_attrs.get(METRICS) or {}
    value = metrics.get(metric_name)
    return float(value) if isinstance(value, int | float) else None


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The k best complete search trials (ties: the earlier trial)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    ranked = sorted(complete, key=lambda t: (sign * float(t.value or 0.0), t.number))
    return ranked[:k]


def confirm_plan(sweep: Sweep, candidates: list[FrozenTrial]) -> list[dict[str, Any]]:
    """The confirmation runs: every candidate and the baseline (the sweep's base: HEAD's
    params and its presets) with seeds 1..S, fresh ones (the search ran the committed
    seed, and its best scores carry the luck of that draw)."""
    runs = []
    for seed in range(1, sweep.file.confirm.seeds + 1):
        for trial in candidates:
            runs.append(
                {
                    CANDIDATE: trial.number,
                    SEED: seed,
                    OVERRIDES: overrides_of(sweep, trial.params),
                    EXPERIMENT: f"{sweep.name}-c{trial.number}-s{seed}",
                }
            )
        runs.append(
            {
                CANDIDATE: BASELINE,
                SEED: seed,
                OVERRIDES: {},
                EXPERIMENT: f"{sweep.name}-base-s{seed}",
            }
        )
    return runs


def enqueue_missing(confirm: optuna.Study, plan: list[dict[str, Any]]) -> int:
    """Queue the planned confirmation runs the study lacks (done, running or queued ones
    are kept); returns how many were queued."""
    present = {
        t.user_attrs.get(EXPERIMENT) for t in confirm.get_trials(deepcopy=False) if counted(t)
    }
    missing = [run for run in plan if run[EXPERIMENT] not in present]
    for run in missing:
        confirm.enqueue_trial({}, user_attrs=run)
    return len(missing)
