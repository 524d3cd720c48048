"""The pre-flight check of params.yaml, before DVC reads it (`make repro`, `make exp`).

DVC reads params.yaml itself, before any stage can validate it, with a YAML loader
that expands aliases: a few hundred bytes of nested aliases (a "billion laughs")
make `dvc status` take more than 4 GiB. So, first: the file is at most
MAX_PARAMS_BYTES, holds no YAML anchors or aliases (found in the token stream,
before anything is built), and validates as the stages will read it. A run also
needs MIN_FREE_BYTES of free disk: DVC truncates dvc.lock when the disk fills while
it copies outputs into its cache.
"""

import shutil
from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.config.params import Params, load_params
from mnist_pipeline.errors import PipelineError

MAX_PARAMS_BYTES = 1_000_000  # ours is ~3 kB
# Raw (55 MB), prepared (55 MB) and model files, each also copied into DVC's cache.
MIN_FREE_BYTES = 1_000_000_000


def read_params_text(path: Path) -> str:
    """The file's text, at most MAX_PARAMS_BYTES of it, or a one-line error."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PARAMS_BYTES + 1)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_PARAMS_BYTES:
        raise PipelineError(f"{path}: larger than the limit of {MAX_PARAMS_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not UTF-8 text") from None


def safe_params_data(text: str, where: str) -> Any:
    """The YAML of params text, refused if it holds anchors or aliases (before anything
    is built from it) or is not valid YAML; `where` names it in errors."""
    if len(text) > MAX_PARAMS_BYTES:
        raise PipelineError(f"{where}: larger than the limit of {MAX_PARAMS_BYTES} bytes")
    try:
        for token in yaml.scan(text):
            if isinstance(token, yaml.AliasToken | yaml.AnchorToken):
                line = token.start_mark.line + 1
                raise PipelineError(
                    f"{where}: line {line}: YAML anchors and aliases (&name, *name) are not "
                    "allowed; write the values out"
                )
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PipelineError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None


def check_free_disk(folder: Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    free_bytes = shutil.disk_usage(folder).free
    if free_bytes < min_free_bytes:
        raise PipelineError(
            f"{folder}: {free_bytes} bytes free, fewer than the "
            f"{min_free_bytes} a run needs (DVC truncates dvc.lock when the disk fills)"
        )


def check_params_file(path: Path, min_free_bytes: int = MIN_FREE_BYTES) -> Params:
    """The validated params of `path`, or a one-line PipelineError naming `path` and
    the problem: size, anchors or aliases, validity, free disk."""
    safe_params_data(read_params_text(path), str(path))
    params = load_params(path)
    check_free_disk(Path(path).resolve().parent, min_free_bytes)
    return params
