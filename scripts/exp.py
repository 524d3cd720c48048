"""Run a DVC experiment from presets, starting from the committed params.yaml (HEAD's):
`dvc exp run -S section.key=value ...` with the overrides in presets/NAME.yaml (several
presets: in order, a later one wins on a shared key), then any further `dvc exp run`
arguments given after `--`, which win in turn.

The workspace's params.yaml is set to HEAD's first (experiments/start.py says why), so
no experiment inherits the last one's settings; the changes set aside are named. Every
experiment the command makes (presets, then the -S values of ARGS, a grid included) is
validated as the stages will before DVC starts: a typo in a key is one line naming the
keys params.yaml has.

Example (what `make exp PRESET=tutorial ARGS="-S train.epochs=3 --name short"` runs):
  python scripts/exp.py --presets=tutorial --args="-S train.epochs=3 --name short"
which is the same as:
  python scripts/exp.py tutorial -- -S train.epochs=3 --name short
(--presets: names separated by whitespace; --args: split as a shell would, quotes included,
but nothing in it runs.)
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mnist_pipeline.cli import run_stage, stage_parser
from mnist_pipeline.config.preflight import check_free_disk, read_params_text
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.experiments.presets import set_arguments
from mnist_pipeline.experiments.start import (
    check_runs,
    describe_set_aside,
    plan_start,
    set_param_values,
)
from mnist_pipeline.fileio import atomic_file
from mnist_pipeline.gitrepo import file_at

REPO = Path(__file__).resolve().parents[1]

parser = stage_parser(__doc__.split("\n\n")[0])
parser.add_argument("presets", nargs="*", metavar="PRESET", help="a file presets/PRESET.yaml")
parser.add_argument(
    "--presets",
    dest="preset_list",
    default="",
    metavar="'NAME ...'",
    help="presets as one string, separated by whitespace (after the PRESET arguments)",
)
parser.add_argument(
    "--args",
    dest="args_text",
    default="",
    metavar="'ARGS'",
    help="`dvc exp run` arguments as one string, split as a shell would (before those after --)",
)
parser.add_argument(
    "--presets-dir", type=Path, default=REPO / "presets", help="(default: %(default)s)"
)
parser.add_argument("--queue", action="store_true", help="queue the experiment (dvc --queue)")
parser.add_argument(
    "--dry-run", action="store_true", help="print the dvc command; change and run nothing"
)


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """This script's arguments, and the `dvc exp run` ones after the first `--`."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def split_args_text(text: str) -> list[str]:
    """--args: `dvc exp run` arguments as a shell would split them (quotes group words);
    nothing in them is run or expanded."""
    try:
        return shlex.split(text)
    except ValueError as exc:  # an unclosed quote, a trailing backslash
        raise PipelineError(f"--args {text!r}: cannot split it as a shell would: {exc}") from None


def main(args: argparse.Namespace, dvc_args: list[str]) -> None:
    args.presets = [*args.presets, *args.preset_list.split()]
    if not args.presets:
        raise PipelineError("no preset given (PRESET, or --presets 'NAME ...'), e.g. tutorial")
    dvc_args = [*split_args_text(args.args_text), *dvc_args]
    params_path = Path(args.params)
    head_text = file_at(Path.cwd(), "HEAD", params_path.as_posix())
    if head_text is None:
        raise PipelineError(
            f"{params_path}: not in a commit (HEAD); an experiment starts from the committed "
            "params: commit it first"
        )
    workspace_text = read_params_text(params_path) if params_path.exists() else None
    start = plan_start(head_text, workspace_text, args.presets_dir, args.presets)
    with tempfile.TemporaryDirectory(prefix="exp-check-") as workdir:
        check_runs(start, set_param_values(dvc_args), Path(workdir))
    command = ["dvc", "exp", "run", *set_arguments(start.overrides)]
    command += ["--queue"] if args.queue else []
    command += dvc_args  # last: DVC takes the last -S for a key
    note = describe_set_aside(start.set_aside)
    if note is not None:
        print(f"exp: {note}", flush=True)
    print(shlex.join(command), flush=True)
    if args.dry_run:
        return
    check_free_disk(params_path.resolve().parent)
    if workspace_text != head_text:
        reset_params_file(params_path, head_text)
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


def reset_params_file(path: Path, text: str) -> None:
    """Write HEAD's text over the workspace's params file, which must be a regular file
    (a link or a device is someone else's to replace)."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise PipelineError(f"{path}: not a regular file; refusing to replace it")
    with atomic_file(path) as tmp:
        tmp.write_text(text)


if __name__ == "__main__":
    own, dvc_args = split_argv(sys.argv[1:])
    sys.exit(run_stage(lambda args: main(args, dvc_args), parser, own))
