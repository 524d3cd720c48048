"""The prepared data: uint8 image shards plus a manifest that describes and checksums them.

Layout of the prepared directory (written by `write_prepared`):

    manifest.json              see `write_prepared`
    train/shard-00000.pt ...   torch.save({"images": uint8 (n, 28, 28), "labels": int64 (n,)})
    valid/...  test/...

Pixels stay the original 8-bit values k = 0..255: the pickle's float32 k/256 and
idx's raw bytes hold the same k, so uint8 is exact and 4x smaller than float32;
the float pixel is stored / `pixel_scale` (255). Shards are plain tensors, so
`torch.load(weights_only=True)` reads them without running code, and each
shard's sha256 in the manifest catches corruption before anything is loaded.

Reading is bounded: manifest.json has a size limit and is validated before use,
and a shard must be a regular file (not a device or FIFO behind a symlink) no
larger than its manifest rows imply.
"""

import hashlib
import io
import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnist_pipeline.data.raw_formats import MAX_IDX_ROWS
from mnist_pipeline.data.registry import IMAGE_SHAPE, SPLITS, class_names_problem
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import read_json, write_json

MANIFEST_FILE = "manifest.json"
PIXEL_SCALE = 255  # float pixel in [0, 1] = stored uint8 / PIXEL_SCALE
HISTOGRAM_CHUNK_ROWS = 4096  # bincount casts to int64: 4096 images -> 25 MB temporary
MANIFEST_KEYS = (
    "dataset",
    "class_names",
    "image_shape",
    "dtype",
    "pixel_scale",
    "train_pixel_mean",
    "train_pixel_std",
    "splits",
)
REBUILD = "re-run `dvc repro prepare`"
MAX_MANIFEST_BYTES = 1_000_000  # ours is ~4 kB; parsed JSON takes ~10x its size in memory
# torch.save's zip container around the two tensors: ~1.5 kB; generous, as its layout may
# change between torch versions.
SHARD_OVERHEAD_BYTES = 65_536
# uint8 pixels + an int64 label make 792 bytes a row; the bound allows 8 bytes per value, so
# that a shard of the wrong dtype is named as such by the content checks.
SHARD_BYTES_PER_ROW = 8 * (math.prod(IMAGE_SHAPE) + 1)


def write_prepared(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: list[str],
    dataset: str,
    shard_size: int,
    out_dir: Path,
) -> dict[str, Any]:
    """Write every split as shards of `shard_size` rows plus manifest.json; return the manifest.

    The same input gives byte-identical files (torch.save output depends only on the tensors).
    """
    out_dir = Path(out_dir)
    mean, std = pixel_mean_std(splits["train"][0])
    manifest: dict[str, Any] = {
        "dataset": dataset,
        "class_names": list(class_names),
        "image_shape": list(IMAGE_SHAPE),
        "dtype": "uint8",
        "pixel_scale": PIXEL_SCALE,
        "train_pixel_mean": mean,  # of stored / 255 over every train pixel
        "train_pixel_std": std,  # population std (ddof 0) of the same
        "splits": {},
    }
    for name, (images, labels) in splits.items():  # in the given order: train, valid, test
        if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(
                f"{name}: expected uint8 images (N, 28, 28), got {images.dtype} {images.shape}"
            )
        manifest["splits"][name] = {
            "rows": len(labels),
            "class_counts": np.bincount(labels, minlength=len(class_names)).tolist(),
            "shards": _write_shards(images, labels, shard_size, out_dir, name),
        }
    write_json(out_dir / MANIFEST_FILE, manifest)
    return manifest


def pixel_mean_std(images_u8: np.ndarray) -> tuple[float, float]:
    """Exact mean and std of images/255 from a 256-bin histogram (no float copy of the data)."""
    flat = images_u8.reshape(len(images_u8), -1)
    counts = np.zeros(256, dtype=np.int64)
    for start in range(0, len(flat), HISTOGRAM_CHUNK_ROWS):
        counts += np.bincount(flat[start : start + HISTOGRAM_CHUNK_ROWS].ravel(), minlength=256)
    values = np.arange(256, dtype=np.float64) / PIXEL_SCALE
    total = counts.sum()
    mean = counts @ values / total
    variance = counts @ (values - mean) ** 2 / total
    return float(mean), float(np.sqrt(variance))


def _write_shards(
    images: np.ndarray, labels: np.ndarray, shard_size: int, out_dir: Path, split: str
) -> list[dict[str, Any]]:
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    shards = []
    for index, start in enumerate(range(0, len(labels), shard_size)):
        rows = slice(start, start + shard_size)
        # np.array copies: torch.save writes a tensor's whole storage, so a view would
        # drag the entire split into every shard.
        payload = {
            "images": torch.from_numpy(np.array(images[rows], dtype=np.uint8, order="C")),
            "labels": torch.from_numpy(np.array(labels[rows], dtype=np.int64)),
        }
        # Saved in memory, the archive's inner folder is always "archive" rather than the
        # file's stem, so the bytes depend on the tensors alone.
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        file = f"{split}/shard-{index:05d}.pt"
        (out_dir / file).write_bytes(data)
        sha256 = hashlib.sha256(data).hexdigest()
        shards.append({"file": file, "rows": len(payload["labels"]), "sha256": sha256})
    return shards


def read_manifest(prepared_dir: Path) -> dict[str, Any]:
    """manifest.json of a prepared directory, with its keys and values checked."""
    path = Path(prepared_dir) / MANIFEST_FILE
    manifest = read_json(path, REBUILD, max_bytes=MAX_MANIFEST_BYTES)
    missing = [k for k in MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise PipelineError(f"{path}: missing {', '.join(missing)}; {REBUILD}")
    problem = _manifest_problem(manifest)
    if problem:
        raise PipelineError(f"{path}: {problem}; {REBUILD}")
    return manifest


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the manifest's values, if anything (one phrase)."""
    names_problem = class_names_problem(manifest["class_names"])
    if names_problem:
        return names_problem
    if manifest["image_shape"] != list(IMAGE_SHAPE):
        return f"image_shape is {manifest['image_shape']!r}, expected {list(IMAGE_SHAPE)}"
    mean, std = manifest["train_pixel_mean"], manifest["train_pixel_std"]
    if not _is_number(mean) or not 0 <= mean <= 1:
        return f"train_pixel_mean must be a number in [0, 1], got {mean!r}"
    if not _is_number(std) or not 0 < std <= 1:
        return f"train_pixel_std must be a number in (0, 1], got {std!r}"
    splits = manifest["splits"]
    if not isinstance(splits, dict) or set(splits) != set(SPLITS):
        return f"splits must be exactly {', '.join(SPLITS)}"
    for name, entry in splits.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("shards"), list):
            return f"splits.{name} must have a list of shards"
        rows = [entry.get("rows")] + [
            s.get("rows") if isinstance(s, dict) else None for s in entry["shards"]
        ]
        if not all(isinstance(r, int) and 0 <= r <= MAX_IDX_ROWS for r in rows):
            return f"splits.{name}: rows must be integers from 0 to {MAX_IDX_ROWS}"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_split(prepared_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of one split, every shard verified."""
    prepared_dir = Path(prepared_dir)
    manifest = read_manifest(prepared_dir)
    entry = manifest["splits"].get(split)
    if not isinstance(entry, dict) or not entry.get("shards"):
        raise PipelineError(f"{prepared_dir / MANIFEST_FILE}: no split {split!r}; {REBUILD}")
    num_classes = len(manifest["class_names"])
    parts = [_load_shard(prepared_dir, shard, num_classes) for shard in entry["shards"]]
    images = torch.cat([p[0] for p in parts])  # one copy into one contiguous tensor
    labels = torch.cat([p[1] for p in parts])
    if len(labels) != entry.get("rows"):
        raise PipelineError(
            f"{prepared_dir}: {split} has {len(labels)} rows, the manifest "
            f"says {entry.get('rows')}; {REBUILD}"
        )
    return images, labels


def load_splits(
    prepared_dir: Path, splits: Sequence[str]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{split: (images, labels)} for each of `splits`, in that order (see `load_split`)."""
    return {split: load_split(prepared_dir, split) for split in splits}


def _load_shard(
    prepared_dir: Path, shard: dict[str, Any], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    relative = Path(str(shard.get("file", "")))
    if relative.is_absolute() or ".." in relative.parts or not relative.name:
        raise PipelineError(f"{prepared_dir / MANIFEST_FILE}: bad shard path {relative}")
    path = prepared_dir / relative
    # read once: hashed, then loaded from memory
    data = _read_shard_file(path, SHARD_OVERHEAD_BYTES + SHARD_BYTES_PER_ROW * shard["rows"])
    if hashlib.sha256(data).hexdigest() != shard.get("sha256"):
        raise PipelineError(f"{path}: sha256 differs from the manifest (corrupt); {REBUILD}")
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # whatever torch raises, the fix is the same: rebuild
        raise PipelineError(f"{path}: unreadable shard ({exc}); {REBUILD}") from None
    _check_payload(payload, shard.get("rows"), path, num_classes)
    return payload["images"], payload["labels"]


def _read_shard_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`. Symlinks are followed (DVC may
    link outputs to its cache) but must end at a regular file: a device never ends
    (/dev/zero) and a FIFO blocks; O_NONBLOCK opens a FIFO without waiting for a writer."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing shard; {REBUILD}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PipelineError(f"{path}: not a regular file; {REBUILD}")
        if info.st_size > max_bytes:
            raise PipelineError(
                f"{path}: {info.st_size} bytes, more than its manifest rows allow "
                f"({max_bytes}); {REBUILD}"
            )
        return f.read(max_bytes + 1)  # the sha256 catches a file that grew meanwhile


def _check_payload(payload: Any, rows: Any, path: Path, num_classes: int) -> None:
    if not isinstance(payload, dict) or set(payload) != {"images", "labels"}:
        raise PipelineError(f"{path}: expected a dict of images and labels; {REBUILD}")
    images, labels = payload["images"], payload["labels"]
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise PipelineError(f"{path}: images must be a uint8 tensor; {REBUILD}")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
        raise PipelineError(f"{path}: labels must be an int64 tensor; {REBUILD}")
    if tuple(images.shape) != (rows, *IMAGE_SHAPE) or tuple(labels.shape) != (rows,):
        raise PipelineError(
            f"{path}: images {tuple(images.shape)} and labels "
            f"{tuple(labels.shape)} do not match {rows} rows; {REBUILD}"
        )
    low, high = (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)
    if low < 0 or high >= num_classes:  # would be an IndexError deep inside the loss
        raise PipelineError(
            f"{path}: labels outside 0-{num_classes - 1} (min {low}, max {high}); {REBUILD}"
        )
