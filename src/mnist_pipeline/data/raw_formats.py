"""Read the fetched raw files into uint8 images and int64 labels, refusing anything odd.

Both upstream formats hold the same 8-bit pixels k = 0..255: idx stores the byte
k, deeplearning.net's `mnist.pkl.gz` stores float32 k/256. Every reader returns
{"train" | "valid" | "test": (images uint8 (N, 28, 28), labels int64 (N,))}, so
both routes give identical prepared data. Every problem is a one-line
PipelineError that names the file.

The pickle is read by an unpickler that admits only what numpy arrays need, so
a crafted file cannot run code (plain `pickle.load` would run anything).

Memory is bounded whatever the files hold: the pickle's decompressed stream, its
opcodes and its arrays have limits (safe_unpickle.py), and an idx header is checked
(row limit, exact length) before its body is read.
"""

import functools
import gzip
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.data.raw_description import read_description
from mnist_pipeline.data.registry import (
    FILE_LIMITS,
    IDX_FILES,
    IMAGE_SHAPE,
    NUM_CLASSES,
    PICKLE_FILE,
    SPLITS,
)
from mnist_pipeline.data.safe_unpickle import MAX_OPCODES, load_bounded
from mnist_pipeline.errors import PipelineError

PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
CHUNK_ROWS = 4096  # pixel conversion works in chunks: float temporaries stay ~13 MB each
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 0x00000803, 0x00000801
# Rows one idx file may claim: 60,000 upstream; the limit keeps a header claiming a billion
# from being believed (1,000,000 images are 784 MB).
MAX_IDX_ROWS = 1_000_000
# The decompressed pickle: 220 MB upstream (the same limit as fetch's content md5).
MAX_PICKLE_BYTES = FILE_LIMITS[PICKLE_FILE].max_gunzipped_bytes

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def read_raw(raw_dir: Path) -> tuple[Splits, dict[str, Any]]:
    """The splits of the raw directory the fetch stage wrote, and its dataset.json."""
    description = read_description(Path(raw_dir))
    if description["format"] == "pickle":
        return read_pickle(Path(raw_dir) / PICKLE_FILE), description
    return read_idx(Path(raw_dir)), description


# --- pickle ----------------------------------------------------------------------------------


def read_pickle(
    path: Path, max_bytes: int = MAX_PICKLE_BYTES, max_opcodes: int = MAX_OPCODES
) -> Splits:
    """deeplearning.net's mnist.pkl.gz: ((x, y) train, valid, test), x float32 (N, 784) = k/256.
    At most `max_bytes` decompressed and `max_opcodes` pickle opcodes (tests lower them)."""
    path = Path(path)
    _check_gzip_file(path, "mnist.pkl.gz")
    try:
        # encoding="bytes", not the usual "latin1": Python 2 strings stay bytes, which
        # numpy uses as the array memory directly; latin1 would hold a str copy and a
        # bytes copy of every array at once (120 MB more peak memory for MNIST).
        opener = functools.partial(gzip.open, path, "rb")
        data = load_bounded(opener, max_bytes, max_opcodes, encoding="bytes")
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


def read_idx(raw_dir: Path, max_rows: int = MAX_IDX_ROWS) -> Splits:
    """The four idx .gz files. valid = the last 1/6 of the train file (10,000 of 60,000,
    deeplearning.net's cut), so small synthetic files split the same way. The arrays are
    read-only views of the decompressed bytes (no copies). A file may hold at most
    `max_rows` rows (tests lower it)."""
    raw_dir = Path(raw_dir)
    train = _read_idx_pair(raw_dir, "train", max_rows)
    test = _read_idx_pair(raw_dir, "test", max_rows)
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


def _read_idx_pair(
    raw_dir: Path, part: str, max_rows: int = MAX_IDX_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    image_path, label_path = (
        raw_dir / IDX_FILES[f"{part}_images"],
        raw_dir / IDX_FILES[f"{part}_labels"],
    )
    images = _read_idx_file(image_path, IDX_IMAGES_MAGIC, "images", ndim=3, max_rows=max_rows)
    labels = _read_idx_file(label_path, IDX_LABELS_MAGIC, "labels", ndim=1, max_rows=max_rows)
    where = f"{image_path} + {label_path.name}"
    _check_pair(images, labels, where, float_pixels=False)
    return images, _labels_int64(labels, str(label_path))


def _read_idx_file(path: Path, magic: int, kind: str, ndim: int, max_rows: int) -> np.ndarray:
    """The header first, checked; then exactly the body it announces, then EOF: nothing of
    unknown size is decompressed."""
    _check_gzip_file(path, f"idx {kind} file")
    header_bytes = 4 * (1 + ndim)
    try:
        with gzip.open(path, "rb") as f:
            header = f.read(header_bytes)
            rows, shape = _idx_header(header, path, magic, kind, ndim, max_rows)
            body_bytes = rows * math.prod(shape)
            body = f.read(body_bytes)
            extra = f.read(1)  # b"" at the end (which also checks the gzip CRC)
    except EOFError:
        raise PipelineError(f"{path}: truncated gzip data; re-run `dvc repro fetch`") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise PipelineError(f"{path}: corrupt gzip data ({exc})") from None
    if len(body) != body_bytes or extra:
        held = f"more than {header_bytes + body_bytes}" if extra else header_bytes + len(body)
        raise PipelineError(
            f"{path}: header says {rows} {kind} ({header_bytes + body_bytes} bytes) but the "
            f"file holds {held} bytes"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(rows, *shape)


def _idx_header(
    header: bytes, path: Path, magic: int, kind: str, ndim: int, max_rows: int
) -> tuple[int, list[int]]:
    # The magic number first: it tells a swapped file (labels for images) apart from a short one.
    found_magic = struct.unpack(">i", header[:4])[0] if len(header) >= 4 else None
    if found_magic is not None and found_magic != magic:
        raise PipelineError(
            f"{path}: magic number 0x{found_magic:08x}, expected 0x{magic:08x} (idx {kind})"
        )
    if len(header) < 4 * (1 + ndim):
        raise PipelineError(f"{path}: {len(header)} bytes, too short for an idx {kind} header")
    rows, *shape = struct.unpack(f">{ndim}i", header[4:])
    if kind == "images" and tuple(shape) != IMAGE_SHAPE:
        raise PipelineError(f"{path}: images are {shape[0]}x{shape[1]} pixels, expected 28x28")
    if not 0 <= rows <= max_rows:
        raise PipelineError(
            f"{path}: header says {rows} {kind}; the limit is 0 to {max_rows} (idx rows)"
        )
    return rows, shape


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
