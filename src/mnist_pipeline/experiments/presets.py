"""Presets: named sets of params.yaml overrides, one small YAML file each (presets/NAME.yaml,
nested by section like params.yaml), turned into the `-S section.key=value` arguments of
`dvc exp run` (scripts/exp.py, `make exp PRESET=NAME`).

`-S` values are read by Hydra's override grammar (what DVC uses), not by a YAML parser, so
`format_value` writes each value in the form Hydra reads back as the same YAML value.
"""

import re
from pathlib import Path
from typing import Any

from mnist_pipeline.config.strict import load_yaml_mapping
from mnist_pipeline.errors import PipelineError

SUFFIX = ".yaml"

# Strings Hydra reads unquoted as the same string: a letter, `_` or `/` first (a digit or
# sign could make a number), then only characters its grammar takes literally.
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./+\-]*")
# Unquoted words Hydra reads as something else (any letter case): null, booleans, floats.
_KEYWORDS = {"null", "true", "false", "inf", "nan"}


def preset_names(folder: Path) -> list[str]:
    """The presets in `folder`: its *.yaml files, without the suffix, sorted."""
    return sorted(path.stem for path in Path(folder).glob(f"*{SUFFIX}") if path.is_file())


def load_preset(folder: Path, name: str) -> dict[str, Any]:
    """The overrides of preset `name` (folder/name.yaml) as a nested mapping."""
    names = preset_names(folder)
    if name not in names:
        valid = ", ".join(names) or f"none: {folder} has no *{SUFFIX} files"
        raise PipelineError(f"unknown preset {name!r}; valid presets: {valid}")
    path = Path(folder) / f"{name}{SUFFIX}"
    data = load_yaml_mapping(path)
    if not data:
        raise PipelineError(f"{path}: expected a mapping of params.yaml sections to overrides")
    return data


def overrides(preset: dict[str, Any], params: dict[str, Any], source: str) -> dict[str, Any]:
    """The preset's overrides as dotted key -> value, in file order, after checking that
    every key exists in `params` (the parsed params.yaml) with the same nesting.

    `source` names the preset in error messages.
    """
    flat: dict[str, Any] = {}
    _flatten(preset, params, "", source, flat)
    return flat


def _flatten(
    preset: dict[str, Any], params: dict[str, Any], prefix: str, source: str, out: dict[str, Any]
) -> None:
    for key, value in preset.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in params:
            where = f"section {prefix[:-1]}" if prefix else "params.yaml"
            valid = ", ".join(str(k) for k in params)
            raise PipelineError(f"{source}: {dotted} is not in params.yaml; {where} has: {valid}")
        current = params[key]
        if isinstance(current, dict) and current:  # a section: its keys are checked one by one
            if not isinstance(value, dict):
                raise PipelineError(
                    f"{source}: {dotted} is a section of params.yaml; give a mapping of its keys"
                )
            _flatten(value, current, f"{dotted}.", source, out)
        elif isinstance(value, dict):
            # Hydra cannot replace a mapping with `-S key=value` (only merge into it).
            raise PipelineError(
                f"{source}: {dotted}: a preset cannot set a mapping; edit params.yaml"
            )
        else:
            out[dotted] = value


def combined_overrides(folder: Path, names: list[str], params: dict[str, Any]) -> dict[str, Any]:
    """The overrides of several presets applied in order (a later one wins on a shared key),
    as dotted key -> value."""
    flat: dict[str, Any] = {}
    for name in names:
        source = f"{Path(folder).name}/{name}{SUFFIX}"  # as the user knows it: presets/NAME.yaml
        flat.update(overrides(load_preset(folder, name), params, source))
    return flat


def format_value(value: Any) -> str:
    """`value` as Hydra's override grammar writes it: null, true/false, numbers, strings
    (quoted where needed), [lists]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # Hydra reads repr's forms (1e-05, inf, -0.0) as the same number
    if isinstance(value, str):
        return _format_string(value)
    if isinstance(value, list):
        return "[" + ",".join(format_value(item) for item in value) + "]"
    raise PipelineError(f"cannot write a {type(value).__name__} as a dvc -S value: {value!r}")


def _format_string(text: str) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _KEYWORDS:
        return text
    quote = "'" if "'" not in text or '"' in text else '"'

    # In Hydra's quoted strings `\` escapes the quote and `${` (else `${` interpolates), so a
    # run of backslashes before either must be doubled to stay literal, as before the
    # closing quote.
    def escape(match: re.Match[str]) -> str:
        slashes, tail = match.group(1), match.group(2)
        return slashes * 2 + ("\\" + tail if tail else "")

    body = re.sub(rf"(\\*)({re.escape(quote)}|\$\{{|$)", escape, text)
    return f"{quote}{body}{quote}"


def set_arguments(flat: dict[str, Any]) -> list[str]:
    """`dvc exp run` arguments for dotted key -> value overrides: -S key=value, ..."""
    arguments = []
    for key, value in flat.items():
        arguments += ["-S", f"{key}={format_value(value)}"]
    return arguments
