"""dvc.yaml stays honest: each stage depends on exactly the modules its script imports,
declares params that exist, and takes every path from its `cmd`."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.config import load_params, to_dict

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "mnist_pipeline"
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC["stages"]


def _imported_modules(path: Path) -> set[str]:
    """mnist_pipeline modules that `path` imports, directly or through other modules."""
    found: set[str] = set()
    pending = [path]
    while pending:
        tree = ast.parse(pending.pop().read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom):
                if node.level:  # relative import inside the package
                    base = node.module or ""
                    names = [base] if base else [a.name for a in node.names]
                elif (node.module or "").startswith("mnist_pipeline"):
                    rest = node.module.removeprefix("mnist_pipeline").lstrip(".")
                    names = [rest] if rest else [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [
                    a.name.removeprefix("mnist_pipeline.")
                    for a in node.names
                    if a.name.startswith("mnist_pipeline.")
                ]
            for name in names:
                module = name.split(".")[0]
                if module not in found and (PACKAGE / f"{module}.py").exists():
                    found.add(module)
                    pending.append(PACKAGE / f"{module}.py")
    return found


def test_the_pipeline_has_the_four_stages_in_order():
    assert list(STAGES) == ["fetch", "prepare", "train", "evaluate"]


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_depends_on_its_script_and_exactly_the_modules_it_imports(stage):
    deps = [d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage]["deps"]]
    script = f"stages/{stage}.py"
    assert script in deps and script in STAGES[stage]["cmd"]
    declared = {Path(d).stem for d in deps if d.startswith("src/mnist_pipeline/")}
    expected = _imported_modules(REPO / script) | {"__init__"}
    assert declared == expected


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_params_exist_and_every_path_comes_from_cmd(stage):
    params = to_dict(load_params(REPO / "params.yaml"))
    for key in STAGES[stage]["params"]:
        assert key in params, key
    source = (REPO / "stages" / f"{stage}.py").read_text()
    # Scripts hold no paths of their own: no data/, models/ or metrics/ literals.
    assert not re.search(r"[\"'](data|models|metrics)/", source)
