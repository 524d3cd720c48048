"""The sweep report (`make sweep-report SWEEP=NAME`): report.md and its PNGs in one folder.

It holds the trials table, the optimization history, the param importances, one slice
per param, the confirmation (the winner's single search run beside its seed mean ± std:
the optimism of a maximum, shown), and the winner against the baseline on the test
split with the same McNemar + bootstrap verdict as `make report`. The test split is read
here only, once the winner is chosen on validation (driver.summarize).

Values from the storage (params, errors, names) are text from a shared database:
escaped for Markdown like every other report input.
"""

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.experiments.table import predictions_at
from mnist_pipeline.fileio import atomic_dir
from mnist_pipeline.review.markdown import escape_text, inline_code
from mnist_pipeline.review.report import markdown_table
from mnist_pipeline.review.significance import compare_accuracy
from mnist_pipeline.sweep import figures
from mnist_pipeline.sweep import study as st
from mnist_pipeline.sweep.driver import Candidate, summarize
from mnist_pipeline.sweep.experiment import experiment_ref, metrics_document
from mnist_pipeline.sweep.launch import HEARTBEAT_S, Where, load
from mnist_pipeline.sweep.spec import Sweep

REPORT = "report.md"
TEST_METRIC = "accuracy"


def write_report(
    where: Where, name: str, storage_url: str | None, presets: list[str], out: Path
) -> str:
    """Write out/report.md and its figures; returns the line to print."""
    sweep, head = load(where, name, presets)
    url = storage_url or st.default_url(where.repo, sweep.name)
    storage = st.open_storage(url, HEARTBEAT_S)
    search, confirm = _load_studies(storage, sweep, head, url)
    trials = search.get_trials(deepcopy=False)
    candidates = summarize(sweep, search, confirm)
    with atomic_dir(out) as folder:
        text = render(where.repo, sweep, head, url, trials, candidates, search, folder)
        (folder / REPORT).write_text(text)
    return f"sweep-report: wrote {out / REPORT} ({len(trials)} trials)"


def _load_studies(
    storage: optuna.storages.RDBStorage, sweep: Sweep, head: str, url: str
) -> tuple[optuna.Study, optuna.Study]:
    studies = []
    for suffix in ("", st.CONFIRM_SUFFIX):
        try:
            study = optuna.load_study(study_name=f"{sweep.name}{suffix}", storage=storage)
        except KeyError:
            raise PipelineError(
                f"no study {sweep.name}{suffix!s} in {st.redact(url)}: run "
                f"`make sweep SWEEP={sweep.name}` first"
            ) from None
        wanted = st.identity_text(sweep, head)
        found = study.user_attrs.get("identity")
        if found != wanted:
            raise PipelineError(f"study {study.study_name!r}: {st.mismatch(str(found), wanted)}")
        studies.append(study)
    return studies[0], studies[1]


def render(
    repo: Path,
    sweep: Sweep,
    head: str,
    url: str,
    trials: Sequence[FrozenTrial],
    candidates: Sequence[Candidate],
    search: optuna.Study,
    folder: Path,
) -> str:
    metric = sweep.objective.metric
    maximize = sweep.objective.direction == "maximize"
    shown = [t for t in trials if not t.user_attrs.get(st.SURPLUS)]
    tally = st.tally(shown)
    parts = [
        f"# Sweep {inline_code(sweep.name)}",
        _summary(sweep, head, url, shown, tally),
    ]
    parts += _winner_sections(repo, sweep, candidates, folder)
    figures.history(
        [t.number for t in shown if t.state in (TrialState.COMPLETE, TrialState.FAIL)],
        [
            t.value if t.state == TrialState.COMPLETE else None
            for t in shown
            if t.state in (TrialState.COMPLETE, TrialState.FAIL)
        ],
        maximize,
        metric,
        folder / "history.png",
    )
    parts.append("## Search\n\n![Optimization history](history.png)")
    complete = [t for t in shown if t.state == TrialState.COMPLETE and t.value is not None]
    importance = _importances(search)
    if importance:
        figures.importances(importance, folder / "importances.png")
        parts.append("![Param importances](importances.png)")
    else:
        parts.append("Param importances: too few complete trials to estimate them.")
    if complete:
        points = [(st.overrides_of(sweep, t.params), float(t.value or 0)) for t in complete]
        figures.slices(sweep.dimensions, points, metric, folder / "slices.png")
        parts.append("![Slices](slices.png)")
    parts.append(_trials_table(sweep, shown))
    return "\n\n".join(parts) + "\n"


def _summary(
    sweep: Sweep, head: str, url: str, trials: Sequence[FrozenTrial], tally: st.Tally
) -> str:
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() / 60 if starts and ends else math.nan
    presets = ", ".join(sweep.file.presets) or "none"
    lines = [
        f"- objective: {inline_code(sweep.objective.metric)} ({sweep.objective.direction}), "
        f"on the validation split only",
        f"- trials: {tally.settled} of {sweep.file.trials} ({tally.complete} complete, "
        f"{tally.failed} failed); {sweep.file.sampler.name} sampler, seed "
        f"{sweep.file.sampler.seed}; search wall time {wall:.1f} min",
        f"- base: params.yaml at {inline_code(head[:12])} with presets: {escape_text(presets)}",
        f"- study: {inline_code(st.redact(url))}",
    ]
    return "\n".join(lines)


def _winner_sections(
    repo: Path, sweep: Sweep, candidates: Sequence[Candidate], folder: Path
) -> list[str]:
    contenders = [c for c in candidates if c.number is not None]
    baselines = [c for c in candidates if c.number is None]
    if not contenders:
        return ["## Winner\n\nNo confirmation runs have completed yet (`make sweep` runs them)."]
    best = contenders[0]
    metric = sweep.objective.metric
    seeds = f"seeds 1–{len(best.values)}"
    text = [
        f"## Winner: {inline_code(f'{sweep.name}-{best.number}')}",
        f"Chosen on validation: the best mean of {inline_code(metric)} over fresh "
        f"{seeds} among the top {len(contenders)} search trials.",
    ]
    rows = []
    for candidate in [*contenders, *baselines]:
        search = "—" if candidate.search_value is None else f"{candidate.search_value:.4f}"
        optimism = "—"
        if candidate.search_value is not None and candidate.values:
            optimism = f"{100 * (candidate.search_value - candidate.mean):+.2f}"
        rows.append(
            [
                candidate.label + (" (winner)" if candidate is best else ""),
                search,
                _mean_std(candidate),
                optimism,
                " ".join(candidate.experiments),
            ]
        )
    header = ["candidate", "search run", f"mean ± std ({seeds})", "optimism, points", "experiments"]
    text.append(markdown_table(header, rows, numeric=0))
    text.append(
        "The search run is the maximum of many noisy draws; the mean over fresh seeds is "
        "what the setting is worth. Their gap is the optimism of the maximum."
    )
    figures.confirmation(
        [c.label for c in [*contenders, *baselines]],
        [c.search_value for c in [*contenders, *baselines]],
        [c.mean for c in [*contenders, *baselines]],
        [c.std for c in [*contenders, *baselines]],
        metric,
        folder / "confirmation.png",
    )
    text.append("![Confirmation](confirmation.png)")
    if baselines and baselines[0].experiments:
        text.append(_test_section(repo, best, baselines[0]))
    return text


def _mean_std(candidate: Candidate) -> str:
    if not candidate.values:
        return "—"
    std = "—" if math.isnan(candidate.std) else f"{candidate.std:.4f}"
    return f"{candidate.mean:.4f} ± {std}"


def _test_section(repo: Path, winner: Candidate, baseline: Candidate) -> str:
    """The winner against the baseline on the test split: accuracy per seed, and the
    paired test on seed 1's predictions."""
    title = "## The winner on the test split"
    lines = [title, "Read only now, after the winner was chosen on validation."]
    rows = []
    for candidate in (winner, baseline):
        values = [_test_accuracy(repo, name) for name in candidate.experiments]
        known = [v for v in values if v is not None]
        cell = "—"
        if len(known) > 1:
            mean = sum(known) / len(known)
            std = math.sqrt(sum((v - mean) ** 2 for v in known) / (len(known) - 1))
            cell = f"{100 * mean:.2f}% ± {100 * std:.2f}"
        rows.append([candidate.label, cell, " ".join(f"{100 * v:.2f}%" for v in known)])
    lines.append(markdown_table(["", "test accuracy, mean ± std", "per seed"], rows, numeric=0))
    pair = (winner.experiments[0], baseline.experiments[0])
    refs = [experiment_ref(repo, name) for name in pair]
    if None in refs:
        lines.append("Paired test: an experiment is missing here (`dvc exp pull` it).")
        return "\n\n".join(lines)
    correct_new, correct_old = (predictions_at(repo, str(ref)) for ref in refs)
    if correct_new is None or correct_old is None or len(correct_new) != len(correct_old):
        lines.append("Paired test: the experiments lack comparable test predictions.")
        return "\n\n".join(lines)
    comparison = compare_accuracy(correct_old, correct_new)
    lines.append(
        f"Paired on the same {comparison.n_images} test images (seed 1: "
        f"{inline_code(pair[0])} against {inline_code(pair[1])}), McNemar's exact test and "
        f"a paired bootstrap, as `make report`: **{escape_text(comparison.verdict())}**."
    )
    return "\n\n".join(lines)


def _test_accuracy(repo: Path, name: str) -> float | None:
    ref = experiment_ref(repo, name)
    if ref is None:
        return None
    try:
        value = metrics_document(repo, ref)["test"][TEST_METRIC]
    except (PipelineError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def _importances(search: optuna.Study) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return dict(optuna.importance.get_param_importances(search))
        except (RuntimeError, ValueError, ZeroDivisionError):
            return {}


def _trials_table(sweep: Sweep, trials: Sequence[FrozenTrial]) -> str:
    keys = [d.key for d in sweep.dimensions]
    header = [
        "trial",
        "state",
        *map(inline_code, keys),
        inline_code(sweep.objective.metric),
        "s",
        "error",
    ]
    rows = []
    for trial in trials:
        state = trial.state.name.lower()
        if trial.state == TrialState.FAIL and st.ERROR not in trial.user_attrs:
            state = "crashed, retried"
        params = _params_shown(sweep, trial)
        rows.append(
            [
                str(trial.user_attrs.get(st.EXPERIMENT, f"{sweep.name}-{trial.number}")),
                state,
                *(params.get(key, "—") for key in keys),
                "—" if trial.value is None else f"{trial.value:.4f}",
                str(trial.user_attrs.get(st.SECONDS, "—")),
                str(trial.user_attrs.get(st.ERROR, "")),
            ]
        )
    return "## Trials\n\n" + markdown_table(header, rows, numeric=0)


def _params_shown(sweep: Sweep, trial: FrozenTrial) -> dict[str, str]:
    try:
        values: dict[str, Any] = st.overrides_of(sweep, trial.params)
    except (KeyError, ValueError):
        return {}
    return {k: _shown(v) for k, v in values.items()}


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)
