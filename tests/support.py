"""What the tests share to run this repository's own code: where the repository is, the
environment that makes a child Python import its `src/` (ahead of any installed copy),
its scripts (stages/, scripts/) as modules, to call in this process; and the guard that
keeps the checkout's working params.yaml (a user's edits) out of every test."""

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


WORKING_PARAMS = str(REPO / "params.yaml")


class WorkingParamsRead(RuntimeError):
    """A test opened the checkout's working params.yaml."""


def refuse_working_params(event: str, args: tuple[object, ...]) -> None:
    """Audit hook: opening the working params.yaml in this process is an error, so a
    user's edits there can never change what a test checks."""
    if event != "open" or not isinstance(args[0], str | bytes | os.PathLike):
        return
    path = os.fsdecode(args[0])
    if path.endswith("params.yaml") and os.path.abspath(path) == WORKING_PARAMS:
        raise WorkingParamsRead(
            f"{path}: a test read the working params.yaml (a user's edits); read "
            "committed_text(REPO, 'params.yaml') or use the committed_params fixture"
        )
