"""What the tests share to run this repository's own code as a subprocess: where the
repository is, and the environment that makes a child Python import its `src/` (ahead of
any installed copy)."""

import os
from pathlib import Path

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
