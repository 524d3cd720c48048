"""What the tests share to run this repository's own code: where the repository is, the
environment that makes a child Python import its `src/` (ahead of any installed copy),
and its scripts (stages/, scripts/) as modules, to call in this process."""

import importlib.util
import os
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def python_env(
    *paths: Path | str, base: dict[str, str] | None = None, **variables: str
) -> dict[str, str]:
    """`base` (this process's environment by default) with PYTHONPATH set to `paths`, then
    this repository's src, and `variables` added."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(SRC)])
    env.update(variables)
    return env


def load_script(relative: str) -> ModuleType:
    """A script of this repository (e.g. "stages/train.py") imported as a module, without
    running its `__main__` block: its parser, `main` and helpers, to call in-process."""
    path = REPO / relative
    name = "script_" + "_".join(path.with_suffix("").parts[-2:])
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
