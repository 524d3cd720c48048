"""Raw file parsing: both formats, the restricted unpickler, and every validation error."""

import gzip
import json
import os
import pickle
import pickletools
import struct
import warnings

import numpy as np
import pytest
import torch

from mnist_pipeline.data import raw_formats
from mnist_pipeline.data.registry import IDX_FILES, PICKLE_FILE, SPLITS
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.testing import synthetic

ROWS = (500, 100, 60)  # train file of 600 rows: valid is its last 1/6


@pytest.fixture(scope="module")
def splits():
    return synthetic.make_splits(ROWS, seed=0)


def _gz(path, payload: bytes):
    path.write_bytes(gzip.compress(payload, compresslevel=1, mtime=0))
    return path


def _pickle_file(path, obj, protocol=2):
    return _gz(path, pickle.dumps(obj, protocol=protocol))


def _float_splits(splits):
    """The pickle's content: x float32 (N, 784) = k/256, y int64."""
    return tuple(
        (x.numpy().reshape(len(x), -1).astype(np.float32) / 256, y.numpy()) for x, y in splits
    )


def _assert_same(parsed, splits):
    assert list(parsed) == list(SPLITS)
    for (images, labels), (want_x, want_y) in zip(parsed.values(), splits, strict=True):
        assert images.dtype == np.uint8 and images.shape == (len(want_x), 28, 28)
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images, want_x)
        np.testing.assert_array_equal(labels, want_y)


# --- the synthetic writers and the good paths ------------------------------------------------


def test_make_images_is_deterministic_and_varied():
    a, b = synthetic.make_images(300, seed=1), synthetic.make_images(300, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], synthetic.make_images(300, seed=2)[0])
    assert a[0].dtype == torch.uint8 and a[0].shape == (300, 28, 28) and a[1].dtype == torch.int64
    assert set(a[1].tolist()) == set(range(10))


def test_pickle_round_trip(tmp_path, splits):
    path = tmp_path / PICKLE_FILE
    synthetic.write_pickle(path, splits)
    _assert_same(raw_formats.read_pickle(path), splits)


def test_pickle_has_the_original_python2_layout(tmp_path, splits):
    path = tmp_path / PICKLE_FILE
    synthetic.write_pickle(path, splits)
    raw = gzip.decompress(path.read_bytes())
    ops = list(pickletools.genops(raw))
    globals_ = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert ops[0][1] == 2  # protocol 2
    assert "BINSTRING" in {op.name for op, _, _ in ops}  # Python 2 str, not _codecs.encode
    with warnings.catch_warnings():  # numpy 2 warns about the numpy.core name; that is expected
        warnings.simplefilter("ignore", DeprecationWarning)
        with gzip.open(path) as f:
            loaded = pickle.load(f, encoding="latin1")  # how the tutorial loads it
    for (x, y), (want_x, want_y) in zip(loaded, _float_splits(splits), strict=True):
        assert x.dtype == np.float32 and x.shape == (len(want_x), 784) and y.dtype == np.int64
        np.testing.assert_array_equal(x, want_x)
        np.testing.assert_array_equal(y, want_y)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_reads_pickles_written_by_python3(tmp_path, splits, protocol):
    path = _pickle_file(tmp_path / PICKLE_FILE, _float_splits(splits), protocol)
    _assert_same(raw_formats.read_pickle(path), splits)


def test_idx_round_trip_valid_is_last_sixth(tmp_path, splits):
    synthetic.write_idx(tmp_path, splits)
    parsed = raw_formats.read_idx(tmp_path)
    _assert_same(parsed, splits)
    assert len(parsed["valid"][1]) == (ROWS[0] + ROWS[1]) // 6


def test_write_idx_refuses_a_valid_split_it_cannot_round_trip(tmp_path, splits):
    with pytest.raises(ValueError, match="1/6"):
        synthetic.write_idx(tmp_path, (splits[0], splits[0], splits[2]))


@pytest.mark.parametrize("fmt", ["pickle", "idx"])
def test_read_raw_dispatches_on_dataset_json(tmp_path, splits, fmt):
    synthetic.write_raw_dir(tmp_path, fmt, splits, dataset="fashion-mnist")
    parsed, description = raw_formats.read_raw(tmp_path)
    _assert_same(parsed, splits)
    assert description["format"] == fmt and description["dataset"] == "fashion-mnist"
    assert description["class_names"][0] == "T-shirt/top"


# --- the restricted unpickler ----------------------------------------------------------------


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _malicious(marker):
    return {
        "os.system": _Reduce(os.system, f"touch {marker}"),
        "eval": _Reduce(eval, f"open({str(marker)!r}, 'w').write('pwned')"),
        "open": _Reduce(open, str(marker), "w"),
    }


@pytest.mark.parametrize("name", ["os.system", "eval", "open"])
@pytest.mark.parametrize("where", ["top", "labels"])
def test_malicious_pickle_never_runs_code(tmp_path, splits, name, where):
    marker = tmp_path / "pwned"
    evil = _malicious(marker)[name]
    x = _float_splits(splits)
    obj = evil if where == "top" else ((x[0][0], evil), x[1], x[2])
    path = _pickle_file(tmp_path / PICKLE_FILE, obj)
    with pytest.raises(PipelineError, match="refusing to load global"):
        raw_formats.read_pickle(path)
    assert not marker.exists()


def test_object_arrays_are_refused(tmp_path):
    labels = np.array([1, 2], dtype=object)  # needs no global beyond numpy's own
    path = _pickle_file(tmp_path / PICKLE_FILE, ((np.zeros((2, 784), np.float32), labels),) * 3)
    with pytest.raises(PipelineError, match="refusing object dtype"):
        raw_formats.read_pickle(path)


# --- bad files, both formats -----------------------------------------------------------------

HTML = b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n"
BAD_FILES = {  # name -> (bytes of the file, expected message)
    "empty": (b"", "empty file"),
    "html": (HTML, "looks like an HTML page"),
    "html-lowercase": (b"  <html><head></head></html>", "looks like an HTML page"),
    "not-gzip": (b"just some text", "not a gzip file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_pickle_file(tmp_path, case):
    content, message = BAD_FILES[case]
    path = tmp_path / PICKLE_FILE
    path.write_bytes(content)
    with pytest.raises(PipelineError, match=message) as info:
        raw_formats.read_pickle(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_idx_file(tmp_path, splits, case):
    synthetic.write_idx(tmp_path, splits)
    content, message = BAD_FILES[case]
    path = tmp_path / IDX_FILES["test_labels"]
    path.write_bytes(content)
    with pytest.raises(PipelineError, match=message) as info:
        raw_formats.read_idx(tmp_path)
    assert str(path) in str(info.value)


def test_truncated_gzip(tmp_path, splits):
    synthetic.write_pickle(tmp_path / PICKLE_FILE, splits)
    synthetic.write_idx(tmp_path, splits)
    for name in (PICKLE_FILE, IDX_FILES["train_images"]):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError, match="truncated"):
        raw_formats.read_pickle(tmp_path / PICKLE_FILE)
    with pytest.raises(PipelineError, match="truncated gzip"):
        raw_formats.read_idx(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        raw_formats.read_pickle(tmp_path / PICKLE_FILE)
    with pytest.raises(PipelineError, match="not found"):
        raw_formats.read_idx(tmp_path)


def _pickle_cases():
    x = np.zeros((4, 784), np.float32)
    y = np.array([0, 1, 2, 3], np.int64)
    ok = (x, y)

    def with_train(images=x, labels=y):
        return ((images, labels), ok, ok)

    return {
        "not-a-tuple": ({"train": ok}, "expected a tuple of 3"),
        "two-splits": ((ok, ok), "expected 3 splits"),
        "not-a-pair": ((ok, (x,), ok), "valid: expected an \\(images, labels\\) pair"),
        "not-arrays": (((x.tolist(), y), ok, ok), "expected numpy arrays"),
        "width-783": (with_train(images=np.zeros((4, 783), np.float32)), "expected \\(N, 784\\)"),
        "uint8-pixels": (with_train(images=np.zeros((4, 784), np.uint8)), "expected float"),
        "length-mismatch": (with_train(labels=y[:3]), "4 images but 3 labels"),
        "label-10": (with_train(labels=np.array([0, 1, 2, 10])), "labels outside 0-9"),
        "label-negative": (with_train(labels=np.array([0, -1, 2, 3])), "labels outside 0-9"),
        "float-labels": (with_train(labels=y.astype(np.float64)), "labels are float64"),
        "labels-2d": (with_train(labels=y[:, None]), "labels have shape"),
        "nan": (with_train(images=np.full((4, 784), np.nan, np.float32)), "NaN or infinite"),
        "inf": (with_train(images=np.full((4, 784), np.inf, np.float32)), "NaN or infinite"),
        "pixel-1.0": (with_train(images=np.ones((4, 784), np.float32)), "outside \\[0, 1\\)"),
        "pixel-negative": (with_train(images=-x - 1 / 256), "outside \\[0, 1\\)"),
        "pixel-0.3": (with_train(images=x + 0.3), "not multiples of 1/256"),
        "pixel-k/255": (with_train(images=x + 7 / 255), "not multiples of 1/256"),
        "empty-split": ((ok, ok, (x[:0], y[:0])), "test: the split is empty"),
    }


@pytest.mark.parametrize("case", sorted(_pickle_cases()))
def test_bad_pickle_content(tmp_path, case):
    obj, message = _pickle_cases()[case]
    path = _pickle_file(tmp_path / PICKLE_FILE, obj)
    with pytest.raises(PipelineError, match=message) as info:
        raw_formats.read_pickle(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_not_a_pickle_inside_the_gzip(tmp_path):
    path = _gz(tmp_path / PICKLE_FILE, b"\x80\x02garbage that is no pickle")
    with pytest.raises(PipelineError, match="not a valid MNIST pickle"):
        raw_formats.read_pickle(path)


def _idx_images(rows, height=28, width=28, magic=0x803, claimed_rows=None):
    header = struct.pack(
        ">iiii", magic, rows if claimed_rows is None else claimed_rows, height, width
    )
    return header + bytes(rows * height * width)


def _idx_labels(labels, magic=0x801):
    return struct.pack(">ii", magic, len(labels)) + bytes(labels)


IDX_CASES = {  # name -> (file role, content, expected message)
    "images-wrong-magic": ("test_images", _idx_labels([1, 2]), "magic number 0x00000801"),
    "labels-wrong-magic": ("test_labels", _idx_labels([1], magic=0x803), "magic number"),
    "images-27-rows": ("test_images", _idx_images(60, height=27), "27x28 pixels"),
    "header-size-mismatch": ("test_images", _idx_images(60, claimed_rows=61), "header says 61"),
    "extra-bytes": ("test_labels", _idx_labels([1] * 60) + b"\x00", "header says 60"),
    "short-header": ("test_labels", b"\x00\x00\x08", "too short for an idx labels header"),
    "label-10": ("test_labels", _idx_labels([10] * 60), "labels outside 0-9"),
    "length-mismatch": ("test_labels", _idx_labels([1] * 59), "60 images but 59 labels"),
    "empty-test": ("test_images", _idx_images(0), "0 images but 60 labels"),
    "tiny-train": ("train_labels", _idx_labels([1] * 5), "600 images but 5 labels"),
}


@pytest.mark.parametrize("case", sorted(IDX_CASES))
def test_bad_idx_content(tmp_path, splits, case):
    synthetic.write_idx(tmp_path, splits)
    role, content, message = IDX_CASES[case]
    _gz(tmp_path / IDX_FILES[role], content)
    with pytest.raises(PipelineError, match=message) as info:
        raw_formats.read_idx(tmp_path)
    assert "\n" not in str(info.value)


def test_idx_empty_split_and_too_few_rows(tmp_path):
    files = {
        "train_images": _idx_images(5),
        "train_labels": _idx_labels([1] * 5),
        "test_images": _idx_images(0),
        "test_labels": _idx_labels([]),
    }
    for role, content in files.items():
        _gz(tmp_path / IDX_FILES[role], content)
    with pytest.raises(PipelineError, match="the split is empty"):
        raw_formats.read_idx(tmp_path)
    _gz(tmp_path / IDX_FILES["test_images"], _idx_images(1))
    _gz(tmp_path / IDX_FILES["test_labels"], _idx_labels([1]))
    with pytest.raises(PipelineError, match="5 rows; need at least 6"):
        raw_formats.read_idx(tmp_path)


# --- dataset.json ----------------------------------------------------------------------------


def _edit_description(raw_dir, **changes):
    path = raw_dir / "dataset.json"
    description = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(description))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "csv"}, "unknown format 'csv'"),
        ({"dataset": "cifar"}, "unknown dataset 'cifar'"),
        ({"class_names": ["a", "b"]}, "class_names must be a list of 10 strings"),
        ({"files": {}}, r"files must describe mnist\.pkl\.gz"),
    ],
)
def test_bad_dataset_json(tmp_path, splits, changes, message):
    synthetic.write_raw_dir(tmp_path, "pickle", splits)
    _edit_description(tmp_path, **changes)
    with pytest.raises(PipelineError, match=message):
        raw_formats.read_raw(tmp_path)


def test_dataset_json_missing_invalid_or_size_mismatch(tmp_path, splits):
    with pytest.raises(PipelineError, match=r"dataset\.json: not found; run `dvc repro fetch`"):
        raw_formats.read_raw(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(PipelineError, match="not valid JSON"):
        raw_formats.read_raw(tmp_path)
    synthetic.write_raw_dir(tmp_path, "idx", splits)
    (tmp_path / IDX_FILES["test_labels"]).write_bytes(b"short")
    with pytest.raises(PipelineError, match=r"5 bytes, but dataset\.json records"):
        raw_formats.read_raw(tmp_path)
    (tmp_path / IDX_FILES["test_labels"]).unlink()
    with pytest.raises(PipelineError, match=r"missing, but dataset\.json records"):
        raw_formats.read_raw(tmp_path)
