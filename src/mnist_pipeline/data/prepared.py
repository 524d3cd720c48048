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
"""

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnist_pipeline.data.registry import IMAGE_SHAPE
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
    """manifest.json of a prepared directory, with its keys checked."""
    path = Path(prepared_dir) / MANIFEST_FILE
    manifest = read_json(path, REBUILD)
    missing = [k for k in MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise PipelineError(f"{path}: missing {', '.join(missing)}; {REBUILD}")
    return manifest


def load_split(prepared_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of one split, every shard verified."""
    prepared_dir = Path(prepared_dir)
    entry = read_manifest(prepared_dir)["splits"].get(split)
    if not isinstance(entry, dict) or not entry.get("shards"):
        raise PipelineError(f"{prepared_dir / MANIFEST_FILE}: no split {split!r}; {REBUILD}")
    parts = [_load_shard(prepared_dir, shard) for shard in entry["shards"]]
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


def _load_shard(prepared_dir: Path, shard: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    relative = Path(str(shard.get("file", "")))
    if relative.is_absolute() or ".." in relative.parts or not relative.name:
        raise PipelineError(f"{prepared_dir / MANIFEST_FILE}: bad shard path {relative}")
    path = prepared_dir / relative
    try:
        data = path.read_bytes()  # read once: hashed, then loaded from memory
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing shard; {REBUILD}") from None
    if hashlib.sha256(data).hexdigest() != shard.get("sha256"):
        raise PipelineError(f"{path}: sha256 differs from the manifest (corrupt); {REBUILD}")
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # whatever torch raises, the fix is the same: rebuild
        raise PipelineError(f"{path}: unreadable shard ({exc}); {REBUILD}") from None
    _check_payload(payload, shard.get("rows"), path)
    return payload["images"], payload["labels"]


def _check_payload(payload: Any, rows: Any, path: Path) -> None:
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
