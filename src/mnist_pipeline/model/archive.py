"""Bounds on a file `torch.save` wrote (a checkpoint, a training state), checked before
and after `torch.load(weights_only=True)` so that what it materializes is bounded by
what the file really holds.

`torch.load` trusts the archive: a zip entry may be deflate-compressed (a 1 MB file
holding 1 GB), and a tensor may be a stride-0 view of a few bytes that claims any shape,
which `load_state_dict` then fills into a model built at that size. `torch.save` writes
neither, so both are refused:

- `check_archive` before loading: the file is a zip whose central directory is small
  (read from the end record first, so a directory of millions of entries is never
  parsed), every entry is stored uncompressed, the pickle is small, the total is capped.
- `check_tensors` after loading: every tensor's storage holds at least as many bytes as
  its values (no stride-0 views) and every floating one is finite (a NaN weight gives NaN
  probabilities downstream).
"""

import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from mnist_pipeline.errors import PipelineError

MAX_ENTRIES = 10_000  # a state dict's tensors plus torch's bookkeeping files: < 200 in practice
MAX_DIRECTORY_BYTES = 4_000_000  # the zip's central directory (~100 bytes per entry)
MAX_PICKLE_BYTES = 8_000_000  # the object tree: names, configs, class names, a run's history
MAX_DEPTH = 32  # nesting of the loaded containers (a state dict is 4 deep)
_END_RECORD = struct.Struct("<4s4H2LH")  # zip end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")
_MAX_COMMENT = 0xFFFF


def check_archive(path: Path, max_bytes: int, what: str) -> None:
    """Refuse `path` unless it is a zip `torch.save` could have written within `max_bytes`
    of entries; the error names the file (a `what`: checkpoint, training state) and the
    limit it broke."""
    try:
        with open(path, "rb") as file:
            entries, directory_bytes = _directory_size(file)
            if entries > MAX_ENTRIES or directory_bytes > MAX_DIRECTORY_BYTES:
                raise PipelineError(
                    f"{path}: a zip of {entries} entries ({directory_bytes} directory bytes); "
                    f"torch.save writes at most {MAX_ENTRIES}"
                )
            file.seek(0)
            with zipfile.ZipFile(file) as archive:
                infos = archive.infolist()
    except (OSError, zipfile.BadZipFile, struct.error) as exc:
        raise PipelineError(f"{path}: not a readable {what} ({exc})") from None
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise PipelineError(
                f"{path}: entry {info.filename!r} is compressed; torch.save stores entries "
                "uncompressed, so this file was not written by it"
            )
        if info.filename.endswith("data.pkl") and info.file_size > MAX_PICKLE_BYTES:
            raise PipelineError(
                f"{path}: its object tree is {info.file_size} bytes, over the limit of "
                f"{MAX_PICKLE_BYTES}"
            )
        total += info.file_size
    if total > max_bytes:
        raise PipelineError(f"{path}: holds {total} bytes, over the limit of {max_bytes}")


def _directory_size(file: BinaryIO) -> tuple[int, int]:
    """(entries, central directory bytes) from the zip's end record (zip64 too)."""
    size = file.seek(0, 2)
    tail_start = max(0, size - _END_RECORD.size - _MAX_COMMENT)
    file.seek(tail_start)
    tail = file.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _END_RECORD.size:
        raise zipfile.BadZipFile("no zip end record")
    fields = _END_RECORD.unpack_from(tail, at)
    entries, directory_bytes = fields[4], fields[5]
    if entries != 0xFFFF and directory_bytes != 0xFFFFFFFF:
        return entries, directory_bytes
    locator_at = tail_start + at - _ZIP64_LOCATOR.size
    if locator_at < 0:
        raise zipfile.BadZipFile("zip64 end record missing")
    file.seek(locator_at)
    signature, _, end_offset, _ = _ZIP64_LOCATOR.unpack(file.read(_ZIP64_LOCATOR.size))
    if signature != b"PK\x06\x07" or end_offset > size:
        raise zipfile.BadZipFile("zip64 end record missing")
    file.seek(end_offset)
    end = _ZIP64_END.unpack(file.read(_ZIP64_END.size))
    if end[0] != b"PK\x06\x06":
        raise zipfile.BadZipFile("zip64 end record missing")
    return end[7], end[8]


def check_tensors(path: Path, tree: Any) -> None:
    """Every tensor in the loaded `tree` is dense and, if floating, finite."""
    for where, tensor in _tensors(tree, "", 0, path):
        needed = tensor.numel() * tensor.element_size()
        stored = tensor.untyped_storage().nbytes()
        if stored < needed:  # any memory layout (channels_last too), but no stride-0 views
            raise PipelineError(
                f"{path}: tensor {where} of shape {list(tensor.shape)} is a view of "
                f"{stored} stored bytes, not {needed}; torch.save writes every tensor whole"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise PipelineError(f"{path}: tensor {where} holds NaN or infinite values")


def _tensors(tree: Any, where: str, depth: int, path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    if depth > MAX_DEPTH:
        raise PipelineError(f"{path}: nested deeper than {MAX_DEPTH} levels at {where}")
    if isinstance(tree, torch.Tensor):
        yield where or "(top level)", tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _tensors(value, f"{where}.{key}" if where else str(key), depth + 1, path)
    elif isinstance(tree, list | tuple):
        for index, value in enumerate(tree):
            yield from _tensors(value, f"{where}[{index}]", depth + 1, path)
