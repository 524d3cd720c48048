"""What every stage script shares: argument parsing helpers and error reporting.

Bad input surfaces as a one-line message on stderr and exit status 1; the
traceback appears only with `--verbose` or MNIST_PIPELINE_VERBOSE=1. SIGINT and
SIGTERM unwind the stage like an error (removing its temporary outputs), print
one line and exit 130 and 143, as the shell reports those signals.
"""

import argparse
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import NoReturn

import mnist_pipeline
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


def require_own_library(script: str) -> None:
    """Refuse to run a stage script (`script`: its `__file__`) with a library other than the
    one in its own checkout (`<checkout>/src`).

    A queued or temporary experiment runs in DVC's copy of the repository, while the
    editable install (or a PYTHONPATH) points at the workspace: without dvc.yaml's
    `PYTHONPATH=src`, the copy's stages would import the workspace's code, and the
    experiment would record one version of the code beside results of another.
    """
    expected = Path(script).resolve().parents[1] / "src" / "mnist_pipeline"
    imported = Path(mnist_pipeline.__file__).resolve().parent
    if imported != expected:
        raise PipelineError(
            f"imported mnist_pipeline from {imported.parent}, not from this checkout's "
            f"{expected.parent}; run the stage as dvc.yaml's cmd does (PYTHONPATH=src python ...)"
        )


# Given the one-line message and the traceback, returns the line to print.
ErrorHook = Callable[[str, str], str]
# Given the stage's arguments, what to add to the line of an interrupted stage, if anything.
InterruptNote = Callable[[argparse.Namespace], str | None]
SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM arrived (DVC, a job scheduler or `kill` stopping the stage). A BaseException,
    like KeyboardInterrupt: `except Exception` blocks must not swallow it."""


def _raise_terminated(signum: int, frame: FrameType | None) -> NoReturn:
    # Once is enough: a second SIGTERM must not interrupt the cleanup the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises Terminated in the block (main thread only, where signals arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_stage(
    main: Callable[[argparse.Namespace], None],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    on_error: ErrorHook | None = None,
    on_interrupt: InterruptNote | None = None,
) -> int:
    """Parse args and run `main`; turn any failure into one line on stderr and exit 1.
    `on_error` may pass the message on elsewhere first (a torchrun worker's error file);
    `on_interrupt` may add to the line of a stopped stage (where its progress is)."""
    args = parser.parse_args(argv)
    verbose = args.verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    try:
        with _sigterm_unwinds():
            main(args)
    except (KeyboardInterrupt, Terminated) as exc:
        sigterm = isinstance(exc, Terminated)
        note = on_interrupt(args) if on_interrupt is not None else None
        line = f"{parser.prog}: interrupted" + (" (SIGTERM)" if sigterm else "")
        print(line + (f"; {note}" if note else ""), file=sys.stderr)
        return SIGTERM_EXIT_STATUS if sigterm else 130
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        message = one_line(exc)
        if on_error is not None:
            message = on_error(message, traceback.format_exc())
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 1
    return 0


def whole_number(option: str, text: str) -> int:
    """An option's value as an int, or one line naming the option (argparse's own error is
    a usage block)."""
    try:
        return int(text)
    except ValueError:
        raise PipelineError(f"{option} {text!r}: expected a whole number") from None


def one_line(exc: BaseException) -> str:
    """The exception as a single line a terminal shows as text (file names in messages
    may hold escape sequences: see `printable`); unexpected types keep their class name."""
    text = printable(" ".join(str(exc).split())) or "(no message)"
    if isinstance(exc, PipelineError):
        return text
    return f"{type(exc).__name__}: {text}"


def printable(text: str) -> str:
    """`text` with every character a terminal would not print as itself (control
    characters such as ESC, which starts escape sequences; line breaks; bidirectional
    overrides and other format characters) written as a Python escape (\\x1b, \\u202e)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
