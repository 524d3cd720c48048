"""Hostile inputs, at small scale: each one fails fast, in bounded memory, with one line.

Every case is built at run time, with the limits lowered through params or function
arguments so that it runs in seconds; the full-scale figures are in the README
("Limits and troubleshooting"). HTTP cases are served from 127.0.0.1.
"""

import contextlib
import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch
import yaml

from mnist_pipeline.config.params import FetchConfig, load_params
from mnist_pipeline.config.preflight import check_params_file
from mnist_pipeline.data import http_download, prepared, raw_formats
from mnist_pipeline.data.download import fetch_dataset
from mnist_pipeline.data.http_download import backoff_delay_s
from mnist_pipeline.data.registry import (
    DIGIT_NAMES,
    IDX_FILES,
    PICKLE_FILE,
    DatasetSpec,
    FileLimits,
    Source,
)
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import atomic_dir, file_digest, remove_stale_temporaries
from mnist_pipeline.model.checkpoint import load_checkpoint, save_checkpoint
from mnist_pipeline.model.networks import InputSpec, build_model
from mnist_pipeline.testing import bounds, holds, synthetic
from mnist_pipeline.testing.bounds import (
    HANG_GUARD_S,
    MB,
    STAGE_BASE_RSS_KB,
    Run,
    fails_within,
    leftovers,
)
from mnist_pipeline.testing.configs import (
    complete_params,
    fetch_config,
    make_params,
    model_config,
    params_data,
)
from mnist_pipeline.train.run import TrainOutputs
from mnist_pipeline.train.run import run_stage as train_stage
from tests.support import REPO, python_env


def run_stage_script(stage: str, *args: str, timeout_s: float = 120) -> Run:
    return bounds.run_stage_script(stage, *args, repo=REPO, timeout_s=timeout_s)


def assert_one_line_failure(run: Run, stage: str, problem: str) -> None:
    bounds.assert_one_line_failure(run, f"{stage}.py", problem)


# --- downloads -------------------------------------------------------------------------------


def small_spec(url: str, max_bytes: int = MB, max_gunzipped_bytes: int = MB) -> DatasetSpec:
    """A one-mirror pickle data set with small file limits (the registry's are ~100 MB)."""
    return DatasetSpec(
        "mnist",
        DIGIT_NAMES,
        (Source("pickle", (url,)),),
        limits={PICKLE_FILE: FileLimits(max_bytes, max_gunzipped_bytes)},
    )


@pytest.fixture
def out(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "raw"
    directory.mkdir()
    yield directory
    assert leftovers(directory) == []  # every failure removes its .part file


def quick_fetch_config(**overrides: Any) -> FetchConfig:
    values: dict[str, Any] = {"retries": 1, "backoff_s": 0.0, "timeout_s": 5.0}
    return fetch_config(**(values | overrides))


def test_gzip_bomb_stops_at_the_content_limit(out, http_server):
    bomb = gzip.compress(bytes(50 * MB), compresslevel=9)  # ~50 kB inflating to 50 MB
    url = http_server.add("/mnist.pkl.gz", http_server.Reply(200, bomb))
    error = fails_within(
        lambda: fetch_dataset(quick_fetch_config(), out, spec=small_spec(url), sleep=time.sleep),
        max_traced_bytes=20 * MB,
    )
    assert f"gunzips to more than {MB} bytes" in str(error)


def test_content_length_over_the_limit_is_refused_before_the_body(out, http_server):
    url = http_server.add("/mnist.pkl.gz", http_server.Reply(200, bytes(2 * MB)))
    error = fails_within(
        lambda: fetch_dataset(quick_fetch_config(), out, spec=small_spec(url), sleep=time.sleep),
        max_traced_bytes=20 * MB,
    )
    assert f"Content-Length {2 * MB}, over the limit of {MB} bytes" in str(error)


def test_endless_body_from_a_user_source_stops_at_fetch_max_bytes(out, http_server):
    url = http_server.add("/mnist.pkl.gz", http_server.Reply(200, bytes(1 << 16), endless=True))
    config = quick_fetch_config(source=url, max_bytes=MB)
    error = fails_within(
        lambda: fetch_dataset(config, out, sleep=time.sleep),
        max_traced_bytes=20 * MB,
    )
    assert f"body over the limit of {MB} bytes" in str(error)


@pytest.mark.parametrize("part", ["body", "headers"])
def test_trickling_server_trips_the_deadline(out, http_server, part):
    # One byte every 0.1 s never trips the 5 s read timeout; the 1 s deadline ends it.
    slow = {"body_byte_delay_s": 0.1} if part == "body" else {"header_byte_delay_s": 0.1}
    url = http_server.add("/mnist.pkl.gz", http_server.Reply(200, bytes(1000), **slow))
    config = quick_fetch_config(deadline_s=1.0, retries=3)
    error = fails_within(
        lambda: fetch_dataset(config, out, spec=small_spec(url), sleep=time.sleep),
        max_traced_bytes=20 * MB,
    )
    assert "not complete within fetch.deadline_s = 1 s" in str(error)


def test_a_trickling_body_is_a_stall_long_before_the_deadline(out, http_server, monkeypatch):
    # 10 bytes/s stays under the 1024 bytes/s floor for a whole (shortened) window.
    monkeypatch.setattr(http_download, "STALL_WINDOW_S", 0.5)
    reply = http_server.Reply(200, bytes(1000), body_byte_delay_s=0.1)
    url = http_server.add("/mnist.pkl.gz", reply)
    # A per-read timeout far above the 0.1 s gaps: only the stall check ends it.
    config = quick_fetch_config(deadline_s=60.0, timeout_s=30.0, retries=3)
    error = fails_within(
        lambda: fetch_dataset(config, out, spec=small_spec(url), sleep=time.sleep),
        max_traced_bytes=20 * MB,
    )
    assert "stalled: " in str(error) and "(under 1024 bytes/s)" in str(error)
    assert http_server.hits["/mnist.pkl.gz"] == 1  # a stalled source is not retried


def test_trickling_headers_are_a_stall_long_before_the_deadline(out, http_server, monkeypatch):
    # Headers at 10 bytes/s: the body's stall floor never starts; the headers' window ends it.
    monkeypatch.setattr(http_download, "HEADERS_WITHIN_S", 0.5)
    reply = http_server.Reply(200, bytes(1000), header_byte_delay_s=0.1)
    url = http_server.add("/mnist.pkl.gz", reply)
    # A per-read timeout far above the 0.1 s gaps: only the stall check ends it.
    config = quick_fetch_config(deadline_s=60.0, timeout_s=30.0, retries=3)
    error = fails_within(
        lambda: fetch_dataset(config, out, spec=small_spec(url), sleep=time.sleep),
        max_traced_bytes=20 * MB,
    )
    assert "stalled: no complete headers within 0.5 s" in str(error)
    assert http_server.hits["/mnist.pkl.gz"] == 1  # a stalled source is not retried


def test_redirect_to_ftp_is_refused(out, http_server):
    location = (("Location", "ftp://127.0.0.1/mnist.pkl.gz"),)
    url = http_server.add("/mnist.pkl.gz", http_server.Reply(302, b"", headers=location))
    error = fails_within(
        lambda: fetch_dataset(quick_fetch_config(), out, spec=small_spec(url), sleep=time.sleep),
        max_traced_bytes=20 * MB,
    )
    assert "refusing a redirect to ftp:// URL ftp://127.0.0.1/mnist.pkl.gz" in str(error)


def test_more_than_five_redirects_are_refused(out, http_server):
    for hop in range(7):
        location = (("Location", http_server.url(f"/hop{hop + 1}")),)
        http_server.add(f"/hop{hop}", http_server.Reply(302, b"", headers=location))
    url = http_server.url("/hop0")
    fails_within(
        lambda: fetch_dataset(quick_fetch_config(), out, spec=small_spec(url), sleep=time.sleep),
        max_traced_bytes=20 * MB,
    )
    assert http_server.hits["/hop5"] == 1 and http_server.hits["/hop6"] == 0


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_local_source_must_be_a_regular_file(tmp_path, out, kind):
    import os

    source = tmp_path / "mnist.pkl.gz"
    if kind == "fifo":
        os.mkfifo(source)  # reading it would wait for a writer forever
    else:
        source.symlink_to("/dev/zero")  # reading it would never end
    error = fails_within(
        lambda: fetch_dataset(quick_fetch_config(source=str(source)), out, sleep=time.sleep),
        max_traced_bytes=20 * MB,
    )
    assert f"{source} (not a regular file)" in str(error)


def test_retry_delays_double_up_to_a_cap():
    assert [backoff_delay_s(1.0, n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay_s(100.0, 3) == 100.0  # a larger first delay stays as set


# --- raw files -------------------------------------------------------------------------------


def gz_file(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
    return path


def test_pickle_beyond_the_stream_limit_stops_there(tmp_path):
    # Small on disk (zeros compress 1000:1), large unpickled: the limit is on what is read.
    path = gz_file(tmp_path / PICKLE_FILE, pickle.dumps(np.zeros(5 * MB, np.uint8), protocol=2))
    error = fails_within(
        lambda: raw_formats.read_pickle(path, max_bytes=MB),
        max_traced_bytes=4 * MB,
    )
    assert f"more than {MB} bytes of pickle data, the limit" in str(error)
    assert str(path) in str(error)


def test_pickle_of_many_opcodes_stops_at_the_opcode_limit(tmp_path):
    # Each EMPTY_LIST opcode is one byte that builds a 56-byte list.
    path = gz_file(tmp_path / PICKLE_FILE, b"\x80\x02(" + b"]" * 100_000 + b"l.")
    error = fails_within(
        lambda: raw_formats.read_pickle(path, max_opcodes=1000),
        max_traced_bytes=4 * MB,
    )
    assert "more than 1000 pickle opcodes, the limit" in str(error)


class _HugeArray:
    """Pickles as numpy's own array constructor asked for 10**12 bytes."""

    def __reduce__(self) -> tuple[Any, ...]:
        return np.ndarray.__reduce__(np.zeros(0))[0], (np.ndarray, (10**12,), b"b")


def test_pickle_asking_for_a_huge_array_is_refused_before_allocating(tmp_path):
    path = gz_file(tmp_path / PICKLE_FILE, pickle.dumps(_HugeArray(), protocol=2))
    error = fails_within(lambda: raw_formats.read_pickle(path), max_traced_bytes=4 * MB)
    assert f"refusing a {10**12}-byte array, over the limit of 400000000 bytes" in str(error)


def idx_images_header(rows: int) -> bytes:
    return struct.pack(">iiii", 0x803, rows, 28, 28)


@pytest.mark.parametrize(
    ("rows", "body_bytes", "max_rows", "message"),
    [
        (10**9, 0, None, "header says 1000000000 images; the limit is 0 to 1000000"),
        (-1, 0, None, "header says -1 images; the limit is 0 to 1000000"),
        (2000, 0, 1000, "header says 2000 images; the limit is 0 to 1000"),
        (1000, 0, 1000, "header says 1000 images (784016 bytes) but the file holds 16 bytes"),
        (10, 7841, None, "header says 10 images (7856 bytes) but the file holds more than 7856"),
    ],
)
def test_idx_header_is_checked_before_the_body_is_read(
    tmp_path, rows, body_bytes, max_rows, message
):
    synthetic.write_idx(tmp_path, synthetic.make_splits((60, 12, 12), seed=1))
    path = gz_file(
        tmp_path / IDX_FILES["train_images"], idx_images_header(rows) + bytes(body_bytes)
    )
    limit = {} if max_rows is None else {"max_rows": max_rows}
    error = fails_within(lambda: raw_formats.read_idx(tmp_path, **limit), max_traced_bytes=4 * MB)
    assert str(error).startswith(f"{path}: {message}")


def write_raw(raw_dir: Path, fmt: str, replace: dict[str, bytes]) -> Path:
    """A raw directory as fetch leaves it, with some files' content replaced (gzip'd) and
    dataset.json's sizes updated to match (as a checksum the user trusted would)."""
    synthetic.write_raw_dir(raw_dir, fmt, synthetic.make_splits((60, 12, 12), seed=1))
    description = json.loads((raw_dir / "dataset.json").read_text())
    for name, content in replace.items():
        gz_file(raw_dir / name, content)
        size = (raw_dir / name).stat().st_size
        description["files"][name] = {"md5": file_digest(raw_dir / name, "md5"), "bytes": size}
    (raw_dir / "dataset.json").write_text(json.dumps(description))
    return raw_dir


@pytest.mark.slow
def test_prepare_stage_refuses_an_idx_header_claiming_a_billion_images(tmp_path):
    images = {IDX_FILES["train_images"]: idx_images_header(10**9)}
    raw = write_raw(tmp_path / "raw", "idx", images)
    out = tmp_path / "prepared"
    params = tmp_path / "params.yaml"
    params.write_text(complete_params("prepare: {shard_size: 100}\n"))
    run = run_stage_script("prepare", "--params", str(params), "--raw", str(raw), "--out", str(out))
    assert_one_line_failure(run, "prepare", "header says 1000000000 images; the limit")
    assert run.peak_rss_kb < STAGE_BASE_RSS_KB
    assert run.seconds < HANG_GUARD_S  # a hang guard, not a speed target
    assert not out.exists() and leftovers(tmp_path) == []


# --- prepared data ---------------------------------------------------------------------------


@pytest.fixture
def data(tmp_path: Path, prepared: Path) -> Path:
    """A private copy of the tiny prepared data set, free to damage."""
    copy = tmp_path / "prepared"
    shutil.copytree(prepared, copy)
    return copy


def edit_manifest(data: Path, **changes: Any) -> Path:
    path = data / prepared.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_shard_must_be_a_regular_file(data, kind):
    shard = data / "valid" / "shard-00000.pt"
    shard.unlink()
    if kind == "device":
        shard.symlink_to("/dev/zero")  # would read without end
    else:
        os.mkfifo(shard)  # would wait for a writer without end
    error = fails_within(lambda: prepared.load_split(data, "valid"), max_traced_bytes=4 * MB)
    assert str(error) == f"{shard}: not a regular file; re-run `dvc repro prepare`"


def test_shard_larger_than_its_rows_allow_is_not_read(data):
    shard = data / "valid" / "shard-00000.pt"
    with open(shard, "r+b") as f:
        f.truncate(50 * MB)  # sparse: no disk, but 50 MB if read
    error = fails_within(lambda: prepared.load_split(data, "valid"), max_traced_bytes=4 * MB)
    assert f"{shard}: {50 * MB} bytes, more than its manifest rows allow" in str(error)


def test_shard_label_outside_the_classes_names_the_shard(data):
    file = "valid/shard-00000.pt"
    payload = torch.load(data / file, weights_only=True)
    payload["labels"][3] = 10
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    (data / file).write_bytes(buffer.getvalue())
    manifest = json.loads((data / prepared.MANIFEST_FILE).read_text())
    manifest["splits"]["valid"]["shards"][0]["sha256"] = hashlib.sha256(
        buffer.getvalue()
    ).hexdigest()
    (data / prepared.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(PipelineError) as info:
        prepared.load_split(data, "valid")
    assert str(info.value) == (
        f"{data / file}: labels outside 0-9 (min 0, max 10); re-run `dvc repro prepare`"
    )


def test_manifest_over_its_size_limit_is_not_parsed(data):
    # Millions of class names at full scale (4.3 GiB before); 200,000 here, 1.4 MB of JSON.
    path = edit_manifest(data, class_names=[f"c{i}" for i in range(200_000)])
    error = fails_within(lambda: prepared.read_manifest(data), max_traced_bytes=4 * MB)
    assert str(error).startswith(f"{path}: larger than the limit of 1000000 bytes")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"class_names": [f"c{i}" for i in range(1001)]},
            "class_names must be a list of 2 to 1000",
        ),
        ({"class_names": ["x" * 101, "y"]}, "class_names[0] must be a string of at most 100"),
        ({"image_shape": [2800, 2800]}, "image_shape is [2800, 2800], expected [28, 28]"),
        ({"train_pixel_std": float("nan")}, "train_pixel_std must be a number in (0, 1], got nan"),
        ({"train_pixel_std": 0}, "train_pixel_std must be a number in (0, 1], got 0"),
        ({"train_pixel_mean": float("inf")}, "train_pixel_mean must be a number in [0, 1]"),
        ({"splits": {}}, "splits must be exactly train, valid, test"),
    ],
)
def test_manifest_values_are_checked_before_use(data, changes, problem):
    path = edit_manifest(data, **changes)
    with pytest.raises(PipelineError) as info:
        prepared.read_manifest(data)
    message = str(info.value)
    assert message.startswith(f"{path}: {problem}") and message.endswith("`dvc repro prepare`")


@pytest.mark.slow
def test_train_stage_blames_the_manifest_for_a_nan_std(tmp_path, data):
    path = edit_manifest(data, train_pixel_std=float("nan"))
    params = tmp_path / "params.yaml"
    params.write_text(complete_params("train: {device: cpu, epochs: 1, threads: 1}\n"))
    model, live = tmp_path / "model.pt", tmp_path / "live"
    run = run_stage_script(
        "train",
        "--params",
        str(params),
        "--data",
        str(data),
        "--model",
        str(model),
        "--log-dir",
        str(live),
    )
    assert_one_line_failure(run, "train", f"{path}: train_pixel_std must be a number")
    assert "train.lr" not in run.stderr and not model.exists() and not live.exists()


# --- checkpoints -----------------------------------------------------------------------------


def small_checkpoint(path: Path) -> dict[str, Any]:
    """A real checkpoint of a tiny MLP (784-4-10), as the train stage saves it; its payload."""
    config = model_config(hidden_sizes=(4,))
    spec = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.2, pixel_std=0.3)
    model = build_model(config, spec)
    save_checkpoint(path, model, config, spec, list(DIGIT_NAMES), make_params(model=config), {})
    return torch.load(path, weights_only=True)


def test_checkpoint_claiming_huge_layers_fails_before_allocating(tmp_path):
    path = tmp_path / "model.pt"
    payload = small_checkpoint(path)
    payload["model_config"]["hidden_sizes"] = [2048] * 8  # 31 M values, 124 MB as float32
    torch.save(payload, path)
    process = psutil.Process()
    rss_before = process.memory_info().rss
    started = time.monotonic()
    with pytest.raises(PipelineError) as info:
        load_checkpoint(path)
    assert time.monotonic() - started < HANG_GUARD_S  # a hang guard, not a speed target
    assert process.memory_info().rss - rss_before < 100 * MB
    assert str(info.value) == (
        f"{path}: weights do not match the model config (2.weight is [4, 784], the config "
        "needs [2048, 784]; 31,002,634 values implied, 3,190 held)"
    )
    assert "\n" not in str(info.value)


def test_checkpoint_config_past_the_parameter_limit_is_refused_as_params_are(tmp_path):
    path = tmp_path / "model.pt"
    payload = small_checkpoint(path)
    payload["model_config"]["hidden_sizes"] = [65_536] * 8  # 30 G values, 120 GB as float32
    torch.save(payload, path)
    error = fails_within(lambda: load_checkpoint(path), max_traced_bytes=10 * MB)
    assert str(error) == (
        f"{path}: model_config.hidden_sizes: the model would have 30,117,330,954 parameters, "
        "over the limit of 100,000,000; use smaller layers"
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"num_classes": 10**6}, "input_spec.num_classes: expected 2 to 1000, got 1000000"),
        ({"pixel_std": float("nan")}, "input_spec.pixel_std: expected a number in (0, 1], got nan"),
        ({"image_shape": [2800, 28]}, "input_spec.image_shape: expected [28, 28]"),
    ],
)
def test_checkpoint_input_spec_is_checked(tmp_path, change, problem):
    path = tmp_path / "model.pt"
    payload = small_checkpoint(path)
    payload["input_spec"].update(change)
    torch.save(payload, path)
    with pytest.raises(PipelineError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"{path}: {problem}"


def test_checkpoint_over_the_size_limit_is_not_loaded(tmp_path, monkeypatch):
    from mnist_pipeline.model import checkpoint

    path = tmp_path / "model.pt"
    small_checkpoint(path)
    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", 1000)
    with pytest.raises(PipelineError, match=r"bytes, over the checkpoint limit of 1000$"):
        load_checkpoint(path)


@pytest.mark.slow
def test_evaluate_stage_refuses_a_checkpoint_claiming_huge_layers(tmp_path, prepared):
    path = tmp_path / "model.pt"
    payload = small_checkpoint(path)
    payload["model_config"]["hidden_sizes"] = [65_536] * 8
    torch.save(payload, path)
    params = tmp_path / "params.yaml"
    params.write_text(complete_params("evaluate: {device: cpu}\n"))
    metrics, plots = tmp_path / "metrics.json", tmp_path / "plots"
    run = run_stage_script(
        "evaluate",
        "--params",
        str(params),
        "--data",
        str(prepared),
        "--model",
        str(path),
        "--metrics",
        str(metrics),
        "--tables",
        str(plots),
        "--figures",
        str(tmp_path / "figures"),
    )
    assert_one_line_failure(run, "evaluate", "parameters, over the limit of 100,000,000")
    assert run.peak_rss_kb < STAGE_BASE_RSS_KB
    assert run.seconds < HANG_GUARD_S  # a hang guard, not a speed target
    assert not metrics.exists() and not plots.exists() and leftovers(tmp_path) == []
    assert not (tmp_path / "figures").exists()


# --- kills: no leftovers ---------------------------------------------------------------------


def test_stale_temporaries_of_killed_runs_are_removed_by_name(tmp_path):
    dest = tmp_path / "prepared"
    dead = tmp_path / ".prepared.tmp-999999999-abc"  # no such process
    alive = tmp_path / f".prepared.tmp-{os.getppid()}-def"  # a concurrent run: kept
    legacy = tmp_path / ".prepared.tmp-k3j_x9"  # an older version's name, no pid
    others = [tmp_path / ".prepared2.tmp-1-x", tmp_path / ".other.tmp-999999999-a"]
    for path in (dead, alive, *others):
        path.mkdir()
    legacy.write_text("half-written")
    assert sorted(remove_stale_temporaries(dest)) == sorted([dead, legacy])
    assert sorted(tmp_path.iterdir()) == sorted([alive, *others])
    with atomic_dir(dest) as tmp:
        assert tmp.name.startswith(f".prepared.tmp-{os.getpid()}-")
    assert dest.is_dir() and alive.exists()


def start_stage(
    stage: str,
    *args: str,
    stdout: int = subprocess.DEVNULL,
    hold: str = "",
    hold_dir: Path | None = None,
) -> subprocess.Popen[str]:
    """Start stages/<stage>.py; run by `python -c hold` if `hold` is given (a wrapper of
    mnist_pipeline.testing.holds), with `hold_dir` (a sitecustomize.py's) on the path."""
    env = python_env(*([hold_dir] if hold_dir else []), PYTHONUNBUFFERED="1")
    wrapper = [sys.executable, "-c", hold] if hold else [sys.executable]
    command = [*wrapper, str(REPO / "stages" / f"{stage}.py"), *args]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=stdout, text=True)


def wait_for_line(process: subprocess.Popen[str], prefix: str) -> None:
    """Until the stage prints a line starting with `prefix` (and holds there)."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(prefix):
            return
    raise AssertionError(f"the stage ended before {prefix!r}: {process.communicate()[1]}")


@contextlib.contextmanager
def killed_at_exit(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """A held stage never goes on by itself: kill it whatever the test's outcome."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory) -> Path:
    """Raw files that prepare writes as a few dozen shards of 5 rows each."""
    raw = tmp_path_factory.mktemp("raw") / "raw"
    synthetic.write_raw_dir(raw, "idx", synthetic.make_splits((100, 20, 20), seed=3))
    return raw


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_killed_prepare_leaves_nothing_after_the_next_run(tmp_path, small_raw, signum):
    params = tmp_path / "params.yaml"
    params.write_text(complete_params("prepare: {shard_size: 5}\n"))
    out = tmp_path / "data" / "prepared"
    args = ("--params", str(params), "--raw", str(small_raw), "--out", str(out))
    # Held once its first split's shards are in its temporary directory: the signal
    # lands mid-write however fast the machine is.
    hold = holds.hold_prepare_mid_write()
    with killed_at_exit(
        start_stage("prepare", *args, stdout=subprocess.PIPE, hold=hold)
    ) as process:
        wait_for_line(process, holds.HELD_LINE)
        assert leftovers(out.parent) != []
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    if signum == signal.SIGTERM:  # unwinds: one line, 143, its temporary directory gone
        assert process.returncode == 143 and stderr.strip() == "prepare.py: interrupted (SIGTERM)"
        assert leftovers(out.parent) == []
    else:
        assert process.returncode == -signal.SIGKILL and leftovers(out.parent) != []
    assert not out.exists()
    rerun = start_stage("prepare", *args)
    assert rerun.wait(timeout=120) == 0, rerun.communicate()[1]
    assert out.is_dir() and leftovers(out.parent) == []


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_killed_train_leaves_nothing_after_the_next_run(tmp_path, prepared, signum):
    params = tmp_path / "params.yaml"
    params.write_text(
        complete_params("train: {device: cpu, epochs: 3, batch_size: 50, threads: 1}\n")
    )
    model, live = tmp_path / "models" / "model.pt", tmp_path / "metrics" / "train"
    args = ["--params", str(params), "--data", str(prepared), "--model", str(model)]
    # Held after its first epoch, mid-training: its outputs are written whole at the
    # end, so none exists, not even a temporary one, however fast the machine is.
    hold = holds.hold_after_epoch(1)
    process = start_stage("train", *args, "--log-dir", str(live), stdout=subprocess.PIPE, hold=hold)
    with killed_at_exit(process):
        wait_for_line(process, "epoch   1:")
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    if signum == signal.SIGTERM:
        assert process.returncode == 143 and stderr.strip() == "train.py: interrupted (SIGTERM)"
    else:
        assert process.returncode == -signal.SIGKILL
    assert leftovers(live.parent) == [] and leftovers(model.parent) == []
    assert not model.exists() and not live.exists()
    params.write_text(
        complete_params("train: {device: cpu, epochs: 1, batch_size: 50, threads: 1}")
    )
    # The next run: the stage's library entry, in this process.
    train_stage(load_params(params), prepared, TrainOutputs(model, live), torch.device("cpu"))
    assert model.exists() and live.is_dir()
    assert leftovers(live.parent) == [] and leftovers(model.parent) == []


def living(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie has ended: nothing may reap it in a container)."""
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.slow
def test_killed_launcher_takes_its_workers_along(tmp_path, prepared):
    params = tmp_path / "params.yaml"
    params.write_text(
        complete_params(
            "train: {device: cpu, epochs: 3, batch_size: 50, threads: 1}\n"
            "distributed: {nproc_per_node: 2}\n"
        )
    )
    model, live = tmp_path / "models" / "model.pt", tmp_path / "metrics" / "train"
    args = ["--params", str(params), "--data", str(prepared), "--model", str(model)]
    # Rank 0 holds after its first epoch, mid-training, until its launcher's death kills it.
    (tmp_path / "hold").mkdir()
    (tmp_path / "hold/sitecustomize.py").write_text(holds.hold_after_epoch_sitecustomize(1))
    launcher = start_stage(
        "train", *args, "--log-dir", str(live), stdout=subprocess.PIPE, hold_dir=tmp_path / "hold"
    )
    wait_for_line(launcher, "epoch   1:")
    workers = psutil.Process(launcher.pid).children(recursive=True)
    assert len(workers) == 2
    launcher.kill()
    launcher.communicate(timeout=30)
    deadline = time.monotonic() + 60  # a hang guard: the kernel kills them (PDEATHSIG)
    try:
        while living(workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert living(workers) == []
        assert not model.exists() and not live.exists()
    finally:
        for worker in living(workers):  # a failure must not leave them training for the suite
            worker.kill()


# --- params.yaml before DVC reads it ---------------------------------------------------------


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (BILLION_LAUGHS, "line 1: YAML anchors and aliases (&name, *name) are not allowed"),
        ("seed: 0\n" + "#" * 1_000_001, "larger than the limit of 1000000 bytes"),
        (
            yaml.safe_dump(params_data({"train": {"epochs": 10001}})),
            "train.epochs: must be <= 10000, got 10001",
        ),
        ("train: [1, 2\n", "not valid YAML"),
    ],
)
def test_check_params_refuses_before_dvc_reads(tmp_path, text, problem):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    error = fails_within(lambda: check_params_file(path), max_traced_bytes=20 * MB)
    assert str(error).startswith(f"{path}: {problem}")


def test_check_params_passes_the_committed_file_and_wants_free_disk(committed_params):
    check_params_file(committed_params)
    with pytest.raises(PipelineError, match="bytes free, fewer than the"):
        check_params_file(committed_params, min_free_bytes=2**62)
    assert "scripts/check_params.py params.yaml" in (REPO / "Makefile").read_text()
