"""Prepared shards and manifest: round trip, contents, determinism, and every load error."""

import hashlib
import io
import json
import os

import numpy as np
import pytest
import torch

from mnist_pipeline.data import prepared
from mnist_pipeline.data.registry import DIGIT_NAMES, SPLITS
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.testing import synthetic

ROWS = (250, 50, 40)
SHARD_SIZE = 100


@pytest.fixture(scope="module")
def splits():
    tensors = synthetic.make_splits(ROWS, seed=3)
    return {name: (x.numpy(), y.numpy()) for name, (x, y) in zip(SPLITS, tensors, strict=True)}


@pytest.fixture
def prepared_dir(tmp_path, splits):
    prepared.write_prepared(splits, list(DIGIT_NAMES), "mnist", SHARD_SIZE, tmp_path / "prepared")
    return tmp_path / "prepared"


def _all_files(directory):
    return {
        p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*.pt")
    } | {prepared.MANIFEST_FILE: (directory / prepared.MANIFEST_FILE).read_bytes()}


def test_round_trip(prepared_dir, splits):
    for name in SPLITS:
        images, labels = prepared.load_split(prepared_dir, name)
        assert images.dtype == torch.uint8 and images.shape == (len(splits[name][1]), 28, 28)
        assert labels.dtype == torch.int64 and images.is_contiguous()
        np.testing.assert_array_equal(images.numpy(), splits[name][0])
        np.testing.assert_array_equal(labels.numpy(), splits[name][1])


def test_load_splits(prepared_dir, splits):
    loaded = prepared.load_splits(prepared_dir, ("test", "valid"))
    assert list(loaded) == ["test", "valid"]
    np.testing.assert_array_equal(loaded["valid"][1].numpy(), splits["valid"][1])


def test_manifest_contents(prepared_dir, splits):
    manifest = prepared.read_manifest(prepared_dir)
    assert list(manifest) == list(prepared.MANIFEST_KEYS)
    assert manifest["dataset"] == "mnist" and manifest["class_names"] == list(DIGIT_NAMES)
    assert manifest["image_shape"] == [28, 28] and manifest["dtype"] == "uint8"
    assert manifest["pixel_scale"] == 255
    train = splits["train"][0].astype(np.float64) / 255
    assert manifest["train_pixel_mean"] == pytest.approx(train.mean(), rel=1e-12)
    assert manifest["train_pixel_std"] == pytest.approx(train.std(), rel=1e-12)
    assert list(manifest["splits"]) == list(SPLITS)
    for name, rows in zip(SPLITS, ROWS, strict=True):
        entry = manifest["splits"][name]
        assert entry["rows"] == rows
        assert entry["class_counts"] == np.bincount(splits[name][1], minlength=10).tolist()
        assert [s["rows"] for s in entry["shards"]] == [
            min(SHARD_SIZE, rows - start) for start in range(0, rows, SHARD_SIZE)
        ]
        for index, shard in enumerate(entry["shards"]):
            assert shard["file"] == f"{name}/shard-{index:05d}.pt"
            data = (prepared_dir / shard["file"]).read_bytes()
            assert shard["sha256"] == hashlib.sha256(data).hexdigest()


def test_shards_hold_only_their_own_rows(prepared_dir):
    # torch.save of a view would write the whole split's storage into every shard.
    size = (prepared_dir / "train" / "shard-00000.pt").stat().st_size
    assert size < SHARD_SIZE * 28 * 28 + SHARD_SIZE * 8 + 4096


def test_output_is_byte_identical_for_the_same_input(tmp_path, prepared_dir, splits):
    again = tmp_path / "again"
    prepared.write_prepared(splits, list(DIGIT_NAMES), "mnist", SHARD_SIZE, again)
    assert _all_files(again) == _all_files(prepared_dir)


def test_pixel_mean_std_is_exact():
    images = np.random.default_rng(0).integers(0, 256, (3000, 28, 28), dtype=np.uint8)
    mean, std = prepared.pixel_mean_std(images)
    reference = images.astype(np.float64) / 255
    assert mean == pytest.approx(reference.mean(), rel=1e-12)
    assert std == pytest.approx(reference.std(), rel=1e-12)


def test_corrupt_shard_is_detected(prepared_dir):
    path = prepared_dir / "valid" / "shard-00000.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match=r"sha256 differs.*corrupt.*`dvc repro prepare`"):
        prepared.load_split(prepared_dir, "valid")
    prepared.load_split(prepared_dir, "train")  # the other splits still load


def test_missing_shard_and_manifest(prepared_dir):
    (prepared_dir / "test" / "shard-00000.pt").unlink()
    with pytest.raises(PipelineError, match="missing shard; re-run `dvc repro prepare`"):
        prepared.load_split(prepared_dir, "test")
    with pytest.raises(PipelineError, match="no split 'extra'"):
        prepared.load_split(prepared_dir, "extra")
    (prepared_dir / prepared.MANIFEST_FILE).write_text("{}")
    with pytest.raises(PipelineError, match="missing dataset, class_names"):
        prepared.read_manifest(prepared_dir)
    (prepared_dir / prepared.MANIFEST_FILE).write_text("[1, 2")
    with pytest.raises(PipelineError, match="not valid JSON"):
        prepared.read_manifest(prepared_dir)
    (prepared_dir / prepared.MANIFEST_FILE).unlink()
    with pytest.raises(PipelineError, match="not found; re-run `dvc repro prepare`"):
        prepared.load_split(prepared_dir, "train")


def _replace_shard(prepared_dir, file, payload):
    """Overwrite a shard and fix its sha256 in the manifest, so only the content is wrong."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    (prepared_dir / file).write_bytes(buffer.getvalue())
    manifest = json.loads((prepared_dir / prepared.MANIFEST_FILE).read_text())
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            if shard["file"] == file:
                shard["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (prepared_dir / prepared.MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"images": torch.zeros(40, 28, 28), "labels": torch.zeros(40, dtype=torch.int64)},
            "uint8",
        ),
        (
            {"images": torch.zeros(40, 28, 28, dtype=torch.uint8), "labels": torch.zeros(40)},
            "int64",
        ),
        (
            {
                "images": torch.zeros(39, 28, 28, dtype=torch.uint8),
                "labels": torch.zeros(39, dtype=torch.int64),
            },
            "do not match 40 rows",
        ),
        ({"images": torch.zeros(1)}, "expected a dict of images and labels"),
    ],
)
def test_wrong_shard_content(prepared_dir, payload, message):
    _replace_shard(prepared_dir, "test/shard-00000.pt", payload)
    with pytest.raises(PipelineError, match=message):
        prepared.load_split(prepared_dir, "test")


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_shards_load_with_weights_only(tmp_path, prepared_dir):
    marker = tmp_path / "pwned"
    _replace_shard(prepared_dir, "test/shard-00000.pt", {"images": _Marker(marker), "labels": 1})
    with pytest.raises(PipelineError, match="unreadable shard"):
        prepared.load_split(prepared_dir, "test")
    assert not marker.exists()


def test_shard_paths_must_stay_inside(prepared_dir):
    manifest = json.loads((prepared_dir / prepared.MANIFEST_FILE).read_text())
    manifest["splits"]["test"]["shards"][0]["file"] = "../outside.pt"
    (prepared_dir / prepared.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match="bad shard path"):
        prepared.load_split(prepared_dir, "test")
