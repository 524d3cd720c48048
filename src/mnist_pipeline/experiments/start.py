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
