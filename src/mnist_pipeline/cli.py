"""What every stage script shares: argument parsing helpers and error reporting.

Bad input surfaces as a one-line message on stderr and exit status 1; the
traceback appears only with `--verbose` or MNIST_PIPELINE_VERBOSE=1.
"""

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from mnist_pipeline.errors import PipelineError

VERBOSE_ENV = "MNIST_PIPELINE_VERBOSE"


def stage_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every stage takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    return parser


# Given the one-line message and the traceback, returns the line to print.
ErrorHook = Callable[[str, str], str]


def run_stage(
    main: Callable[[argparse.Namespace], None],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    on_error: ErrorHook | None = None,
) -> int:
    """Parse args and run `main`; turn any failure into one line on stderr and exit 1.
    `on_error` may pass the message on elsewhere first (a torchrun worker's error file)."""
    args = parser.parse_args(argv)
    verbose = args.verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    try:
        main(args)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        message = one_line(exc)
        if on_error is not None:
            message = on_error(message, traceback.format_exc())
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 1
    return 0


def one_line(exc: BaseException) -> str:
    """The exception as a single line; unexpected types keep their class name."""
    text = " ".join(str(exc).split()) or "(no message)"
    if isinstance(exc, PipelineError):
        return text
    return f"{type(exc).__name__}: {text}"
