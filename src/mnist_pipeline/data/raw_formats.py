"""Read the fetched raw files into uint8 images and int64 labels, refusing anything odd.

Both upstream formats hold the same 8-bit pixels k = 0..255: idx stores the byte
k, deeplearning.net's `mnist.pkl.gz` stores float32 k/256. Every reader returns
{"train" | "valid" | "test": (images uint8 (N, 28, 28), labels int64 (N,))}, so
both routes give identical prepared data. Every problem is a one-line
PipelineError that names the file.

The pickle is read by an unpickler that admits only what numpy arrays need, so
a crafted file cannot run code (plain `pickle.load` would run anything).
"""

import gzip
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.data.raw_description import read_description
from mnist_pipeline.data.registry import IDX_FILES, IMAGE_SHAPE, NUM_CLASSES, PICKLE_FILE, SPLITS
from mnist_pipeline.data.safe_unpickle import NumpyOnlyUnpickler
from mnist_pipeline.errors import PipelineError

PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
CHUNK_ROWS = 4096  # pixel conversion works in chunks: float temporaries stay ~13 MB each
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 0x00000803, 0x00000801

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def read_raw(raw_dir: Path) -> tuple[Splits, dict[str, Any]]:
    """The splits of the raw directory the fetch stage wrote, and its dataset.json."""
    description = read_description(Path(raw_dir))
    if description["format"] == "pickle":
        return read_pickle(Path(raw_dir) / PICKLE_FILE), description
    return read_idx(Path(raw_dir)), description


# --- pickle ----------------------------------------------------------------------------------


def read_pickle(path: Path) -> Splits:
    """deeplearning.net's mnist.pkl.gz: ((x, y) train, valid, test), x float32 (N, 784) = k/256."""
    path = Path(path)
    _check_gzip_file(path, "mnist.pkl.gz")
    try:
        with gzip.open(path, "rb") as f:
            # encoding="bytes", not the usual "latin1": Python 2 strings stay bytes, which
            # numpy uses as the array memory directly; latin1 would hold a str copy and a
            # bytes copy of every array at once (120 MB more peak memory for MNIST).
            data = NumpyOnlyUnpickler(f, encoding="bytes").load()
    except EOFError:
        raise PipelineError(
            f"{path}: truncated (the data ends early); re-run `dvc repro fetch`"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise PipelineError(f"{path}: corrupt gzip data ({exc})") from None
    except (pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise PipelineError(f"{path}: not a valid MNIST pickle ({exc})") from None
    pairs = _pickle_pairs(data, path)
    del data  # the float arrays are released split by split as they are converted
    splits: Splits = {}
    for name in SPLITS:
        images, labels = pairs.pop(0)
        where = f"{path}: {name}"
        _check_pair(images, labels, where, float_pixels=True)
        splits[name] = (_float_pixels_to_uint8(images, where), _labels_int64(labels, where))
    return splits


def _pickle_pairs(data: Any, path: Path) -> list[list[Any]]:
    if not isinstance(data, tuple | list):
        raise PipelineError(
            f"{path}: expected a tuple of 3 (images, labels) splits, got {type(data).__name__}"
        )
    if len(data) != len(SPLITS):
        raise PipelineError(f"{path}: expected 3 splits (train, valid, test), got {len(data)}")
    for name, pair in zip(SPLITS, data, strict=True):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise PipelineError(f"{path}: {name}: expected an (images, labels) pair")
        if not all(isinstance(a, np.ndarray) for a in pair):
            raise PipelineError(f"{path}: {name}: expected numpy arrays")
    return [list(pair) for pair in data]


def _float_pixels_to_uint8(images: np.ndarray, where: str) -> np.ndarray:
    """float k/256 -> uint8 k, exactly; anything else is not the original encoding."""
    out = np.empty(images.shape, dtype=np.uint8)
    for start in range(0, len(images), CHUNK_ROWS):
        k = images[start : start + CHUNK_ROWS] * 256  # exact in binary floating point
        if not np.isfinite(k).all():
            raise PipelineError(f"{where} images hold NaN or infinite pixels")
        rounded = np.rint(k)
        if rounded.min() < 0 or rounded.max() > 255:
            raise PipelineError(
                f"{where} images hold pixels outside [0, 1) "
                f"(min {k.min() / 256:g}, max {k.max() / 256:g})"
            )
        if np.abs(k - rounded).max() > 1e-4:
            raise PipelineError(f"{where} images hold pixels that are not multiples of 1/256")
        out[start : start + CHUNK_ROWS] = rounded
    return out.reshape(len(images), *IMAGE_SHAPE)


# --- idx -------------------------------------------------------------------------------------


def read_idx(raw_dir: Path) -> Splits:
    """The four idx .gz files. valid = the last 1/6 of the train file (10,000 of 60,000,
    deeplearning.net's cut), so small synthetic files split the same way. The arrays are
    read-only views of the decompressed bytes (no copies)."""
    raw_dir = Path(raw_dir)
    train = _read_idx_pair(raw_dir, "train")
    test = _read_idx_pair(raw_dir, "test")
    rows = len(train[1])
    if rows < 6:
        path = raw_dir / IDX_FILES["train_labels"]
        raise PipelineError(f"{path}: {rows} rows; need at least 6 to split off valid (1/6)")
    cut = rows - rows // 6  # 60,000 rows -> 50,000 train + 10,000 valid
    return {
        "train": (train[0][:cut], train[1][:cut]),
        "valid": (train[0][cut:], train[1][cut:]),
        "test": test,
    }


def _read_idx_pair(raw_dir: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    image_path, label_path = (
        raw_dir / IDX_FILES[f"{part}_images"],
        raw_dir / IDX_FILES[f"{part}_labels"],
    )
    images = _read_idx_file(image_path, IDX_IMAGES_MAGIC, "images", ndim=3)
    labels = _read_idx_file(label_path, IDX_LABELS_MAGIC, "labels", ndim=1)
    where = f"{image_path} + {label_path.name}"
    _check_pair(images, labels, where, float_pixels=False)
    return images, _labels_int64(labels, str(label_path))


def _read_idx_file(path: Path, magic: int, kind: str, ndim: int) -> np.ndarray:
    data = _gunzip(path, f"idx {kind} file")
    header_bytes = 4 * (1 + ndim)
    # The magic number first: it tells a swapped file (labels for images) apart from a short one.
    found_magic = struct.unpack(">i", data[:4])[0] if len(data) >= 4 else None
    if found_magic is not None and found_magic != magic:
        raise PipelineError(
            f"{path}: magic number 0x{found_magic:08x}, expected 0x{magic:08x} (idx {kind})"
        )
    if len(data) < header_bytes:
        raise PipelineError(f"{path}: {len(data)} bytes, too short for an idx {kind} header")
    rows, *shape = struct.unpack(f">{ndim}i", data[4:header_bytes])
    if kind == "images" and tuple(shape) != IMAGE_SHAPE:
        raise PipelineError(f"{path}: images are {shape[0]}x{shape[1]} pixels, expected 28x28")
    expected = header_bytes + rows * int(np.prod(shape, dtype=np.int64))
    if rows < 0 or len(data) != expected:
        raise PipelineError(
            f"{path}: header says {rows} {kind} ({expected} bytes) but the file "
            f"holds {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_bytes).reshape(rows, *shape)


# --- shared checks ---------------------------------------------------------------------------


def _check_gzip_file(path: Path, what: str) -> None:
    """Fail early, and clearly, on the usual bad downloads: missing, empty, HTML, not gzip."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; re-run `dvc repro fetch`") from None
    if not head:
        raise PipelineError(f"{path}: empty file, not a gzip'd {what}")
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        raise PipelineError(f"{path}: looks like an HTML page, not a gzip'd {what}")
    if head[:2] != b"\x1f\x8b":
        raise PipelineError(f"{path}: not a gzip file (expected a gzip'd {what})")


def _gunzip(path: Path, what: str) -> bytes:
    _check_gzip_file(path, what)
    try:
        return gzip.decompress(path.read_bytes())
    except EOFError:
        raise PipelineError(f"{path}: truncated gzip data; re-run `dvc repro fetch`") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise PipelineError(f"{path}: corrupt gzip data ({exc})") from None


def _check_pair(images: np.ndarray, labels: np.ndarray, where: str, float_pixels: bool) -> None:
    if float_pixels and not np.issubdtype(images.dtype, np.floating):
        raise PipelineError(f"{where} images are {images.dtype}, expected float pixels in [0, 1)")
    if float_pixels and (images.ndim != 2 or images.shape[1] != PIXELS):
        raise PipelineError(f"{where} images have shape {images.shape}, expected (N, {PIXELS})")
    if labels.ndim != 1:
        raise PipelineError(f"{where} labels have shape {labels.shape}, expected (N,)")
    if len(images) != len(labels):
        raise PipelineError(f"{where}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise PipelineError(f"{where}: the split is empty")
    if not np.issubdtype(labels.dtype, np.integer):
        raise PipelineError(f"{where} labels are {labels.dtype}, expected integers")


def _labels_int64(labels: np.ndarray, where: str) -> np.ndarray:
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= NUM_CLASSES:
        raise PipelineError(f"{where} labels outside 0-{NUM_CLASSES - 1} (min {low}, max {high})")
    return labels.astype(np.int64)
