"""Synthetic MNIST-like data in both upstream raw formats, for tests and benchmarks.

`make_images` draws learnable 28x28 uint8 images: every class has a fixed random
blob template (the same for every seed, so splits drawn with different seeds
share classes); each image shifts it, blends in up to 50% of another class's,
scales its contrast and adds heavy noise, and 2% of labels are random. A small
MLP reaches about 93-94% test accuracy and overfits visibly: far above chance,
short of 100%, so training metrics move.

`write_pickle` and `write_idx` write the same splits exactly as upstream did
(deeplearning.net's Python 2 `mnist.pkl.gz`; LeCun's four idx .gz files), so
the prepare stage gives identical output for both. Not used by any stage.
"""

import contextlib
import gzip
import json
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnist_pipeline.data.registry import DATASETS, IDX_FILES, PICKLE_FILE
from mnist_pipeline.fileio import file_digest

IMAGE_SIDE_PX = 28
TEMPLATE_SEED = 20_240_601  # fixed: the class templates must not change with `seed`
MAX_SHIFT_PX = 1  # more shift makes small training sets (500 images) much harder to learn
NOISE_PX = 120.0  # triangular noise in [-NOISE_PX, NOISE_PX]; heavy, so classes overlap
BACKGROUND_PX = 40.0  # subtracted before clipping, so most background pixels are 0 as in MNIST
LABEL_NOISE = 0.02  # fraction of labels replaced by a random class
MAX_BLEND = 0.5  # each image blends in up to this much of a random other class: some are ambiguous
COMPRESS_LEVEL = 1  # gzip level: the layout is the same at any level; 9 takes minutes at 70k
CHUNK_ROWS = 8192  # bounds the float32 working set while drawing images

Split = tuple[torch.Tensor, torch.Tensor]  # images uint8 (n, 28, 28), labels int64 (n,)


def make_images(n: int, seed: int, num_classes: int = 10) -> Split:
    """`n` images uint8 (n, 28, 28) and labels int64 (n,) as CPU tensors (what the model
    takes), deterministic per seed. The writers below accept them or numpy arrays."""
    shifted = _shifted_templates(num_classes)  # (classes, shifts, 28, 28) float32
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n, dtype=np.int64)
    shift_index = rng.integers(0, shifted.shape[1], size=n)
    # Per image: ink = contrast * ((1 - blend) * own template + blend * another class's).
    contrast = rng.uniform(0.6 * 255, 255, size=n).astype(np.float32)[:, None, None]
    blend = rng.uniform(0.0, MAX_BLEND, size=n).astype(np.float32)[:, None, None]
    other = rng.integers(0, num_classes, size=n)
    own_weight, other_weight = contrast * (1 - blend), contrast * blend
    images = np.empty((n, IMAGE_SIDE_PX, IMAGE_SIDE_PX), dtype=np.uint8)
    for start in range(0, n, CHUNK_ROWS):
        rows = slice(start, min(start + CHUNK_ROWS, n))
        chunk = _triangular_noise(rng, images[rows].shape)
        chunk += shifted[labels[rows], shift_index[rows]] * own_weight[rows]
        chunk += shifted[other[rows], shift_index[rows]] * other_weight[rows]
        np.clip(chunk, 0, 255, out=chunk)
        images[rows] = chunk  # float32 -> uint8 truncates, fine for synthetic data
    flip = rng.random(n) < LABEL_NOISE
    labels[flip] = rng.integers(0, num_classes, size=int(flip.sum()), dtype=np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)


def _triangular_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # The sum of two uniform bytes: bell-shaped, and 20x faster than standard_normal here.
    noise = rng.integers(0, 256, shape, dtype=np.uint8).astype(np.float32)
    noise += rng.integers(0, 256, shape, dtype=np.uint8)
    noise *= NOISE_PX / 255.0
    noise -= NOISE_PX + BACKGROUND_PX
    return noise


def make_splits(rows: tuple[int, int, int], seed: int) -> tuple[Split, Split, Split]:
    """(train, valid, test) of the given row counts, each from its own seed."""
    train, valid, test = (make_images(n, seed + i) for i, n in enumerate(rows))
    return train, valid, test


def _shifted_templates(num_classes: int) -> np.ndarray:
    """Per class, a smooth random blob in [0, 1], at every shift up to MAX_SHIFT_PX."""
    rng = np.random.default_rng(TEMPLATE_SEED)
    coarse = rng.random((num_classes, 7, 7))
    # Nearest-neighbour 7x7 -> 28x28 upsampling, then a 3x3 box blur to smooth edges.
    fine = coarse.repeat(4, axis=1).repeat(4, axis=2)
    padded = np.pad(fine, ((0, 0), (1, 1), (1, 1)), mode="edge")
    blurred = sum(padded[:, i : i + 28, j : j + 28] for i in range(3) for j in range(3)) / 9
    # Keep the brightest 25% as "ink" in a dark 20x20 box, like MNIST's centred digits.
    ink = np.clip((blurred - np.quantile(blurred, 0.75, axis=(1, 2), keepdims=True)) * 4, 0, 1)
    ink[:, :4], ink[:, -4:], ink[:, :, :4], ink[:, :, -4:] = 0, 0, 0, 0
    shifts = range(-MAX_SHIFT_PX, MAX_SHIFT_PX + 1)
    stacked = [np.roll(ink, (dy, dx), axis=(1, 2)) for dy in shifts for dx in shifts]
    return np.stack(stacked, axis=1).astype(np.float32)


# The pure-Python pickler, whose dispatch table can be changed; typeshed does not describe it.
_PurePythonPickler: Any = pickle._Pickler


class _Py2Pickler(_PurePythonPickler):  # type: ignore[misc]
    """Writes what Python 2's cPickle wrote: byte strings as BINSTRING, numpy.core globals."""

    dispatch = _PurePythonPickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes | str) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str  # only ascii names ('f4', '<') occur in numpy pickles

    def save_global(self, obj: Any, name: str | None = None) -> None:
        # numpy 2 moved numpy.core to numpy._core; the original file names numpy.core.
        module = getattr(obj, "__module__", "")
        if module == "numpy._core.multiarray" and obj.__name__ == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def write_pickle(path: Path, splits: tuple[Split, Split, Split]) -> None:
    """mnist.pkl.gz: ((x_train, y_train), (x_valid, ...), ...), x float32 (N, 784) = k/256."""
    data = tuple(
        (
            np.asarray(images).reshape(len(images), -1).astype(np.float32) / np.float32(256),
            np.asarray(labels, dtype=np.int64),
        )
        for images, labels in splits
    )
    with _gzip_writer(Path(path)) as f:
        _Py2Pickler(f, protocol=2).dump(data)


@contextlib.contextmanager
def _gzip_writer(path: Path) -> Iterator[gzip.GzipFile]:
    # No file name or time stamp in the header, so the same data gives the same bytes.
    with open(path, "wb") as raw, gzip.GzipFile("", "wb", COMPRESS_LEVEL, raw, mtime=0) as f:
        yield f


def write_idx(raw_dir: Path, splits: tuple[Split, Split, Split]) -> None:
    """The four idx .gz files; the train file holds train then valid (valid = its last 1/6)."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    if len(valid_y) != (len(train_y) + len(valid_y)) // 6:
        raise ValueError("idx files split the train file 5:1; valid must be 1/6 of train+valid")
    arrays = {
        "train_images": np.concatenate([np.asarray(train_x), np.asarray(valid_x)]),
        "train_labels": np.concatenate([np.asarray(train_y), np.asarray(valid_y)]),
        "test_images": np.asarray(test_x),
        "test_labels": np.asarray(test_y),
    }
    for role, array in arrays.items():
        if role.endswith("images"):
            header = struct.pack(">iiii", 0x803, len(array), *array.shape[1:])
        else:
            header = struct.pack(">ii", 0x801, len(array))
        with _gzip_writer(Path(raw_dir) / IDX_FILES[role]) as f:
            f.write(header)
            f.write(np.ascontiguousarray(array, dtype=np.uint8).data)


def write_raw_dir(
    raw_dir: Path, fmt: str, splits: tuple[Split, Split, Split], dataset: str = "mnist"
) -> Path:
    """What the fetch stage leaves: the raw file(s) plus dataset.json describing them."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "pickle":
        write_pickle(raw_dir / PICKLE_FILE, splits)
        names = [PICKLE_FILE]
    else:
        write_idx(raw_dir, splits)
        names = list(IDX_FILES.values())
    files = {
        name: {"md5": file_digest(raw_dir / name, "md5"), "bytes": (raw_dir / name).stat().st_size}
        for name in names
    }
    class_names = list(DATASETS[dataset].class_names)
    description = {"dataset": dataset, "format": fmt, "class_names": class_names, "files": files}
    (raw_dir / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
    return raw_dir
