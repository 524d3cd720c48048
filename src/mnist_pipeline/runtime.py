"""Where and how torch runs: device choice, seeding, determinism, precision.

Nothing here changes silently with the machine: `auto` is the only setting that
picks a device, and an explicit device that is missing is an error.
"""

import contextlib
import os
from typing import Any, cast

import torch
from torch import nn

from mnist_pipeline.errors import PipelineError


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device must exist."""
    mps_ok = torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise PipelineError(
                f"{key}: {name!r} asked for, but this machine has "
                f"{count} CUDA device(s); allowed: auto, cpu"
                + "".join(f", cuda:{i}" for i in range(count))
            )
    if name == "mps" and not mps_ok:
        raise PipelineError(f"{key}: 'mps' asked for, but MPS is not available here")
    return torch.device(name)


def configure_torch(seed: int, threads: int, device: torch.device) -> None:
    """Seed every generator and make kernels deterministic (bit-identical CPU reruns)."""
    if device.type == "cuda":
        # cuBLAS needs this before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)  # also seeds CUDA and MPS
    # warn_only: an op without a deterministic kernel on some device (PyTorch lists a few
    # CUDA ones) warns instead of ending the run; every op the pipeline uses on CPU has one.
    # The kernels' flag alone: torch.use_deterministic_algorithms also sets torch.compile's
    # (inductor's) flag, and imports inductor and dynamo to do it, which costs every
    # process 2-3 s on a 2-core machine for runs that never compile; `compiled` sets that one.
    torch._C._set_deterministic_algorithms(True, warn_only=True)


def compiled(module: nn.Module) -> nn.Module:
    """torch.compile(module), its inductor as deterministic as configure_torch made the
    kernels (the one place the pipeline compiles, so inductor is imported only here)."""
    torch.use_deterministic_algorithms(
        torch.are_deterministic_algorithms_enabled(),
        warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    # torch.compile of a module returns a module (typed as a plain callable).
    return cast(nn.Module, torch.compile(module))


def run_info(device: torch.device) -> dict[str, Any]:
    """What a rerun must match to reproduce the numbers bit for bit."""
    return {
        "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-loadable
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
    }


def cpu_has_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (x86: AVX-512; Arm: its bf16
    extension); without them autocast emulates bf16, an order of magnitude slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: nothing to say
        return True


def slow_precision_warning(device: torch.device, precision: str, key: str) -> str | None:
    """The line to print when `precision` will be much slower here than fp32, else None.
    A warning, never a switch: the run keeps the precision its params ask for."""
    if device.type != "cpu" or precision != "bf16" or cpu_has_bf16():
        return None
    return (
        f"{key}: bf16 on this CPU is emulated (oneDNN has no bf16 kernels for it: no "
        f"AVX-512) and runs several times slower than fp32; set {key}: fp32 here"
    )


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
