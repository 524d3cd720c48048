"""Turn plain YAML mappings into frozen dataclasses, strictly.

Unknown keys, missing keys and wrong types are errors that name the full
dotted key (`train.lr: expected a number, got 'fast'`). Range checks live in
each dataclass's `__post_init__`, which may call `check` below.
"""

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, cast

import yaml

from mnist_pipeline.errors import PipelineError

T = TypeVar("T")
YAML12_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping at the top level")
    return data


def parse(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from mapping `data`; `where` is the dotted key for errors."""
    if not isinstance(data, dict):
        raise PipelineError(f"{where or 'top level'}: expected a mapping, got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cast(Any, cls)) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise PipelineError(
            f"{where or 'top level'}: unknown key(s) {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        key = _join(where, name)
        if name in data:
            values[name] = _convert(hints[name], data[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise PipelineError(f"{key}: missing; every key must be given")
    try:
        return cls(**values)
    except PipelineError as exc:
        # __post_init__ checks name the field only; prefix the section.
        raise PipelineError(_join(where, str(exc))) from None


def merged(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """A copy of mapping `base` with `updates` merged in key by key: a nested mapping
    merges into the mapping it meets, anything else (lists included) replaces."""
    result = dict(base)
    for key, value in updates.items():
        current = result.get(key)
        if isinstance(value, dict) and value and isinstance(current, dict):
            result[key] = merged(current, value)
        else:
            result[key] = value
    return result


def check(ok: bool, key: str, message: str) -> None:
    """Raise `key: message` unless `ok` (used by `__post_init__` range checks)."""
    if not ok:
        raise PipelineError(f"{key}: {message}")


def _convert(hint: Any, value: Any, key: str) -> Any:
    if hint is Any:  # checked by its owner (a sweep's space, against params.yaml)
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return parse(hint, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for inner in options:  # the first type that accepts the value wins
            try:
                return _convert(inner, value, key)
            except PipelineError as exc:
                errors.append(str(exc).removeprefix(f"{key}: "))
        raise PipelineError(f"{key}: {' or '.join(errors)}")
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(map(str, args))
            raise PipelineError(f"{key}: {_show(value)} is not one of: {allowed}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise PipelineError(f"{key}: expected a list, got {_show(value)}")
        return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise PipelineError(f"{key}: expected a mapping, got {_show(value)}")
        return {
            _convert(args[0], k, key): _convert(args[1], v, _join(key, k)) for k, v in value.items()
        }
    return _convert_scalar(hint, value, key)


def _convert_scalar(hint: Any, value: Any, key: str) -> Any:
    # bool is a subclass of int in Python; `epochs: true` must not become 1.
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise PipelineError(f"{key}: expected true or false, got {_show(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise PipelineError(f"{key}: expected an integer, got {_show(value)}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _finite(value, key)
        # PyYAML follows YAML 1.1, where `1e-05` (no dot) is a string; DVC writes floats
        # that way (`dvc exp run -S train.lr=1e-05`), so a float field reads them as YAML 1.2.
        if isinstance(value, str) and YAML12_FLOAT.fullmatch(value.strip()):
            return _finite(value, key)
        raise PipelineError(f"{key}: expected a number, got {_show(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise PipelineError(f"{key}: expected a string, got {_show(value)}")
    raise TypeError(f"{key}: unsupported type hint {hint!r}")  # a bug in a config class


def _finite(value: int | float | str, key: str) -> float:
    """`value` as a float, refused unless finite: NaN compares false with everything, so no
    range check could be trusted with it, and no param means infinity (`1e999` reads as it)."""
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise PipelineError(f"{key}: must be a finite number, got {_show(value)}")
    return number


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else str(name)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
