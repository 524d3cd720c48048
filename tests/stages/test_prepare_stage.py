"""The prepare stage script: both raw formats, identical output, clean failures."""

import json
import subprocess
import sys

import pytest

from mnist_pipeline.cli import run_stage
from mnist_pipeline.data import prepared
from mnist_pipeline.data.registry import PICKLE_FILE
from mnist_pipeline.testing import synthetic
from mnist_pipeline.testing.configs import complete_params
from tests.support import REPO, load_script, python_env

SCRIPT = REPO / "stages" / "prepare.py"
ROWS = (250, 50, 40)


def _load_stage():
    return load_script("stages/prepare.py")


@pytest.fixture(scope="module")
def splits():
    return synthetic.make_splits(ROWS, seed=5)


@pytest.fixture
def params(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(complete_params("prepare:\n  shard_size: 100\n"))
    return path


def _run_in_process(raw, out, params):
    stage = _load_stage()
    argv = ["--params", str(params), "--raw", str(raw), "--out", str(out)]
    return run_stage(stage.main, stage.parser, argv)


def _run_script(raw, out, params):
    env = python_env()
    argv = [
        sys.executable,
        str(SCRIPT),
        "--params",
        str(params),
        "--raw",
        str(raw),
        "--out",
        str(out),
    ]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


def _tree(directory):
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in directory.rglob("*")
        if p.is_file()
    }


def test_pickle_and_idx_give_byte_identical_output(tmp_path, splits, params):
    for fmt in ("pickle", "idx"):
        synthetic.write_raw_dir(tmp_path / f"raw-{fmt}", fmt, splits)
        assert _run_in_process(tmp_path / f"raw-{fmt}", tmp_path / f"out-{fmt}", params) == 0
    pickle_tree, idx_tree = _tree(tmp_path / "out-pickle"), _tree(tmp_path / "out-idx")
    assert pickle_tree == idx_tree
    assert sorted(pickle_tree) == [
        "manifest.json",
        "test/shard-00000.pt",
        "train/shard-00000.pt",
        "train/shard-00001.pt",
        "train/shard-00002.pt",
        "valid/shard-00000.pt",
    ]


def test_script_runs_and_replaces_an_old_output(tmp_path, splits, params):
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    synthetic.write_raw_dir(raw, "idx", splits, dataset="fashion-mnist")
    (out / "stale").mkdir(parents=True)
    result = _run_script(raw, out, params)
    assert result.returncode == 0, result.stderr
    assert "train 250, valid 50, test 40 images in 5 shards" in result.stdout
    assert not (out / "stale").exists()
    manifest = prepared.read_manifest(out)
    assert manifest["dataset"] == "fashion-mnist" and manifest["class_names"][9] == "Ankle boot"
    assert len(prepared.load_split(out, "valid")[1]) == 50


def test_corrupt_raw_dir_fails_with_one_line_and_no_output(tmp_path, splits, params):
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    synthetic.write_raw_dir(raw, "pickle", splits)
    html = b"<!DOCTYPE html><html><body>rate limited</body></html>"
    (raw / PICKLE_FILE).write_bytes(html)
    _record_size(raw, PICKLE_FILE, len(html))  # so only the content is wrong
    result = _run_script(raw, out, params)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "looks like an HTML page" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "raw"]


def _record_size(raw, name, size):
    path = raw / "dataset.json"
    description = json.loads(path.read_text())
    description["files"][name]["bytes"] = size
    path.write_text(json.dumps(description))


def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("problem", ["no-dataset-json", "bad-params", "write-fails"])
def test_failures_leave_no_output(tmp_path, splits, params, problem, capsys, monkeypatch):
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    synthetic.write_raw_dir(raw, "idx", splits)
    if problem == "no-dataset-json":
        (raw / "dataset.json").unlink()
    elif problem == "bad-params":
        params.write_text(complete_params("prepare:\n  shard_size: 0\n"))
    else:  # after the shards are written, inside the temporary directory
        monkeypatch.setattr(prepared, "write_json", _disk_full)
    assert _run_in_process(raw, out, params) == 1
    message = {
        "no-dataset-json": "dataset.json: not found",
        "bad-params": "prepare.shard_size: must be >= 1",
        "write-fails": "No space left on device",
    }[problem]
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "raw"]
