"""Run a sweep's trials, `jobs` at a time on this machine, until its study has its trial
count; then (the sweep's own command, not a worker) confirm: the top-k trials and the
baseline re-run with fresh seeds, and the winner is the best validation mean.

Any number of processes on any number of machines may run `run_search` on one study
(a shared PostgreSQL storage): each asks Optuna for the next trial, runs it as a DVC
experiment and tells the result. Nothing here waits without a bound: a trial is
abandoned after the sweep's trial_timeout_min, a trial whose process died is failed by
its stopped heartbeat after the grace period (3 heartbeats) and run again, and a wait for
other machines' trials ends when they finish, time out or stop beating.
"""

import math
import socket
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from mnist_pipeline.cli import printable
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.sweep import study as st
from mnist_pipeline.sweep.experiment import Outcome, experiment_names, push, run_experiment
from mnist_pipeline.sweep.spec import Sweep

Printer = Callable[[str], None]
MAX_SHOWN_PARAM_CHARS = 40


@dataclass
class Context:
    repo: Path
    sweep: Sweep
    storage: RDBStorage
    search: optuna.Study
    confirm: optuna.Study
    jobs: int
    threads: int  # per trial: cores // jobs
    heartbeat_s: int
    log_dir: Path
    say: Printer
    push_remote: str | None = None  # workers: `dvc exp push` each finished experiment here
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)  # ask, tell and print


def check_jobs(jobs: int, cores: int) -> int:
    """Threads per trial for `jobs` trials at once: jobs x threads <= cores."""
    if not 1 <= jobs <= cores:
        raise PipelineError(f"JOBS {jobs}: must be in [1, {cores}] (this machine's cores)")
    return cores // jobs


def check_fresh(repo: Path, sweep: Sweep, search: optuna.Study) -> None:
    """A new study must not meet experiments of an earlier sweep of the same name: the
    trial numbers start again at 0, so their names would clash."""
    if search.get_trials(deepcopy=False):
        return
    prefix = f"{sweep.name}-"
    old = sorted(name for name in experiment_names(repo) if name.startswith(prefix))
    if old:
        shown = " ".join(old[:5]) + (" ..." if len(old) > 5 else "")
        raise PipelineError(
            f"experiments of an earlier {sweep.name!r} sweep exist ({shown}); a new study "
            f"would reuse their names: remove them (dvc exp remove {shown}) or resume that "
            "study's storage"
        )


def run_search(ctx: Context) -> st.Tally:
    """Run search trials until the study has its trial count (settled: complete or
    failed); returns the final tally. Returns early, with the trials it was running
    re-queued, when ctx.stop is set."""
    _run_slots(ctx, _search_slot)
    return st.tally(ctx.search.get_trials(deepcopy=False))


def _run_slots(ctx: Context, slot: Callable[[Context], None]) -> None:
    """Run `slot` in ctx.jobs threads until each returns. Interrupted (Ctrl-C, SIGTERM in
    the main thread) or failed, it sets ctx.stop, so that every slot stops its trial
    (queued again for the next run), and waits for them before raising on."""
    pool = ThreadPoolExecutor(ctx.jobs, thread_name_prefix="trial")
    try:
        futures = [pool.submit(slot, ctx) for _ in range(ctx.jobs)]
        for future in futures:
            future.result()
    except BaseException:
        ctx.stop.set()
        raise
    finally:
        pool.shutdown(wait=True)


def _search_slot(ctx: Context) -> None:
    distributions = st.distributions(ctx.sweep)
    count = ctx.sweep.file.trials
    while not ctx.stop.is_set():
        with ctx.lock:
            fail_stale_trials(ctx.search)
            trials = ctx.search.get_trials(deepcopy=False)
            tally = st.tally(trials)
            if tally.settled >= count:
                return
            trial = None
            if tally.counted < count or tally.waiting:  # a queued one: a grid point, a retry
                trial = ctx.search.ask(distributions)
                ctx.storage.record_heartbeat(trial._trial_id)
                if st.is_surplus(ctx.search.get_trials(deepcopy=False), trial.number, count):
                    trial.set_user_attr(st.SURPLUS, True)
                    ctx.search.tell(trial, state=TrialState.PRUNED)
                    trial = None
        if trial is None:
            # Every remaining trial runs elsewhere (or its process died): wait for them to
            # settle, or go stale and come back as a retry.
            ctx.stop.wait(ctx.heartbeat_s)
            continue
        name = f"{ctx.sweep.name}-{trial.number}"
        overrides = {**ctx.sweep.base_overrides, **st.overrides_of(ctx.sweep, trial.params)}
        outcome = _run(ctx, trial._trial_id, name, overrides)
        _tell(ctx, ctx.search, trial, name, outcome, _describe(trial.params))


def _run(ctx: Context, trial_id: int, name: str, overrides: dict[str, Any]) -> Outcome:
    return run_experiment(
        ctx.repo,
        name,
        overrides,
        threads=ctx.threads,
        timeout_s=60 * ctx.sweep.file.trial_timeout_min,
        log_path=ctx.log_dir / f"{name}.log",
        heartbeat=lambda: ctx.storage.record_heartbeat(trial_id),
        heartbeat_s=ctx.heartbeat_s,
        stop=ctx.stop,
    )


def _tell(
    ctx: Context,
    study: optuna.Study,
    trial: optuna.Trial,
    name: str,
    outcome: Outcome,
    shown_params: str,
) -> None:
    trial.set_user_attr(st.EXPERIMENT, name)
    trial.set_user_attr(st.SECONDS, round(outcome.seconds, 1))
    if outcome.stopped:
        # Not the trial's fault: failed without an error, and queued again at once.
        with ctx.lock:
            study.tell(trial, state=TrialState.FAIL)
            frozen = ctx.storage.get_trial(trial._trial_id)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=st.MAX_RETRIES)
            retry(study, frozen)
        return
    value = None
    if outcome.metrics is not None:
        value = outcome.metrics.get(ctx.sweep.objective.name)
        if value is None or not math.isfinite(value):
            outcome = Outcome(
                None, f"no finite {ctx.sweep.objective.metric} in its metrics", outcome.seconds
            )
    pushed = None
    if outcome.metrics is not None and ctx.push_remote is not None:
        pushed = push(ctx.repo, ctx.push_remote, name)
    with ctx.lock:
        if outcome.metrics is None:
            trial.set_user_attr(st.ERROR, outcome.error or "failed")
            study.tell(trial, state=TrialState.FAIL)
        else:
            trial.set_user_attr(st.METRICS, outcome.metrics)
            trial.set_user_attr("host", socket.gethostname())
            study.tell(trial, value)
        _progress(ctx, study, trial.number, name, value, outcome, shown_params, pushed)


def _progress(
    ctx: Context,
    study: optuna.Study,
    number: int,
    name: str,
    value: float | None,
    outcome: Outcome,
    shown_params: str,
    push_error: str | None,
) -> None:
    trials = study.get_trials(deepcopy=False)
    tally = st.tally(trials)
    metric = ctx.sweep.objective.metric
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = None
    if complete:
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        best = pick(complete, key=lambda t: float(t.value or 0.0))
    result = f"failed: {outcome.error}" if value is None else f"{metric} {value:.4f}"
    total = ctx.sweep.file.trials if study is ctx.search else None
    done = f"{tally.settled}/{total}" if total else f"{tally.settled} done"
    best_text = "best -"
    if total is None:  # a confirmation run: its own seed, no race to lead
        best_text = "confirmation"
    elif best is not None:
        best_text = f"best {float(best.value or 0):.4f} ({best.user_attrs.get(st.EXPERIMENT)})"
    line = (
        f"sweep: {name} {result}; {best_text}; {shown_params}; {outcome.seconds:.0f} s; "
        f"{done} in {_minutes(time.monotonic() - ctx.started)}"
    )
    if push_error:
        line += f"; push failed: {push_error}"
    ctx.say(printable(line))  # params and errors come from a shared storage


def _describe(params: dict[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        text = text if len(text) <= MAX_SHOWN_PARAM_CHARS else text[:37] + "..."
        parts.append(f"{key}={text}")
    return " ".join(parts) or "base params"


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


@dataclass(frozen=True)
class Candidate:
    label: str  # "trial 7" or "baseline"
    number: int | None  # the search trial; None for the baseline
    search_value: float | None  # its single search run (seed of params.yaml)
    values: tuple[float, ...]  # validation objective per confirmation seed
    experiments: tuple[str, ...]  # the confirmation experiments, by seed

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else math.nan


def run_confirm(ctx: Context) -> list[Candidate]:
    """Re-run the top-k search trials and the baseline with seeds 1..S (queued in the
    confirmation study, so a killed sweep resumes them) and return the candidates,
    best validation mean first, the baseline last."""
    candidates = st.top_trials(ctx.search, ctx.sweep.file.confirm.top_k)
    if not candidates:
        raise PipelineError(f"sweep {ctx.sweep.name}: no trial completed; nothing to confirm")
    with ctx.lock:
        fail_stale_trials(ctx.confirm)
        plan = st.confirm_plan(ctx.sweep, candidates)
        queued = st.enqueue_missing(ctx.confirm, plan)
    if queued:
        ctx.say(
            f"sweep: confirming the top {len(candidates)} trial(s) and the baseline with "
            f"{ctx.sweep.file.confirm.seeds} fresh seeds: {queued} run(s)"
        )
    while not ctx.stop.is_set():
        _run_slots(ctx, _confirm_slot)
        with ctx.lock:
            fail_stale_trials(ctx.confirm)
            missing = st.enqueue_missing(ctx.confirm, plan)
            tally = st.tally(ctx.confirm.get_trials(deepcopy=False))
        if not missing and not tally.running and not tally.waiting:
            break
        if tally.running and not tally.waiting:
            ctx.stop.wait(ctx.heartbeat_s)  # a crashed run: stale after the grace period
    if ctx.stop.is_set():
        return []
    return summarize(ctx.sweep, ctx.search, ctx.confirm)


def _confirm_slot(ctx: Context) -> None:
    while not ctx.stop.is_set():
        with ctx.lock:
            fail_stale_trials(ctx.confirm)
            trials = ctx.confirm.get_trials(deepcopy=False)
            if not any(t.state == TrialState.WAITING for t in trials):
                return
            trial = ctx.confirm.ask()
            ctx.storage.record_heartbeat(trial._trial_id)
        run = trial.user_attrs
        name = str(run[st.EXPERIMENT])
        overrides = {**ctx.sweep.base_overrides, **run[st.OVERRIDES], "seed": run[st.SEED]}
        outcome = _run(ctx, trial._trial_id, name, overrides)
        label = "baseline" if run[st.CANDIDATE] == st.BASELINE else f"trial {run[st.CANDIDATE]}"
        _tell(ctx, ctx.confirm, trial, name, outcome, f"{label}, seed {run[st.SEED]}")


def summarize(sweep: Sweep, search: optuna.Study, confirm: optuna.Study) -> list[Candidate]:
    """The candidates from the confirmation study, best validation mean first (the
    winner), the baseline last. Only validation values are read."""
    metric = sweep.objective.name
    runs: dict[str, list[FrozenTrial]] = {}
    for trial in confirm.get_trials(deepcopy=False):
        if trial.state == TrialState.COMPLETE:
            runs.setdefault(str(trial.user_attrs[st.CANDIDATE]), []).append(trial)
    by_number = {t.number: t for t in search.get_trials(deepcopy=False)}
    result = []
    for key, trials in runs.items():
        trials.sort(key=lambda t: int(t.user_attrs[st.SEED]))
        values = tuple(v for t in trials if (v := st.objective_value(t, metric)) is not None)
        number = None if key == st.BASELINE else int(key)
        search_trial = by_number.get(number) if number is not None else None
        result.append(
            Candidate(
                label="baseline" if number is None else f"trial {number}",
                number=number,
                search_value=None if search_trial is None else search_trial.value,
                values=values,
                experiments=tuple(str(t.user_attrs[st.EXPERIMENT]) for t in trials),
            )
        )
    sign = -1.0 if sweep.objective.direction == "maximize" else 1.0
    contenders = sorted(
        (c for c in result if c.number is not None and c.values),
        key=lambda c: (sign * c.mean, c.number),
    )
    baseline = [c for c in result if c.number is None]
    return [*contenders, *baseline]


def describe_winner(sweep: Sweep, candidates: Sequence[Candidate]) -> str:
    """One line: the winner's search score, its seed mean ± std, and the baseline's."""
    contenders = [c for c in candidates if c.number is not None]
    baseline = [c for c in candidates if c.number is None]
    if not contenders:
        return f"sweep {sweep.name}: no candidate completed its confirmation runs"
    best = contenders[0]
    metric = sweep.objective.metric
    searched = "-" if best.search_value is None else f"{best.search_value:.4f}"
    text = (
        f"sweep {sweep.name}: winner {sweep.name}-{best.number}: {metric} {searched} in the "
        f"search, {best.mean:.4f} ± {best.std:.4f} over seeds 1-{len(best.values)}"
    )
    if baseline and baseline[0].values:
        text += f"; baseline {baseline[0].mean:.4f} ± {baseline[0].std:.4f}"
    return text
