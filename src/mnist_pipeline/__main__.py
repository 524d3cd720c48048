"""The `mnist-pipeline` command (also `python -m mnist_pipeline`): one subcommand per tool
that works outside `dvc repro`. `predict` classifies image files with a checkpoint;
`sweep` searches params.yaml with Optuna, each trial a DVC experiment."""

import argparse
import sys
from collections.abc import Sequence

from mnist_pipeline.cli import one_line
from mnist_pipeline.predict import cli as predict_cli
from mnist_pipeline.sweep import cli as sweep_cli


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sweep"]:  # its own parser, errors and interrupts (sweep/cli.py)
        return sweep_cli.main(argv[1:], prog="mnist-pipeline sweep")
    parser = argparse.ArgumentParser(prog="mnist-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict",
        help="classify image files (PNG/JPEG, .npy, idx)",
        description=predict_cli.__doc__,
    )
    predict_cli.add_arguments(predict)
    commands.add_parser(
        "sweep",
        help="search params.yaml with Optuna (run, worker, report; see sweep --help)",
        add_help=False,
    )
    args = parser.parse_args(argv)
    try:
        return predict_cli.run(args)
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # e.g. --out not writable: one line, as for the stages
        print(f"{args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
