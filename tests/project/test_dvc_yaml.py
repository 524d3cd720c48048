"""dvc.yaml stays honest: each stage depends on exactly the modules its script imports,
declares params that exist, and takes every path from its `cmd`."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.config.params import load_params, to_dict
from mnist_pipeline.testing.dvc_repo import ALL_STAGES
from tests.support import REPO, SRC, python_env

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC["stages"]


def _module_file(dotted: str) -> Path | None:
    """The file of an `mnist_pipeline...` module, or None if the name is not a module
    (e.g. a function imported from a package)."""
    path = SRC.joinpath(*dotted.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _imported_files(path: Path) -> set[Path]:
    """Package files that `path` imports, directly or through other package modules,
    with the `__init__.py` of every package on the way (Python runs them on import)."""
    found: set[Path] = set()
    pending = [path]
    while pending:
        tree = ast.parse(pending.pop().read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "mnist_pipeline"
            ):
                assert node.level == 0, "the package uses absolute imports"
                module = node.module or ""
                names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("mnist_pipeline")]
            for name in names:
                parts = name.split(".")
                for depth in range(1, len(parts) + 1):  # the packages on the way, then it
                    file = _module_file(".".join(parts[:depth]))
                    if file is not None and file not in found:
                        found.add(file)
                        pending.append(file)
    return found


def test_the_pipeline_has_its_stages_in_order():
    assert list(STAGES) == ALL_STAGES  # what the end-to-end tests expect a repro to run


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_depends_on_its_script_and_exactly_the_modules_it_imports(stage):
    deps = [d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage]["deps"]]
    script = f"stages/{stage}.py"
    assert script in deps and script in STAGES[stage]["cmd"]
    declared = {d for d in deps if d.startswith("src/")}
    expected = {f.relative_to(REPO).as_posix() for f in _imported_files(REPO / script)}
    assert declared == expected


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_imports_the_library_of_the_checkout_it_runs_in(stage):
    # DVC runs a queued or --temp experiment in a copy of the repository; the editable
    # install points at the workspace. src/ relative to the stage's directory is the copy's.
    assert STAGES[stage]["cmd"].startswith(f"PYTHONPATH=src python stages/{stage}.py ")


@pytest.mark.slow
def test_a_stage_refuses_to_run_with_another_checkouts_library(tmp_path):
    copy = tmp_path / "checkout"
    shutil.copytree(REPO / "stages", copy / "stages")
    shutil.copytree(REPO / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
    env = python_env(base={}, PATH=str(Path(sys.executable).parent))
    command = [sys.executable, "stages/evaluate.py", "--data", "d", "--model", "m"]
    command += ["--metrics", "e.json", "--tables", "t", "--figures", "f"]
    result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"imported mnist_pipeline from {SRC}, not from this checkout's {copy / 'src'}" in (
        result.stderr
    )
    assert not (copy / "e.json").exists()
    # As dvc.yaml runs it, the copy's own library is imported, and the stage gets as far
    # as its inputs.
    env["PYTHONPATH"] = "src"
    result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "imported mnist_pipeline" not in result.stderr
    assert "params.yaml" in result.stderr


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_params_exist_and_every_path_comes_from_cmd(stage, committed_params):
    params = to_dict(load_params(committed_params))
    for key in STAGES[stage].get("params", []):  # export has none
        assert key in params, key
    source = (REPO / "stages" / f"{stage}.py").read_text()
    # Scripts hold no paths of their own: no data/, models/ or metrics/ literals.
    assert not re.search(r"[\"'](data|models|metrics)/", source)


def test_evaluate_declares_each_figure_it_writes_as_a_cached_output():
    from mnist_pipeline.evaluate.run import figure_files

    outs = [out for out in STAGES["evaluate"]["outs"] if isinstance(out, str)]
    assert outs == [f"figures/evaluate/{name}" for name in figure_files(("test", "valid"))]


def test_the_released_checkpoint_says_its_format():
    from mnist_pipeline.model.checkpoint import FORMAT_VERSION

    meta = DVC["artifacts"]["mnist-classifier"]["meta"]
    assert meta["checkpoint_format"] == FORMAT_VERSION
