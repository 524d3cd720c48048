"""Pre-flight check of params.yaml, run by `make repro` before `dvc repro`.

DVC reads params.yaml itself, before any stage can validate it, with a YAML loader
that expands aliases: a few hundred bytes of nested aliases (a "billion laughs")
make `dvc status` take more than 4 GiB. So this script, first: the file is at most
MAX_PARAMS_BYTES, holds no YAML anchors or aliases (found in the token stream,
before anything is built), and validates as the stages will read it. It also asks
for MIN_FREE_BYTES of free disk: DVC truncates dvc.lock when the disk fills while
it copies outputs into its cache.

Usage: python scripts/check_params.py [params.yaml]; exit 0 if fine, else 1 and one line.
"""

import shutil
import sys
from pathlib import Path

import yaml

from mnist_pipeline.config.params import load_params
from mnist_pipeline.errors import PipelineError

MAX_PARAMS_BYTES = 1_000_000  # ours is ~3 kB
# Raw (55 MB), prepared (55 MB) and model files, each also copied into DVC's cache.
MIN_FREE_BYTES = 1_000_000_000


def check_params_file(path: Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Raise a one-line PipelineError naming `path` and the problem, if there is one."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PARAMS_BYTES + 1)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    if len(data) > MAX_PARAMS_BYTES:
        raise PipelineError(f"{path}: larger than the limit of {MAX_PARAMS_BYTES} bytes")
    try:
        for token in yaml.scan(data.decode()):
            if isinstance(token, yaml.AliasToken | yaml.AnchorToken):
                line = token.start_mark.line + 1
                raise PipelineError(
                    f"{path}: line {line}: YAML anchors and aliases (&name, *name) are not "
                    "allowed; write the values out"
                )
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    load_params(path)
    free_bytes = shutil.disk_usage(Path(path).resolve().parent).free
    if free_bytes < min_free_bytes:
        raise PipelineError(
            f"{Path(path).resolve().parent}: {free_bytes} bytes free, fewer than the "
            f"{min_free_bytes} a run needs (DVC truncates dvc.lock when the disk fills)"
        )


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "params.yaml")
    try:
        check_params_file(path)
    except PipelineError as exc:
        print(f"check_params.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
