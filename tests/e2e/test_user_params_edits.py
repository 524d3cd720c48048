"""What a user writes in their working params.yaml never changes what the tests run.

A copy of this checkout (tracked files, as they are now) whose params.yaml carries an
uncommitted edit, the README's offline setting pointed at a folder that does not exist,
runs the tests that read params.yaml, and they pass; and the repositories the end-to-end
tests build from it (`make_repo`; the others read `committed_text`) hold the committed
params, not the edit. (That is what a nested run of an end-to-end test checked, at the
cost of a whole pipeline.)
"""

import shutil
import subprocess
import sys

import pytest
import yaml

from mnist_pipeline.testing.dvc_repo import committed_text, env_for, make_repo
from tests.support import REPO

pytestmark = pytest.mark.e2e
TESTS = ("tests/config/test_params.py", "tests/project/test_dvc_yaml.py")


def test_an_edited_working_params_yaml_leaves_the_suite_green(tmp_path):
    copy = tmp_path / "checkout"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    (copy / "params.yaml").write_text(committed_text(REPO, "params.yaml"))
    env = env_for(copy)
    for command in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"]):
        subprocess.run(command, cwd=copy, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "checkout"], cwd=copy, env=env, check=True)

    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["fetch"].update(dataset="fashion-mnist", source=str(tmp_path / "no-such-folder"))
    params["train"].update(epochs=1000, lr=123.0)
    (copy / "params.yaml").write_text(yaml.safe_dump(params))

    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS]
    result = subprocess.run(
        command,
        cwd=copy,
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
    # The edit is still there: the suite ignored it rather than rewriting it.
    assert yaml.safe_load((copy / "params.yaml").read_text())["train"]["lr"] == 123.0
    # And every end-to-end test's repository starts from the committed params.
    built = make_repo(tmp_path / "e2e", copy)
    assert (built / "params.yaml").read_text() == committed_text(REPO, "params.yaml")
    assert yaml.safe_load((copy / "params.yaml").read_text())["train"]["lr"] == 123.0
