"""Hostile inputs, at small scale: each one fails fast, in bounded memory, with one line.

Every case is built at run time, with the limits lowered through params or function
arguments so that it runs in seconds; the full-scale figures are in the README
("Limits and troubleshooting"). HTTP cases are served from 127.0.0.1.
"""

import gzip
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mnist_pipeline.config.params import FetchConfig
from mnist_pipeline.data.download import backoff_delay_s, fetch_dataset
from mnist_pipeline.data.registry import DIGIT_NAMES, PICKLE_FILE, DatasetSpec, FileLimits, Source
from mnist_pipeline.errors import PipelineError

MB = 1_000_000


def fails_within(
    action: Callable[[], Any], *, max_seconds: float, max_traced_bytes: int
) -> PipelineError:
    """Run `action`, which must raise a one-line PipelineError in time and memory bounds
    (peak of what Python allocates, tracemalloc); return the error."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(PipelineError) as info:
            action()
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed_s = time.monotonic() - started
    message = str(info.value)
    assert "\n" not in message
    assert elapsed_s < max_seconds, f"took {elapsed_s:.1f} s: {message}"
    assert peak_bytes < max_traced_bytes, f"peak {peak_bytes / MB:.0f} MB: {message}"
    return info.value


def leftovers(directory: Path) -> list[str]:
    """Temporary files and directories (.part downloads, .tmp- siblings) under `directory`."""
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.name.endswith(".part") or ".tmp-" in p.name
    )


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


def fetch_config(**overrides: Any) -> FetchConfig:
    values: dict[str, Any] = {"retries": 1, "backoff_s": 0.0, "timeout_s": 5.0}
    return FetchConfig(**(values | overrides))


def test_gzip_bomb_stops_at_the_content_limit(out, http_server):
    bomb = gzip.compress(bytes(50 * MB), compresslevel=9)  # ~50 kB inflating to 50 MB
    url = http_server.add("/mnist.pkl.gz", http_server.Reply(200, bomb))
    error = fails_within(
        lambda: fetch_dataset(fetch_config(), out, spec=small_spec(url), sleep=time.sleep),
        max_seconds=20,
        max_traced_bytes=20 * MB,
    )
    assert f"gunzips to more than {MB} bytes" in str(error)


def test_content_length_over_the_limit_is_refused_before_the_body(out, http_server):
    url = http_server.add("/mnist.pkl.gz", http_server.Reply(200, bytes(2 * MB)))
    error = fails_within(
        lambda: fetch_dataset(fetch_config(), out, spec=small_spec(url), sleep=time.sleep),
        max_seconds=20,
        max_traced_bytes=20 * MB,
    )
    assert f"Content-Length {2 * MB}, over the limit of {MB} bytes" in str(error)


def test_endless_body_from_a_user_source_stops_at_fetch_max_bytes(out, http_server):
    url = http_server.add("/mnist.pkl.gz", http_server.Reply(200, bytes(1 << 16), endless=True))
    config = fetch_config(source=url, max_bytes=MB)
    error = fails_within(
        lambda: fetch_dataset(config, out, sleep=time.sleep),
        max_seconds=20,
        max_traced_bytes=20 * MB,
    )
    assert f"body over the limit of {MB} bytes" in str(error)


@pytest.mark.parametrize("part", ["body", "headers"])
def test_trickling_server_trips_the_deadline(out, http_server, part):
    # One byte every 0.1 s never trips the 5 s read timeout; the 1 s deadline ends it.
    slow = {"body_byte_delay_s": 0.1} if part == "body" else {"header_byte_delay_s": 0.1}
    url = http_server.add("/mnist.pkl.gz", http_server.Reply(200, bytes(1000), **slow))
    config = fetch_config(deadline_s=1.0, retries=3)
    error = fails_within(
        lambda: fetch_dataset(config, out, spec=small_spec(url), sleep=time.sleep),
        max_seconds=10,
        max_traced_bytes=20 * MB,
    )
    assert "not complete within fetch.deadline_s = 1 s" in str(error)


def test_redirect_to_ftp_is_refused(out, http_server):
    location = (("Location", "ftp://127.0.0.1/mnist.pkl.gz"),)
    url = http_server.add("/mnist.pkl.gz", http_server.Reply(302, b"", headers=location))
    error = fails_within(
        lambda: fetch_dataset(fetch_config(), out, spec=small_spec(url), sleep=time.sleep),
        max_seconds=10,
        max_traced_bytes=20 * MB,
    )
    assert "refusing a redirect to ftp:// URL ftp://127.0.0.1/mnist.pkl.gz" in str(error)


def test_more_than_five_redirects_are_refused(out, http_server):
    for hop in range(7):
        location = (("Location", http_server.url(f"/hop{hop + 1}")),)
        http_server.add(f"/hop{hop}", http_server.Reply(302, b"", headers=location))
    url = http_server.url("/hop0")
    fails_within(
        lambda: fetch_dataset(fetch_config(), out, spec=small_spec(url), sleep=time.sleep),
        max_seconds=10,
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
        lambda: fetch_dataset(fetch_config(source=str(source)), out, sleep=time.sleep),
        max_seconds=10,
        max_traced_bytes=20 * MB,
    )
    assert f"{source} (not a regular file)" in str(error)


def test_retry_delays_double_up_to_a_cap():
    assert [backoff_delay_s(1.0, n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay_s(100.0, 3) == 100.0  # a larger first delay stays as set
