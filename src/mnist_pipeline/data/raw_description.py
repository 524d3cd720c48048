"""The raw directory's dataset.json (written by the fetch stage), read and checked.

It names the data set, the format of the files beside it (pickle or idx), the
class names and each file's md5 and size; prepare reads the files only if
they are there with the recorded sizes.
"""

from pathlib import Path
from typing import Any

from mnist_pipeline.data.registry import DATASETS, NUM_CLASSES
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import read_json

DESCRIPTION_FILE = "dataset.json"


def read_description(raw_dir: Path) -> dict[str, Any]:
    """dataset.json, checked against the files beside it (present, recorded size)."""
    path = raw_dir / DESCRIPTION_FILE
    description = read_json(path, "run `dvc repro fetch` first")
    problem = _description_problem(description)
    if problem:
        raise PipelineError(f"{path}: {problem}; re-run `dvc repro fetch`")
    for name in DATASETS[description["dataset"]].files(description["format"]):
        record = description["files"][name]
        size = (raw_dir / name).stat().st_size if (raw_dir / name).is_file() else None
        if size != record.get("bytes"):
            found = "missing" if size is None else f"{size} bytes"
            raise PipelineError(
                f"{raw_dir / name}: {found}, but {path.name} records "
                f"{record.get('bytes')} bytes; re-run `dvc repro fetch`"
            )
    return description


def _description_problem(description: Any) -> str | None:
    if not isinstance(description, dict):
        return "expected a JSON object"
    if not isinstance(description.get("dataset"), str) or description["dataset"] not in DATASETS:
        return f"unknown dataset {description.get('dataset')!r}"
    fmt = description.get("format")
    if fmt not in ("pickle", "idx"):
        return f"unknown format {fmt!r}, expected pickle or idx"
    names = description.get("class_names")
    if (
        not isinstance(names, list)
        or len(names) != NUM_CLASSES
        or not all(isinstance(n, str) for n in names)
    ):
        return f"class_names must be a list of {NUM_CLASSES} strings"
    files = description.get("files")
    needed = DATASETS[description["dataset"]].files(fmt)
    if not isinstance(files, dict) or not all(isinstance(files.get(n), dict) for n in needed):
        return f"files must describe {', '.join(needed)}"
    return None
