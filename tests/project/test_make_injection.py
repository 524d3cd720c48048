"""Values given to make are text: `make seeds K='5; touch pwned'` and the like run the
real recipe on a copy of the repository (with this interpreter's venv, its install stamp
taken as up to date), and the shell code in the value never runs: a script refuses the
value in one line, or make does. Make code in a value (`$(shell ...)`) runs nothing either.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_pipeline.testing.dvc_repo import commit_all, copy_into, env_for, make_repo
from tests.support import REPO

pytestmark = pytest.mark.slow

VENV = Path(sys.executable).parent.parent
TORCH = (VENV / "torch").read_text().strip() if (VENV / "torch").is_file() else "cpu"
SCRIPTS = (
    "exp.py",
    "exps.py",
    "seeds.py",
    "report.py",
    "release.py",
    "plots_template.py",
    "sweep.py",
)


def payload(marker: Path) -> str:
    """Every way a value could become code: shell (`;`, `$( )`, backquotes) and make."""
    return f"; touch {marker}; `touch {marker}` $(touch {marker}) $(shell touch {marker})"


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    """The Makefile, scripts and presets in a committed copy of the pipeline."""
    repo = make_repo(tmp_path_factory.mktemp("make") / "repo", REPO)
    copy_into(repo, REPO, "Makefile", "requirements.lock", "pyproject.toml")
    copy_into(repo, REPO, *(f"scripts/{name}" for name in SCRIPTS))
    shutil.copytree(REPO / "presets", repo / "presets")
    shutil.copytree(REPO / "sweeps", repo / "sweeps")
    commit_all(repo, "make")
    return repo


def make(repo: Path, *args: str) -> subprocess.CompletedProcess:
    # -o: the venv's install stamp is up to date (nothing installs); the offline plots
    # template too (no npm).
    command = ["make", "-s", "-C", str(repo), f"VENV={VENV}", "-o", f"{VENV}/.installed-{TORCH}"]
    command += ["-o", ".vega/template.html", *args]
    return subprocess.run(
        command, env=env_for(repo), capture_output=True, text=True, timeout=300, check=False
    )


def test_the_payload_is_live_code_where_a_value_is_pasted_into_a_command(tmp_path):
    marker = tmp_path / "pwned"
    subprocess.run(["sh", "-c", f"echo 5 {payload(marker)}"], capture_output=True, check=False)
    assert marker.exists()


# target, the variable with the payload, other variables, what the failure says
CASES = {
    "exp PRESET": ("exp", "PRESET", [], "exp.py: error: unknown preset ';'"),
    "exp ARGS": (
        "exp",
        "ARGS",
        ["PRESET=tutorial"],
        "exp.py: error: params.yaml at HEAD with -S train.epochs=0: train.epochs: must be >= 1",
    ),
    "exp QUEUE": ("exp", "QUEUE", ["PRESET=tutorial"], "QUEUE=; touch "),
    "exps LIMIT": ("exps", "LIMIT", [], "exps.py: error: --limit '; touch "),
    "seeds K": ("seeds", "K", [], "seeds.py: error: --k '; touch "),
    "report REV": ("report", "REV", [], "report.py: error: "),
    "report FIGURES_URL": ("report", "FIGURES_URL", [], "report.py: error: "),
    "release VERSION": ("release", "VERSION", [], "release.py: error: "),
    "plots REV": ("plots", "REV", [], ""),
    "test-fast PYTEST_ARGS": ("test-fast", "PYTEST_ARGS", [], ""),
    "test PYTEST_ARGS": ("test", "PYTEST_ARGS", ["-o", "lint"], ""),
    "bench BENCH_ARGS": ("bench", "BENCH_ARGS", [], "No module named 'benchmarks'"),
    "gpu-check GPU_CHECK_ARGS": ("gpu-check", "GPU_CHECK_ARGS", [], "No module named 'benchmarks'"),
    "seeds TORCH": ("seeds", "TORCH", [], "TORCH=; touch "),
    "sweep SWEEP": ("sweep", "SWEEP", [], "sweep.py: error: unknown sweep '; touch "),
    "sweep JOBS": ("sweep", "JOBS", ["SWEEP=mlp"], "sweep.py: error: --jobs '; touch "),
    "sweep PRESET": ("sweep", "PRESET", ["SWEEP=mlp"], "unknown preset ';'"),
    "sweep-worker STORAGE": (
        "sweep-worker",
        "STORAGE",
        ["SWEEP=mlp"],
        "sweep.py: error: storage '; touch ",
    ),
    "sweep-report SWEEP": ("sweep-report", "SWEEP", [], "sweep.py: error: unknown sweep '; touch "),
    "seeds VEGA_DIR": ("seeds", "VEGA_DIR", [], "VEGA_DIR=; touch "),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_make_variable_cannot_inject_commands(copy, tmp_path, case):
    target, variable, others, stderr = CASES[case]
    marker = tmp_path / "pwned"
    value = payload(marker)
    if variable == "ARGS":
        value = f"-S train.epochs=0 {value}"  # the check fails before DVC runs
    done = make(copy, target, f"{variable}={value}", *others)
    assert not marker.exists(), done.stdout + done.stderr
    assert done.returncode != 0, done.stdout
    assert stderr in done.stderr
    # One line from the script or make (make adds its "*** [target] Error" line).
    lines = [line for line in done.stderr.splitlines() if not line.startswith("make: ***")]
    assert len(lines) <= 2 or variable.endswith(("_ARGS", "REV")), done.stderr


def test_venv_with_shell_code_is_refused_by_make_in_one_line(copy, tmp_path):
    marker = tmp_path / "pwned"
    done = subprocess.run(
        ["make", "-s", "-C", str(copy), f"VENV=.venv; touch {marker}", "seeds"],
        env=env_for(copy),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert not marker.exists() and done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "VENV=.venv; touch " in done.stderr and "letters, digits and ._/+- only" in done.stderr


def test_args_with_quotes_reach_dvc_as_a_shell_would_split_them(copy):
    """The README's ARGS: a list value in quotes stays one -S (checked; the epochs=0 stops
    it before DVC runs, so the message shows what the script got)."""
    args = "ARGS=-S 'model.hidden_sizes=[64, 32]' -S train.epochs=0"
    done = make(copy, "exp", "PRESET=tutorial", args)
    assert done.returncode != 0
    assert done.stderr.startswith(
        "exp.py: error: params.yaml at HEAD with -S model.hidden_sizes=[64,32] "
        "train.epochs=0: train.epochs: must be >= 1\n"
    )
