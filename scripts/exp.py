"""Run a DVC experiment from presets: `dvc exp run -S section.key=value ...` with the
overrides in presets/NAME.yaml (several presets: in order, a later one wins on a shared
key), then any further `dvc exp run` arguments given after `--`, which win in turn.

Example (what `make exp PRESET=tutorial ARGS="-S train.epochs=3 --name short"` runs):
  python scripts/exp.py tutorial -- -S train.epochs=3 --name short
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.presets import combined_overrides, set_arguments

REPO = Path(__file__).resolve().parents[1]

parser = stage_parser(__doc__.split("\n\n")[0])
parser.add_argument("presets", nargs="+", metavar="PRESET", help="a file presets/PRESET.yaml")
parser.add_argument(
    "--presets-dir", type=Path, default=REPO / "presets", help="(default: %(default)s)"
)
parser.add_argument("--queue", action="store_true", help="queue the experiment (dvc --queue)")
parser.add_argument("--dry-run", action="store_true", help="print the dvc command, run nothing")


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """This script's arguments, and the `dvc exp run` ones after the first `--`."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def read_params(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping at the top level")
    return data


def main(args: argparse.Namespace, dvc_args: list[str]) -> None:
    flat = combined_overrides(args.presets_dir, args.presets, read_params(Path(args.params)))
    command = ["dvc", "exp", "run", *set_arguments(flat), *(["--queue"] if args.queue else [])]
    command += dvc_args  # last: DVC takes the last -S for a key
    print(shlex.join(command), flush=True)
    if args.dry_run:
        return
    # The dvc next to this interpreter, and stage commands' `python` this interpreter,
    # as the Makefile arranges for `make repro`, even when the venv is not activated.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    dvc = shutil.which("dvc", path=path)
    if dvc is None:
        raise PipelineError("dvc not found; run `make install` first")
    returncode = subprocess.run([dvc, *command[1:]], env={**os.environ, "PATH": path}).returncode
    if returncode != 0:
        # dvc has printed its own error; exit with its status (SystemExit passes run_stage).
        raise SystemExit(returncode)


if __name__ == "__main__":
    own, dvc_args = split_argv(sys.argv[1:])
    sys.exit(run_stage(lambda args: main(args, dvc_args), parser, own))
