"""What the review report reads, bounded before it is read or parsed.

A file comes from a git revision (its size asked with `git cat-file -s` before its
content is read) or from the workspace (at most its limit + 1 bytes read); each kind has
a limit far above what the pipeline writes, and what is parsed from it is bounded too
(nesting depth, number of values, length of names, number of classes). A file past a
limit is a PipelineError of one line naming the file, where it is (the revision or the
workspace) and the limit. A 36 MB metrics file at the base once took 1.2 GB and wrote a
74 MB report.
"""

import csv
import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mnist_pipeline import gitrepo
from mnist_pipeline.config import params as param_limits
from mnist_pipeline.config import preflight
from mnist_pipeline.data.registry import MAX_CLASSES
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.review.report import per_class_scores
from mnist_pipeline.review.report_figures import SPLIT_DASHES, curve

# Bytes per file kind. Parsed JSON or YAML takes ~10x its size in memory, so 1 MB each.
MAX_METRICS_BYTES = param_limits.MAX_METRICS_BYTES  # 1 MB (evaluate.json ~2 kB)
MAX_PARAMS_BYTES = preflight.MAX_PARAMS_BYTES  # 1 MB, as `make repro` accepts (ours ~3 kB)
MAX_SEEDS_BYTES = 1_000_000  # seeds.json: 5 numbers per metric, ~6 kB for ours
# predictions_test.csv: "label,predicted,confidence" per test image, ~110 kB for the
# 10,000 of (Fashion-)MNIST, ~150 kB with 1000 classes' 3-digit labels: 13x room.
MAX_PREDICTIONS_BYTES = 2_000_000
# per_class_test.csv: MAX_CLASSES rows of a name of at most MAX_CLASS_NAME_CHARS (100,
# quoted, up to 4 bytes a character in UTF-8) and 4 numbers: under 500 kB.
MAX_PER_CLASS_BYTES = 1_000_000
# Training-log TSVs: a row per epoch (at most MAX_EPOCHS, 10,000) of ~40 bytes: 400 kB.
MAX_CURVE_BYTES = 1_000_000

# A parsed metrics, params or seeds mapping. Ours: depth 3 (seeds.json), ~60 values
# (params.yaml), names under 40 characters; every class's F1 for two splits (2,000
# values) would still fit.
MAX_DEPTH = 16  # nested mappings and lists; also keeps json/yaml/flatten off recursion limits
MAX_LEAVES = 5_000  # values (a list counts its items), so the tables have at most this many rows
MAX_NAME_CHARS = 200  # a dotted name (`test.accuracy`), a row's first cell


def where(path: Path, rev: str | None) -> str:
    """`path at REV`, or `path in the workspace`: the start of every error here."""
    return f"{path.as_posix()} " + ("in the workspace" if rev is None else f"at {rev}")


def _decode(data: bytes, path: Path, rev: str | None) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise PipelineError(f"{where(path, rev)}: not UTF-8 text") from None


def _too_large(path: Path, rev: str | None, size: int | None, limit: int) -> PipelineError:
    """`size`: the file's, where known (git says it; the workspace's is read no further)."""
    what = "larger than" if size is None else f"{size:,} bytes, over"
    return PipelineError(f"{where(path, rev)}: {what} the limit of {limit:,} bytes for this file")


def workspace_text(path: Path, limit: int) -> str | None:
    """The file's text in the workspace, None if it is not a file there; at most `limit`
    bytes are accepted, and at most `limit` + 1 read."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise PipelineError(f"{where(path, None)}: cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise _too_large(path, None, None, limit)
    return _decode(data, path, None)


def text_at(rev: str, path: Path, limit: int) -> str | None:
    """The file's text at `rev` (relative to the current directory, as typed), None if it
    is not there; its size is checked before its content is read."""
    found = gitrepo.blob_size_at(Path.cwd(), rev, path.as_posix())
    if found is None:
        return None
    oid, size = found
    if size > limit:
        raise _too_large(path, rev, size, limit)
    data = gitrepo.blob_bytes(Path.cwd(), oid)
    if data is None:
        raise PipelineError(f"{where(path, rev)}: git could not read it")
    return _decode(data, path, rev)


def check_tree(data: Any, place: str) -> None:
    """Refuse a parsed mapping deeper than MAX_DEPTH, with more than MAX_LEAVES values or
    a dotted name longer than MAX_NAME_CHARS; iterative, and it stops at the first excess."""
    leaves = 0
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        node, name, depth = stack.pop()
        if len(name) > MAX_NAME_CHARS:
            raise PipelineError(
                f"{place}: a name of {len(name):,} characters, over the limit of "
                f"{MAX_NAME_CHARS} ({name[:40]!r}...)"
            )
        if depth > MAX_DEPTH:
            raise PipelineError(f"{place}: nested deeper than the limit of {MAX_DEPTH} levels")
        if isinstance(node, Mapping) and node:
            prefix = f"{name}." if name else ""
            stack += [(value, f"{prefix}{key}", depth + 1) for key, value in node.items()]
        elif isinstance(node, list) and node:
            stack += [(item, name, depth + 1) for item in node]
        else:
            leaves += 1
            if leaves > MAX_LEAVES:
                raise PipelineError(f"{place}: more than the limit of {MAX_LEAVES:,} values")


def parse(text: str, path: Path, rev: str | None) -> dict[str, Any]:
    """A metrics (JSON), params (YAML, no anchors or aliases: a few of them expand to
    billions of values) or seeds (JSON) mapping, bounded by `check_tree`."""
    place = where(path, rev)
    try:
        if path.suffix in (".yaml", ".yml"):
            data = preflight.safe_params_data(text, place)
        else:
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{place}: not valid JSON: {exc}") from None
    except RecursionError:  # thousands of [ or {, before check_tree could count them
        raise PipelineError(f"{place}: nested deeper than the limit of {MAX_DEPTH}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{place}: expected a mapping at the top level")
    check_tree(data, place)
    return data


def parse_both(
    rev: str, path: Path, limit: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(parsed at rev, parsed in the workspace), None where the file is not there."""
    old, new = text_at(rev, path, limit), workspace_text(path, limit)
    return (
        None if old is None else parse(old, path, rev),
        None if new is None else parse(new, path, None),
    )


def parse_workspace(path: Path, limit: int) -> dict[str, Any]:
    """A metrics or params file the workspace must have, parsed (within `limit` bytes)."""
    text = workspace_text(path, limit)
    if text is None:
        raise PipelineError(f"{path}: no such file in the workspace (run `dvc repro` first?)")
    return parse(text, path, None)


def parse_at(rev: str, path: Path, limit: int) -> dict[str, Any] | None:
    """The file at `rev`, parsed (within `limit` bytes); None if it is not there."""
    text = text_at(rev, path, limit)
    return None if text is None else parse(text, path, rev)


def both_texts(rev: str, path: Path | None, limit: int) -> tuple[str | None, str | None]:
    """(text at rev, text in the workspace) of an optional file; None where not there."""
    if path is None:
        return None, None
    return text_at(rev, path, limit), workspace_text(path, limit)


def checked_texts(
    rev: str, path: Path | None, limit: int, check: Callable[[str, Path, str | None], None]
) -> tuple[str | None, str | None]:
    """(text at rev, text in the workspace) of an optional file, each within `limit`
    bytes and passed by `check` (`check_predictions`, ...); None where it is not there."""
    sides = both_texts(rev, path, limit)
    if path is not None:
        for side_rev, text in zip((rev, None), sides, strict=True):
            if text is not None:
                check(text, path, side_rev)
    return sides


def _csv_rows(text: str, place: str) -> list[list[str]]:
    try:
        return list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:  # also a field over csv's own 128 kB limit
        raise PipelineError(f"{place}: not valid CSV: {exc}") from None


def check_predictions(text: str, path: Path, rev: str | None) -> None:
    """Refuse a predictions CSV whose label or predicted is not a class index below
    MAX_CLASSES: the confusion counts have a cell per pair of classes."""
    place = where(path, rev)
    rows = _csv_rows(text, place)
    if not rows:
        return  # the report says which columns it expected
    header = rows[0]
    if "label" not in header or "predicted" not in header:
        return
    columns = (header.index("label"), header.index("predicted"))
    for line, row in enumerate(rows[1:], start=2):
        for column in columns:
            value = row[column] if column < len(row) else ""
            if not (value.isascii() and value.isdigit() and int(value) < MAX_CLASSES):
                raise PipelineError(
                    f"{place}: line {line}: {header[column]} {value[:20]!r} is not a class "
                    f"index from 0 to {MAX_CLASSES - 1}"
                )


def check_curve(text: str, path: Path, rev: str | None) -> None:
    """Refuse a training-log TSV of the current layout with a value that is not a number."""
    for split in SPLIT_DASHES:
        try:
            curve(text, split)
        except ValueError as exc:
            raise PipelineError(f"{where(path, rev)}: {exc}") from None


def check_per_class(text: str, path: Path, rev: str | None) -> None:
    """Refuse a per-class CSV that `per_class_scores` refuses (over MAX_CLASSES rows, a
    name over MAX_CLASS_NAME_CHARS, ...), naming the file and where it is."""
    try:
        per_class_scores(text)
    except ValueError as exc:
        raise PipelineError(f"{where(path, rev)}: {exc}") from None
