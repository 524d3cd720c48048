"""The real `dvc repro` on a copy of this repository, fed by a local HTTP server.

Synthetic data in the exact upstream layouts (mnist.pkl.gz and idx) is served
from 127.0.0.1 by three mirrors: one missing (404), one sending a truncated
body, one correct. `dvc repro` must get the data through fetch -> prepare, and the idx
route must give the very same prepared data. (The stages after prepare, and how DVC
re-runs them, are tests/e2e/test_workflows_e2e.py's, on a local source.)
"""

import hashlib

import pytest

from mnist_pipeline.data.registry import IDX_FILES, PICKLE_FILE
from mnist_pipeline.testing.dvc_repo import make_repo, read_json, run, set_params, stages_run
from mnist_pipeline.testing.synthetic import make_splits, write_idx, write_pickle
from tests.support import REPO

pytestmark = pytest.mark.e2e

ROWS = (1000, 200, 200)  # train, valid, test


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory):
    """The same synthetic images as a pickle and as four idx files: name -> bytes."""
    folder = tmp_path_factory.mktemp("raw")
    splits = make_splits(ROWS, seed=7)
    write_pickle(folder / PICKLE_FILE, splits)
    write_idx(folder, splits)
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_repro_through_mirrors_then_idx(tmp_path, http_server, raw_files):
    pickle_bytes = raw_files[PICKLE_FILE]
    missing = http_server.url("/gone/mnist.pkl.gz")
    truncated = http_server.add(
        "/short/mnist.pkl.gz", http_server.Reply(200, pickle_bytes, truncate_to=1000)
    )
    good = http_server.add("/good/mnist.pkl.gz", http_server.Reply(200, pickle_bytes))
    repo = make_repo(tmp_path / "repo", REPO)
    set_params(
        repo,
        {
            "fetch": {
                "source": [missing, truncated, good],
                "checksums": {PICKLE_FILE: _md5(pickle_bytes)},
            }
        },
    )
    _commit_small_params(repo)

    # The data stages: what follows them is the same whatever the source was (the
    # reproduced repository of tests/conftest.py runs them on a local file).
    first = run(repo, "dvc", "repro", "prepare")
    assert stages_run(first.stdout) == ["fetch", "prepare"]
    assert http_server.hits["/gone/mnist.pkl.gz"] == 1  # 404: no retry
    assert http_server.hits["/short/mnist.pkl.gz"] == 2  # truncated: retried, then given up
    assert http_server.hits["/good/mnist.pkl.gz"] == 1
    manifest = read_json(repo / "data/prepared/manifest.json")
    assert {s: manifest["splits"][s]["rows"] for s in ("train", "valid", "test")} == dict(
        zip(("train", "valid", "test"), ROWS, strict=True)
    )
    # A second repro right after does nothing (and asks no server).
    assert stages_run(run(repo, "dvc", "repro", "prepare").stdout) == []
    assert sum(http_server.hits.values()) == 4

    # The idx route (pickle mirrors gone) gives byte-identical prepared data, so DVC
    # re-runs fetch and prepare and would keep what was trained on it (DVC compares
    # outputs by content: test_workflows_e2e shows it for the checkpoint).
    shards_before = _prepared_digests(repo)
    base = http_server.url("/idx/")
    for name in IDX_FILES.values():
        http_server.add(f"/idx/{name}", http_server.Reply(200, raw_files[name]))
    set_params(
        repo,
        {
            "fetch": {
                "source": base,
                "checksums": {n: _md5(raw_files[n]) for n in IDX_FILES.values()},
            }
        },
    )
    assert stages_run(run(repo, "dvc", "repro", "prepare").stdout) == ["fetch", "prepare"]
    assert sorted((repo / "data/raw").iterdir()) == sorted(
        [repo / "data/raw" / n for n in IDX_FILES.values()] + [repo / "data/raw/dataset.json"]
    )
    assert _prepared_digests(repo) == shards_before


def _commit_small_params(repo):
    from mnist_pipeline.testing.dvc_repo import SMALL_PARAMS

    set_params(repo, SMALL_PARAMS)
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "small params")


def _prepared_digests(repo):
    root = repo / "data/prepared"
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
