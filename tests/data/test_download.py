"""The fetch stage: sources, mirror fallback, retries, checksums, atomic output.

Everything runs against local files and a scripted server on 127.0.0.1; the
md5s are of the tests' own bytes (passed as fetch.checksums or an injected spec).
"""

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_pipeline.config.params import FetchConfig, Location
from mnist_pipeline.data import registry
from mnist_pipeline.data.download import candidates, fetch_dataset
from mnist_pipeline.data.registry import (
    DIGIT_NAMES,
    FASHION_NAMES,
    IDX_FILES,
    MNIST,
    PICKLE_FILE,
    DatasetSpec,
    Source,
)
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.testing.configs import complete_params, fetch_config
from tests.support import REPO, python_env

IDX_NAMES = tuple(IDX_FILES.values())


def gz(data: bytes, level: int = 9, mtime: int = 0) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=mtime)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


PICKLE_BYTES = gz(b"pretend pickle " * 100)
IDX_BYTES = {name: gz(f"pretend {name} ".encode() * 100) for name in IDX_NAMES}
ALL_BYTES = {PICKLE_FILE: PICKLE_BYTES, **IDX_BYTES}
ALL_MD5S = {name: md5(data) for name, data in ALL_BYTES.items()}


def make_config(**overrides) -> FetchConfig:
    values = {"checksums": ALL_MD5S, "retries": 3, "backoff_s": 0.5, "timeout_s": 5.0}
    return fetch_config(**(values | overrides))


def make_spec(pickle_mirrors=(), idx_mirrors=(), md5s=None) -> DatasetSpec:
    sources = []
    if pickle_mirrors:
        sources.append(Source("pickle", tuple(pickle_mirrors)))
    if idx_mirrors:
        sources.append(Source("idx", tuple(idx_mirrors)))
    return DatasetSpec("mnist", DIGIT_NAMES, tuple(sources), md5s or {})


def write_files(directory: Path, names) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_bytes(ALL_BYTES[name])
    return directory


def serve_files(server, prefix: str, names) -> str:
    for name in names:
        server.add(prefix + name, server.Reply(200, ALL_BYTES[name]))
    return server.url(prefix)


def expected_description(fmt: str, names, class_names=DIGIT_NAMES, dataset="mnist") -> dict:
    files = {name: {"md5": ALL_MD5S[name], "bytes": len(ALL_BYTES[name])} for name in names}
    return {"dataset": dataset, "format": fmt, "class_names": list(class_names), "files": files}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# --- where the files come from ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["path", "file_url", "http"])
def test_pickle_from_local_path_file_url_or_http(tmp_path, out, http_server, kind):
    local = write_files(tmp_path / "src", [PICKLE_FILE]) / PICKLE_FILE
    source = {
        "path": str(local),
        "file_url": local.as_uri(),
        "http": http_server.add("/x/mnist.pkl.gz", http_server.Reply(200, PICKLE_BYTES)),
    }[kind]

    description = fetch_dataset(make_config(source=source), out)

    assert description == expected_description("pickle", [PICKLE_FILE])
    assert json.loads((out / "dataset.json").read_text()) == description
    assert listing(out) == ["dataset.json", PICKLE_FILE]
    assert not (out / PICKLE_FILE).is_symlink()
    assert (out / PICKLE_FILE).read_bytes() == PICKLE_BYTES


def test_dataset_json_does_not_name_the_source(tmp_path, out):
    local = write_files(tmp_path / "src", [PICKLE_FILE])
    fetch_dataset(make_config(source=str(local)), out)
    assert str(local) not in (out / "dataset.json").read_text()


def test_local_dir_prefers_the_pickle(tmp_path, out):
    local = write_files(tmp_path / "src", ALL_BYTES)
    description = fetch_dataset(make_config(source=str(local)), out)
    assert description["format"] == "pickle"
    assert listing(out) == ["dataset.json", PICKLE_FILE]


@pytest.mark.parametrize("as_url", [False, True])
def test_local_dir_without_pickle_uses_idx_files(tmp_path, out, as_url):
    local = write_files(tmp_path / "src", IDX_NAMES)
    source = local.as_uri() if as_url else str(local)
    description = fetch_dataset(make_config(source=source), out)
    assert description == expected_description("idx", IDX_NAMES)
    assert listing(out) == sorted(["dataset.json", *IDX_NAMES])


def test_http_directory_without_pickle_uses_idx_files(out, http_server):
    base = serve_files(http_server, "/data/", IDX_NAMES)
    description = fetch_dataset(make_config(source=base), out)
    assert description == expected_description("idx", IDX_NAMES)
    assert http_server.hits["/data/mnist.pkl.gz"] == 1  # looked for the pickle first


@pytest.mark.parametrize("kind", ["path", "http"])
def test_fashion_mnist_from_a_directory(tmp_path, out, http_server, kind):
    if kind == "path":
        source = str(write_files(tmp_path / "src", IDX_NAMES))
    else:  # a base URL without the trailing slash still names the directory
        source = serve_files(http_server, "/fashion/", IDX_NAMES).rstrip("/")
    description = fetch_dataset(make_config(dataset="fashion-mnist", source=source), out)
    assert description == expected_description("idx", IDX_NAMES, FASHION_NAMES, "fashion-mnist")


def test_builtin_mnist_candidates_try_every_pickle_mirror_then_idx():
    found = candidates(MNIST, None)
    assert [c.format for c in found] == ["pickle", "pickle", "pickle", "idx"]
    pickles = [c.files[PICKLE_FILE] for c in found[:3]]
    assert pickles == [Location("url", mirror) for mirror in MNIST.sources[0].mirrors]
    base = MNIST.sources[1].mirrors[0]
    assert found[3].files == {name: Location("url", base + name) for name in IDX_NAMES}


def test_unsupported_scheme_is_rejected_when_the_config_is_built():
    with pytest.raises(PipelineError, match=r"source: ftp://example\.org/m\.gz: unsupported URL"):
        make_config(source="ftp://example.org/m.gz")


def test_missing_local_source_says_how_to_fix_it(tmp_path, out):
    missing = tmp_path / "nowhere" / PICKLE_FILE
    with pytest.raises(PipelineError) as info:
        fetch_dataset(make_config(source=str(missing)), out)
    message = str(info.value)
    assert str(missing) in message and "no such file or folder" in message
    assert "fetch.source" in message
    assert listing(out) == []


# --- mirrors, retries, fallback ----------------------------------------------------------


def test_404_moves_on_at_once_and_500_is_retried(out, http_server):
    Reply = http_server.Reply
    gone = http_server.url("/gone.pkl.gz")  # unscripted: 404
    flaky = http_server.add("/flaky.pkl.gz", Reply(500), Reply(200, PICKLE_BYTES))
    sleeps = []

    description = fetch_dataset(
        make_config(), out, spec=make_spec([gone, flaky]), sleep=sleeps.append
    )

    assert description == expected_description("pickle", [PICKLE_FILE])
    assert http_server.hits == {"/gone.pkl.gz": 1, "/flaky.pkl.gz": 2}
    assert sleeps == [0.5]


def test_retries_back_off_exponentially_then_try_the_next_mirror(out, http_server):
    down = http_server.add("/down", http_server.Reply(503))
    ok = http_server.add("/ok", http_server.Reply(200, PICKLE_BYTES))
    sleeps = []
    config = make_config(retries=4, backoff_s=1.0)

    fetch_dataset(config, out, spec=make_spec([down, ok]), sleep=sleeps.append)

    assert http_server.hits == {"/down": 4, "/ok": 1}
    assert sleeps == [1.0, 2.0, 4.0]


def test_truncated_body_is_retried_then_falls_through(out, http_server):
    short = http_server.add("/short", http_server.Reply(200, PICKLE_BYTES, truncate_to=10))
    ok = http_server.add("/ok", http_server.Reply(200, PICKLE_BYTES))
    sleeps = []

    fetch_dataset(make_config(), out, spec=make_spec([short, ok]), sleep=sleeps.append)

    assert http_server.hits == {"/short": 3, "/ok": 1}
    assert sleeps == [0.5, 1.0]
    assert listing(out) == ["dataset.json", PICKLE_FILE]


def test_truncated_body_then_complete_one_succeeds(out, http_server):
    Reply = http_server.Reply
    url = http_server.add("/p", Reply(200, PICKLE_BYTES, truncate_to=10), Reply(200, PICKLE_BYTES))
    sleeps = []
    fetch_dataset(make_config(), out, spec=make_spec([url]), sleep=sleeps.append)
    assert (out / PICKLE_FILE).read_bytes() == PICKLE_BYTES
    assert sleeps == [0.5]


def test_timeout_is_retried_then_falls_through(out, http_server):
    # A server that never answers: each attempt's 0.05 s timeout trips, however loaded
    # the machine. The deadline only guards against a hang (it would fail the test).
    slow = http_server.add("/slow", http_server.Reply(200, PICKLE_BYTES, hang=True))
    ok = http_server.add("/ok", http_server.Reply(200, PICKLE_BYTES))
    sleeps = []
    config = make_config(retries=2, timeout_s=0.05, deadline_s=600.0)
    fetch_dataset(config, out, spec=make_spec([slow, ok]), sleep=sleeps.append)
    assert http_server.hits == {"/slow": 2, "/ok": 1}
    assert sleeps == [0.5]


def test_pickle_mirrors_gone_falls_back_to_idx(out, http_server):
    spec = make_spec(
        pickle_mirrors=[http_server.url("/a.pkl.gz"), http_server.url("/b.pkl.gz")],
        idx_mirrors=[serve_files(http_server, "/idx/", IDX_NAMES)],
    )
    description = fetch_dataset(make_config(), out, spec=spec)
    assert description == expected_description("idx", IDX_NAMES)
    assert listing(out) == sorted(["dataset.json", *IDX_NAMES])


def test_idx_source_missing_one_file_leaves_nothing(out, http_server):
    base = serve_files(http_server, "/idx/", IDX_NAMES[:3])
    with pytest.raises(PipelineError, match=rf"{IDX_NAMES[3]}.*HTTP 404"):
        fetch_dataset(make_config(), out, spec=make_spec(idx_mirrors=[base]))
    assert listing(out) == []


def test_every_source_failing_gives_one_line_listing_each(out, http_server):
    Reply = http_server.Reply
    spec = make_spec(
        pickle_mirrors=[
            http_server.url("/gone"),
            http_server.add("/down", Reply(503)),
            http_server.add("/bad", Reply(200, gz(b"not mnist"))),
        ],
        idx_mirrors=[http_server.url("/idx/")],
    )
    with pytest.raises(PipelineError) as info:
        fetch_dataset(make_config(retries=2, backoff_s=0), out, spec=spec, sleep=lambda _: None)

    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("could not fetch mnist: tried ")
    for expected in [
        f"{http_server.url('/gone')} (HTTP 404)",
        f"{http_server.url('/down')} (HTTP 503, after 2 attempt(s))",
        f"{http_server.url('/bad')} (checksum mismatch: expected {ALL_MD5S[PICKLE_FILE]}",
        f"{http_server.url('/idx/')} (idx files) ({IDX_NAMES[0]}: HTTP 404)",
    ]:
        assert expected in message
    assert "set fetch.source in params.yaml" in message and "fetch.checksums" in message
    # Offline, the built-in mirrors all fail: the local route of the README is named too.
    assert message.endswith(
        "or, offline, train on Fashion-MNIST from a local folder: `apt-get install "
        "dataset-fashion-mnist`, then `make exp PRESET=fashion-mnist-debian` (README: "
        "Quickstart on Fashion-MNIST)"
    )
    assert listing(out) == []


def test_files_of_another_registered_data_set_get_that_data_set_as_the_fix(
    tmp_path, out, monkeypatch
):
    # fetch.dataset says mnist, fetch.source holds another data set's files (their md5s are
    # that data set's): setting fetch.checksums would train "mnist" on them.
    folder = write_files(tmp_path / "clothes", IDX_NAMES)
    other = DatasetSpec(
        "clothes", FASHION_NAMES, (), {name: frozenset({ALL_MD5S[name]}) for name in IDX_NAMES}
    )
    monkeypatch.setattr(registry, "DATASETS", {"mnist": MNIST, "clothes": other})
    config = make_config(source=str(folder), checksums={})
    with pytest.raises(PipelineError) as info:
        fetch_dataset(config, out, spec=make_spec(idx_mirrors=["http://127.0.0.1:9/"]))
    message = str(info.value)
    assert f"({IDX_NAMES[0]}: clothes's file, not mnist's)" in message
    assert message.endswith(
        "those are clothes's files, not mnist's: set fetch.dataset: clothes in params.yaml "
        "to train on them"
    )
    assert "fetch.checksums" not in message and listing(out) == []


def test_a_source_folder_that_does_not_exist_is_named_as_missing(tmp_path, out):
    missing = tmp_path / "fashoin-mnist"  # a typo
    with pytest.raises(PipelineError) as info:
        fetch_dataset(make_config(source=str(missing)), out)
    assert str(info.value) == (
        f"could not fetch mnist: tried {missing} (no such file or folder); check the path in "
        "fetch.source (params.yaml): nothing is there"
    )


# --- checksums ---------------------------------------------------------------------------


def test_wrong_bytes_are_rejected_named_and_removed(out, http_server):
    evil = gz(b"evil")
    url = http_server.add("/bad.pkl.gz", http_server.Reply(200, evil))
    with pytest.raises(PipelineError) as info:
        fetch_dataset(make_config(), out, spec=make_spec([url]))
    message = str(info.value)
    assert url in message
    assert f"expected {ALL_MD5S[PICKLE_FILE]}" in message
    assert f"got {md5(evil)} (file) / {md5(b'evil')} (gunzipped)" in message
    assert listing(out) == []
    assert http_server.hits["/bad.pkl.gz"] == 1  # a mismatch is not retried


def test_wrong_bytes_move_on_to_the_next_mirror(out, http_server):
    bad = http_server.add("/bad", http_server.Reply(200, gz(b"evil")))
    ok = http_server.add("/ok", http_server.Reply(200, PICKLE_BYTES))
    fetch_dataset(make_config(), out, spec=make_spec([bad, ok]))
    assert (out / PICKLE_FILE).read_bytes() == PICKLE_BYTES


def test_recompressed_copy_matches_by_content_md5(tmp_path, out):
    content = b"the real pickle"
    recompressed = gz(content, level=1, mtime=12345)
    assert md5(recompressed) != md5(gz(content))
    (tmp_path / PICKLE_FILE).write_bytes(recompressed)
    # As data/registry.py lists it: the upstream md5 of the decompressed content.
    spec = make_spec([str(tmp_path / PICKLE_FILE)], md5s={PICKLE_FILE: frozenset({md5(content)})})

    description = fetch_dataset(make_config(checksums={}), out, spec=spec)

    assert description["files"][PICKLE_FILE] == {
        "md5": md5(recompressed),
        "bytes": len(recompressed),
    }


def test_user_checksum_adds_to_the_builtin_ones(tmp_path, out):
    path = write_files(tmp_path / "src", [PICKLE_FILE]) / PICKLE_FILE
    spec = make_spec([str(path)], md5s={PICKLE_FILE: frozenset({"0" * 32})})
    with pytest.raises(PipelineError, match="checksum mismatch"):
        fetch_dataset(make_config(checksums={}), out, spec=spec)
    config = make_config(checksums={PICKLE_FILE: ALL_MD5S[PICKLE_FILE]})
    assert fetch_dataset(config, out, spec=spec)["format"] == "pickle"


def test_non_gzip_file_is_checked_by_its_bytes_only(tmp_path, out):
    path = tmp_path / PICKLE_FILE
    path.write_bytes(b"plain bytes")
    fetch_dataset(make_config(source=str(path), checksums={PICKLE_FILE: md5(b"plain bytes")}), out)
    (out / PICKLE_FILE).unlink()
    with pytest.raises(PipelineError, match=r"\(file\) / not gzip \(gunzipped\)"):
        fetch_dataset(make_config(source=str(path)), out)


# --- the stage script --------------------------------------------------------------------


def run_stage(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    params = tmp_path / "params.yaml"
    params.write_text(complete_params({"fetch": {"source": source, "checksums": ALL_MD5S}}))
    env = python_env()
    command = [
        sys.executable,
        str(REPO / "stages" / "fetch.py"),
        "--params",
        str(params),
        "--out",
        str(tmp_path / "data" / "raw"),
    ]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def test_stage_failure_prints_one_line_and_leaves_no_output(tmp_path):
    result = run_stage(tmp_path, str(tmp_path / "missing" / PICKLE_FILE))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert (
        lines[0].startswith("fetch.py: error: could not fetch mnist") and "fetch.source" in lines[0]
    )
    assert listing(tmp_path / "data") == []  # neither the output nor its temporary sibling


def test_stage_writes_the_output_directory(tmp_path):
    source = write_files(tmp_path / "src", [PICKLE_FILE])
    result = run_stage(tmp_path, str(source))
    assert result.returncode == 0, result.stderr
    raw = tmp_path / "data" / "raw"
    assert listing(raw) == ["dataset.json", PICKLE_FILE]
    assert json.loads((raw / "dataset.json").read_text()) == expected_description(
        "pickle", [PICKLE_FILE]
    )
    assert "mnist (pickle)" in result.stdout


def test_a_list_of_sources_is_tried_in_order(tmp_path):
    first, second = tmp_path / "a" / "mnist.pkl.gz", "http://127.0.0.1:9/b/"
    locations = make_config(source=(str(first), second)).locations
    labels = [c.label for c in candidates(MNIST, locations)]
    assert labels == [str(first), second + "mnist.pkl.gz", second + " (idx files)"]
