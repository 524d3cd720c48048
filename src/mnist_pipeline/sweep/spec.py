"""A sweep file (sweeps/NAME.yaml): what to search over params.yaml, toward which
validation metric, how many trials, with which sampler, on top of which presets.

    objective: {metric: valid.accuracy, direction: maximize}
    trials: 30
    sampler: {name: tpe, seed: 0}      # tpe | random | grid
    presets: []                         # presets/NAME.yaml applied to HEAD's params first
    trial_timeout_min: 30               # a trial running longer is abandoned
    confirm: {top_k: 3, seeds: 3}       # the best trials re-run with fresh seeds
    space:
      train.lr: {low: 0.0005, high: 0.02, log: true}   # float range (log scale)
      train.epochs: {low: 10, high: 40, step: 10}       # int range (ints in params.yaml)
      model.hidden_sizes: {choices: [[128, 256], [256, 256]]}  # any values, lists too

Validated at load as params.yaml is: an unknown key, a space key params.yaml lacks, an
empty range, a value the stages would refuse and a test-split objective are one-line
errors naming them. The test split is never an objective: a sweep selects on validation
only, so that the test split stays an unbiased estimate of the winner.
"""

import dataclasses
import math
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mnist_pipeline.config.params import Params, parse_params
from mnist_pipeline.config.preflight import read_params_text, safe_params_data
from mnist_pipeline.config.strict import check, parse
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.experiments.presets import combined_overrides
from mnist_pipeline.experiments.start import with_overrides

SUFFIX = ".yaml"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")  # experiment names: NAME-<trial>
MAX_TRIALS = 1000  # each trial is a full training run and an experiment in the repository
MAX_SPACE_KEYS = 32
MAX_CHOICES = 100
MAX_GRID_POINTS = 10_000
MAX_TOP_K = 10
MIN_SEEDS = 2  # a standard deviation needs two runs
MAX_SEEDS = 10
MAX_TRIAL_TIMEOUT_MIN = 24 * 60.0
# Keys a sweep sets itself: the seed (the confirmation's fresh seeds) and the CPU threads
# of each trial (cores / jobs).
RESERVED_KEYS = ("seed", "train.threads")
# Validation metrics of metrics/evaluate.json and which way is better.
METRIC_SENSE = {
    "accuracy": "maximize",
    "macro_f1": "maximize",
    "top2_accuracy": "maximize",
    "mc_accuracy": "maximize",
    "mc_accuracy_at_90_coverage": "maximize",
    "loss": "minimize",
    "ece": "minimize",
    "brier": "minimize",
}
SELECTION_SPLIT = "valid"


@dataclass(frozen=True)
class Objective:
    metric: str  # valid.<name>
    direction: Literal["maximize", "minimize"]

    def __post_init__(self) -> None:
        split, _, name = self.metric.partition(".")
        if split != SELECTION_SPLIT:
            raise PipelineError(
                f"metric: {self.metric!r}: a sweep selects on the validation split only "
                f"(the test split stays unbiased for the winner); use valid.<name>"
            )
        names = ", ".join(f"valid.{n}" for n in METRIC_SENSE)
        check(name in METRIC_SENSE, "metric", f"{self.metric!r} is not one of: {names}")
        sense = METRIC_SENSE[name]
        check(
            self.direction == sense,
            "direction",
            f"{self.metric} is better when {'higher' if sense == 'maximize' else 'lower'}: "
            f"direction: {sense}",
        )

    @property
    def name(self) -> str:
        """The metric's name inside the valid section, e.g. accuracy."""
        return self.metric.partition(".")[2]

    def better(self, a: float, b: float) -> bool:
        """Whether value `a` is strictly better than `b`."""
        return a > b if self.direction == "maximize" else a < b


@dataclass(frozen=True)
class Sampler:
    name: Literal["tpe", "random", "grid"] = "tpe"
    seed: int = 0

    def __post_init__(self) -> None:
        check(0 <= self.seed < 2**32, "seed", f"must be in [0, 2**32), got {self.seed}")


@dataclass(frozen=True)
class Confirm:
    top_k: int = 3  # trials re-run
    seeds: int = 3  # fresh seeds each (1..seeds; the search ran the committed seed)

    def __post_init__(self) -> None:
        check(1 <= self.top_k <= MAX_TOP_K, "top_k", f"must be in [1, {MAX_TOP_K}]")
        check(
            MIN_SEEDS <= self.seeds <= MAX_SEEDS,
            "seeds",
            f"must be in [{MIN_SEEDS}, {MAX_SEEDS}] (a spread needs two runs)",
        )


@dataclass(frozen=True)
class SweepFile:
    """The file as written (the space still raw: Dimension checks it against params)."""

    objective: Objective
    trials: int
    space: dict[str, Any]
    sampler: Sampler = field(default_factory=Sampler)
    presets: tuple[str, ...] = ()
    trial_timeout_min: float = 60.0
    confirm: Confirm = field(default_factory=Confirm)

    def __post_init__(self) -> None:
        check(1 <= self.trials <= MAX_TRIALS, "trials", f"must be in [1, {MAX_TRIALS}]")
        check(
            0 < self.trial_timeout_min <= MAX_TRIAL_TIMEOUT_MIN,
            "trial_timeout_min",
            f"must be in (0, {MAX_TRIAL_TIMEOUT_MIN:g}]",
        )


@dataclass(frozen=True)
class Dimension:
    """One params.yaml key of the space: a range (int or float, optionally log or
    stepped) or a list of choices (any params values: lists are written as JSON text
    for Optuna, whose choices must be scalars)."""

    key: str  # dotted params.yaml key
    kind: Literal["int", "float", "choice"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def grid_points(self) -> list[Any]:
        """Every value of a gridded dimension (choices, int ranges, stepped floats)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.step is None:
            raise PipelineError(f"space.{self.key}: a grid needs a step on a float range")
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else values


@dataclass(frozen=True)
class Sweep:
    name: str
    path: Path
    file: SweepFile
    dimensions: tuple[Dimension, ...]
    base_overrides: dict[str, Any]  # the presets' dotted key -> value, in order

    @property
    def objective(self) -> Objective:
        return self.file.objective

    def identity(self) -> dict[str, Any]:
        """What a study must have been started with to be resumed by this sweep."""
        return {
            "objective": [self.objective.metric, self.objective.direction],
            "trials": self.file.trials,
            "sampler": [self.file.sampler.name, self.file.sampler.seed],
            "presets": list(self.file.presets),
            "base_overrides": self.base_overrides,
            "space": {
                d.key: [d.kind, d.low, d.high, d.log, d.step, list(d.choices)]
                for d in self.dimensions
            },
            "confirm": [self.file.confirm.top_k, self.file.confirm.seeds],
        }


def sweep_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in Path(folder).glob(f"*{SUFFIX}") if p.is_file())


def sweep_path(folder: Path, name: str) -> Path:
    """sweeps/NAME.yaml, after checking NAME (it names experiments and the study)."""
    names = sweep_names(folder)
    if name not in names:
        valid = ", ".join(names) or f"none: {folder} has no *{SUFFIX} files"
        raise PipelineError(f"unknown sweep {name!r}; valid sweeps: {valid}")
    if NAME_PATTERN.fullmatch(name) is None:
        raise PipelineError(
            f"sweep name {name!r}: expected lowercase letters, digits and _ (at most 32), "
            "as it names the sweep's experiments"
        )
    return Path(folder) / f"{name}{SUFFIX}"


def load_sweep(
    path: Path, head_params_text: str, presets_dir: Path, extra_presets: Sequence[str] = ()
) -> Sweep:
    """Read and validate sweeps/NAME.yaml against HEAD's params text; errors name the
    file and the key. `extra_presets` come after the file's (PRESET= on the command)."""
    where = path.as_posix()
    data = safe_params_data(read_params_text(path), where)
    if not isinstance(data, dict):
        raise PipelineError(f"{where}: expected a mapping at the top level")
    head = safe_params_data(head_params_text, "params.yaml at HEAD")
    if not isinstance(head, dict):
        raise PipelineError("params.yaml at HEAD: expected a mapping at the top level")
    try:
        file = parse(SweepFile, data, "")
        presets = [*file.presets, *extra_presets]
        file = dataclasses.replace(file, presets=tuple(presets))
        base_overrides = combined_overrides(presets_dir, presets, head)
        base = with_overrides(head, base_overrides)
        dimensions = _dimensions(file.space, base)
        _check_grid(file, dimensions)
    except PipelineError as exc:
        raise PipelineError(f"{where}: {exc}") from None
    return Sweep(path.stem, path, file, dimensions, base_overrides)


def _dimensions(space: dict[str, Any], base: dict[str, Any]) -> tuple[Dimension, ...]:
    if not space:
        raise PipelineError("space: empty; give at least one params.yaml key to search")
    if len(space) > MAX_SPACE_KEYS:
        raise PipelineError(f"space: {len(space)} keys, over the limit of {MAX_SPACE_KEYS}")
    return tuple(_dimension(str(key), spec, base) for key, spec in space.items())


def _dimension(key: str, spec: Any, base: dict[str, Any]) -> Dimension:
    where = f"space.{key}"
    if key in RESERVED_KEYS:
        raise PipelineError(f"{where}: set by the sweep itself (seeds, threads); not searchable")
    _leaf(base, key, where)
    if not isinstance(spec, dict):
        raise PipelineError(
            f"{where}: expected {{low: .., high: ..}} or {{choices: [..]}}, got {spec!r}"
        )
    if "choices" in spec:
        unknown = sorted(set(spec) - {"choices"})
        if unknown:
            raise PipelineError(f"{where}: choices take no other keys ({', '.join(unknown)})")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise PipelineError(f"{where}.choices: expected a non-empty list")
        if len(choices) > MAX_CHOICES:
            raise PipelineError(f"{where}.choices: {len(choices)}, over the limit of {MAX_CHOICES}")
        seen = []
        for value in choices:
            if value in seen:
                raise PipelineError(f"{where}.choices: {value!r} is listed twice")
            seen.append(value)
            _check_value(base, key, value, where)
        return Dimension(key, "choice", choices=tuple(choices))
    unknown = sorted(set(spec) - {"low", "high", "log", "step"})
    if unknown or "low" not in spec or "high" not in spec:
        raise PipelineError(
            f"{where}: a range is {{low, high}} with optional log and step"
            + (f"; unknown: {', '.join(map(str, unknown))}" if unknown else "")
        )
    hint = _field_type(key)
    if hint not in (int, float):
        raise PipelineError(f"{where}: not a number in params.yaml; search it with choices")
    kind: Literal["int", "float"] = "int" if hint is int else "float"
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for name, value in (("low", low), ("high", high), ("step", step)):
        if value is None and name == "step":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PipelineError(f"{where}.{name}: expected a number, got {value!r}")
        if kind == "int" and not isinstance(value, int):
            raise PipelineError(f"{where}.{name}: {key} is an integer; got {value!r}")
        if not math.isfinite(value):
            raise PipelineError(f"{where}.{name}: must be finite")
    if not isinstance(log, bool):
        raise PipelineError(f"{where}.log: expected true or false")
    if not low < high:
        raise PipelineError(f"{where}: empty range (low {low} is not below high {high})")
    if log and low <= 0:
        raise PipelineError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None and (step <= 0 or step > high - low):
        raise PipelineError(f"{where}.step: must be in (0, high - low], got {step}")
    if log and step is not None:
        raise PipelineError(f"{where}: give log or step, not both")
    for value in (low, high):
        _check_value(base, key, value, where)
    if kind == "int" and step is None:
        step = 1
    return Dimension(key, kind, float(low), float(high), log, step)


def _leaf(base: dict[str, Any], key: str, where: str) -> Any:
    node: Any = base
    path = key.split(".")
    for depth, part in enumerate(path):
        if not isinstance(node, dict) or part not in node:
            section = ".".join(path[:depth])
            keys = ", ".join(map(str, node)) if isinstance(node, dict) else "no keys"
            place = f"section {section}" if section else "params.yaml"
            raise PipelineError(f"{where}: {key} is not in params.yaml; {place} has: {keys}")
        node = node[part]
    if isinstance(node, dict) and node:
        raise PipelineError(f"{where}: {key} is a section of params.yaml; search its keys")
    return node


def _field_type(key: str) -> Any:
    """The type params.yaml's config classes give `key` (int, float, str, a tuple...)."""
    hint: Any = Params
    for part in key.split("."):
        hint = typing.get_type_hints(hint)[part]
    return hint


def _check_value(base: dict[str, Any], key: str, value: Any, where: str) -> None:
    """The stages would accept params with `key` set to `value` (the rest as the base)."""
    try:
        parse_params(with_overrides(base, {key: value}))
    except PipelineError as exc:
        raise PipelineError(f"{where}: {value!r} is refused: {exc}") from None


def _check_grid(file: SweepFile, dimensions: tuple[Dimension, ...]) -> None:
    if file.sampler.name != "grid":
        return
    size = 1
    for dimension in dimensions:
        if dimension.log:
            raise PipelineError(f"space.{dimension.key}: a grid takes no log ranges; give a step")
        size *= len(dimension.grid_points())
        if size > MAX_GRID_POINTS:
            raise PipelineError(f"space: the grid has over {MAX_GRID_POINTS} points; narrow it")
    if file.trials > size:
        raise PipelineError(f"trials: {file.trials}, but the grid has only {size} points")
