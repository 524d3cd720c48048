"""Where a new experiment starts: the committed params.yaml (HEAD's), with presets on top.

The workspace keeps the params of the last experiment run in it (`dvc exp run` applies
its result there) and a preset overrides only some keys, so starting from the workspace
would carry one experiment's settings into the next. `make exp` therefore starts from
HEAD's params.yaml, validated with the presets applied before DVC runs anything, and
names the workspace changes it sets aside.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.config.params import Params, parse_params
from mnist_pipeline.config.preflight import safe_params_data
from mnist_pipeline.config.strict import merged
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.experiments.presets import combined_overrides

SHOWN_CHANGES = 6  # workspace changes named one by one; the rest are counted
MAX_RUNS = 1000  # experiments one command may ask for (-S 'a=1,2' -S 'b=3,4' makes 4)
PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class Start:
    text: str  # params.yaml as the experiment starts from it (HEAD's, byte for byte)
    overrides: dict[str, Any]  # the presets' dotted key -> value, in order
    params: Params  # the start with the presets applied, validated
    set_aside: dict[str, tuple[Any, Any]]  # dotted key -> (workspace, HEAD) where they differ


def plan_start(
    head_text: str,
    workspace_text: str | None,
    presets_dir: Path,
    presets: Sequence[str],
    where: str = "params.yaml at HEAD",
) -> Start:
    """The start of an experiment with `presets` from HEAD's params text (`where` names
    it in errors); an unreadable workspace file is set aside whole."""
    head = safe_params_data(head_text, where)
    if not isinstance(head, dict):
        raise PipelineError(f"{where}: expected a mapping at the top level")
    flat = combined_overrides(presets_dir, list(presets), head)
    try:
        params = parse_params(with_overrides(head, flat))
    except PipelineError as exc:
        with_presets = f" with preset(s) {' '.join(presets)}" if presets else ""
        raise PipelineError(f"{where}{with_presets}: {exc}") from None
    return Start(head_text, flat, params, set_aside(workspace_text, head))


def with_overrides(params: dict[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    """`params` (nested) with dotted key -> value overrides applied."""
    result = params
    for dotted, value in flat.items():
        *sections, name = dotted.split(".")
        update: dict[str, Any] = {name: value}
        for section in reversed(sections):
            update = {section: update}
        result = merged(result, update)
    return result


def set_aside(workspace_text: str | None, head: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (workspace value, HEAD value) for every leaf that differs."""
    if workspace_text is None or workspace_text == "":
        return {}
    try:
        workspace = yaml.safe_load(workspace_text)
    except yaml.YAMLError:
        workspace = None
    if not isinstance(workspace, dict):
        return {"params.yaml": ("(not a valid params file)", "(HEAD's)")}
    return changed_leaves(workspace, head)


def changed_leaves(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ""
) -> dict[str, tuple[Any, Any]]:
    """Dotted name -> (old, new) for every leaf that differs between two nested mappings
    (None stands for a key one side lacks), sorted by name."""
    changed: dict[str, tuple[Any, Any]] = {}
    for key in sorted(old.keys() | new.keys(), key=str):
        a, b, name = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping) and (a or b):
            changed.update(changed_leaves(a, b, f"{name}."))
        elif a != b:
            changed[name] = (a, b)
    return changed


def describe_set_aside(changes: Mapping[str, tuple[Any, Any]]) -> str | None:
    """One line naming the workspace changes an experiment does not start from; None if
    there are none."""
    if not changes:
        return None
    shown = [
        f"{key}: {_short(workspace)} (HEAD: {_short(head)})"
        for key, (workspace, head) in list(changes.items())[:SHOWN_CHANGES]
    ]
    more = len(changes) - len(shown)
    listed = ", ".join(shown) + (f" and {more} more" if more > 0 else "")
    return (
        f"params.yaml starts from HEAD's; the workspace's changes are set aside: {listed} "
        "(to run one, add it to ARGS: -S key=value)"
    )


def _short(value: Any) -> str:
    text = " ".join(repr(value).split()) if isinstance(value, str) else str(value)
    text = "".join(char if char.isprintable() else "?" for char in text)
    return text if len(text) <= 40 else text[:37] + "..."


def set_param_values(dvc_args: Sequence[str]) -> list[str]:
    """The values of `-S` / `--set-param` in `dvc exp run` arguments, in order."""
    values = []
    index = 0
    while index < len(dvc_args):
        arg = dvc_args[index]
        if arg in ("-S", "--set-param") and index + 1 < len(dvc_args):
            values.append(dvc_args[index + 1])
            index += 2
            continue
        if arg.startswith("--set-param="):
            values.append(arg.split("=", 1)[1])
        elif arg.startswith("-S") and len(arg) > 2:
            values.append(arg[2:])
        index += 1
    return values


def check_runs(start: Start, set_params: Sequence[str], workdir: Path) -> int:
    """Validate, as the stages will, the params of every experiment that `dvc exp run`
    makes of HEAD's params, the presets and `set_params` (-S values, a grid included);
    returns how many there are. A key that params.yaml lacks, or an override that adds
    or deletes keys, is refused with params.yaml's own keys named: DVC would suggest
    `+key=value`, which adds the typo. `workdir` takes the temporary files."""
    # DVC's own override parser and sweep split, so the check reads -S as DVC will; imported
    # here, as only exp.py needs them and they take a second to import.
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides, get_hydra_sweeps, to_hydra_overrides
    from hydra.errors import HydraException

    from mnist_pipeline.config.params import load_params
    from mnist_pipeline.experiments.presets import overrides, set_arguments

    head = yaml.safe_load(start.text)
    given = [value.removeprefix(f"{PARAMS_FILE}:") for value in set_params]
    for value in given:
        try:
            (parsed,) = to_hydra_overrides([value])
        except HydraException as exc:
            reason = " ".join(str(exc).split())[:200]
            raise PipelineError(f"-S {value}: not a valid override ({reason})") from None
        key = parsed.key_or_group
        if parsed.is_add() or parsed.is_force_add() or parsed.is_delete():
            raise PipelineError(
                f"-S {value}: params.yaml's keys are fixed; set an existing one (key=value)"
            )
        placeholder: dict[str, Any] = {}
        for part in reversed(key.split(".")):
            placeholder = {part: placeholder or None}
        overrides(placeholder, head, f"-S {value}")
    preset_values = set_arguments(start.overrides)[1::2]
    try:
        sweeps = get_hydra_sweeps({PARAMS_FILE: [*preset_values, *given]})
    except (HydraException, InvalidArgumentError) as exc:
        raise PipelineError(f"-S: {' '.join(str(exc).split())[:200]}") from None
    if len(sweeps) > MAX_RUNS:
        raise PipelineError(f"-S: {len(sweeps)} experiments; at most {MAX_RUNS} per command")
    path = workdir / PARAMS_FILE
    for sweep in sweeps:
        path.write_text(start.text)
        try:
            apply_overrides(path, sweep[PARAMS_FILE])
            load_params(path)
        except (HydraException, InvalidArgumentError) as exc:
            raise PipelineError(f"-S: {' '.join(str(exc).split())[:200]}") from None
        except PipelineError as exc:
            chosen = " ".join(value for value in sweep[PARAMS_FILE] if value not in preset_values)
            where = f" with -S {chosen}" if chosen else ""
            message = str(exc).removeprefix(f"{path}: ")
            raise PipelineError(f"params.yaml at HEAD{where}: {message}") from None
    return len(sweeps)
