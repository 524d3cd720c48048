"""The review workflow's data check: a repository whose data only the author's machine
has (no DVC remote, fetch.source a local folder, as in the README's Quickstart) fails in
one line that says how to fix it; a remote, a URL or the mirrors pass."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.review.ci_data import check_ci_data
from tests.support import REPO, python_env


def _params(source):
    return {"fetch": {"dataset": "fashion-mnist", "source": source}, "train": {"epochs": 1}}


def test_no_remote_and_only_missing_local_sources_is_one_line_naming_both_fixes(tmp_path):
    missing = str(tmp_path / "fashion-mnist")
    with pytest.raises(PipelineError) as raised:
        check_ci_data(_params(missing), [], tmp_path)
    assert str(raised.value) == (
        f"fetch.source ({missing}) is not on this machine and no DVC remote is configured, "
        "so this run has no data: add a DVC remote (`dvc remote add -d NAME URL`, commit "
        ".dvc/config, `dvc push`) or use the default data set's mirrors (`fetch.source: null`)"
    )
    relative = _params(["data-src", f"file://{missing}"])
    with pytest.raises(PipelineError, match=r"fetch\.source \(data-src, .*fashion-mnist\) is"):
        check_ci_data(relative, [], tmp_path)


@pytest.mark.parametrize(
    ("source", "where"),
    [
        (None, "data from the data set's built-in mirrors (fetch.source: null)"),
        ("https://example.test/fm/", "data from fetch.source https://example.test/fm/"),
        (["/no/such/dir", "https://e.test/"], "data from fetch.source https://e.test/"),
        ("here", "data from fetch.source here"),  # relative to the root, where it exists
    ],
)
def test_a_url_the_mirrors_or_a_local_path_that_exists_pass(tmp_path, source, where):
    (tmp_path / "here").mkdir()
    assert check_ci_data(_params(source), [], tmp_path) == where
    assert check_ci_data({"train": {}}, [], tmp_path).startswith("data from the data set's")


def test_a_remote_passes_whatever_the_source(tmp_path):
    where = check_ci_data(_params("/no/such/dir"), ["storage"], tmp_path)
    assert where == "data from the DVC remote (storage)"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (["/x", "s3://bucket/fm"], r"fetch\.source\[1\]: s3://bucket/fm: unsupported URL scheme"),
        (42, "fetch.source: expected null, a string or a list of strings"),
    ],
)
def test_a_bad_source_is_named(tmp_path, source, message):
    with pytest.raises(PipelineError, match=message):
        check_ci_data(_params(source), [], tmp_path)


def _check(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = python_env(DVC_NO_ANALYTICS="1")
    command = [sys.executable, str(REPO / "scripts/check_ci_data.py")]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_script_fails_without_a_remote_and_passes_once_one_is_added(tmp_path):
    """A DVC repository set up as the Quickstart: a local fetch.source, no remote."""
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    config = "[core]\n    no_scm = true\n    analytics = false\n    check_update = false\n"
    (repo / ".dvc/config").write_text(config)
    source = str(tmp_path / "usr/share/datasets/fashion-mnist")
    (repo / "params.yaml").write_text(yaml.safe_dump(_params(source)))
    failed = _check(repo)
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1, failed.stderr
    assert f"check_ci_data.py: error: fetch.source ({source}) is not on this machine" in (
        failed.stderr
    )
    assert "`dvc remote add -d NAME URL`" in failed.stderr
    assert "`fetch.source: null`" in failed.stderr
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    add = [sys.executable, "-m", "dvc", "remote", "add", "-d", "storage", str(tmp_path / "r")]
    subprocess.run(add, cwd=repo, env=env, check=True, capture_output=True, timeout=120)
    passed = _check(repo)
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout == "check_ci_data: data from the DVC remote (storage)\n"
