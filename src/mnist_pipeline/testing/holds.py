"""Holding a stage at a known point, so that a test's signal lands exactly there however
fast or slow the machine is: the stage prints a line the test waits for, then waits on an
event nobody sets until the signal kills it (SIGKILL) or unwinds it (SIGTERM, SIGINT: the
wait is interruptible). An event, not a pause: a `sleep` after the line is a guess at how
long the test takes to react, and a stage that is not held may finish meanwhile.

A held process never goes on by itself: a test that starts one kills it whatever happens.
"""

import subprocess
import sys
import textwrap

from mnist_pipeline.testing.bounds import HANG_GUARD_S

# The hold: blocks until a signal ends or interrupts it.
_HOLD = "threading.Event().wait()"

# What hold_prepare_mid_write's stage prints before it holds.
HELD_LINE = "held: waiting for a signal"


def hold_after_epoch(epoch: int) -> str:
    """Code for `python -c CODE stages/train.py ARGS...`: the train stage, held after the
    line of `epoch` (rank 0 prints it; that epoch's state is saved before the line)."""
    return f"""
import runpy, sys, threading
from mnist_pipeline.train import training_log
print_epoch = training_log.print_epoch
def hold(log):
    print_epoch(log)
    if log["epoch"] == {epoch}:
        sys.stdout.flush()
        {_HOLD}
training_log.print_epoch = hold
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def kill_train_after_epoch(argv: list[str], epoch: int, env: dict[str, str]) -> None:
    """Run the train stage (`argv`: stages/train.py and its arguments) held after the line
    of `epoch`, and SIGKILL it there: it leaves that epoch's state behind however fast it
    trains. A stage that ends before that line (an error) just ends; the caller finds no
    state. `env` must set PYTHONUNBUFFERED, or the line may wait in the stage's buffer."""
    command = [sys.executable, "-c", hold_after_epoch(epoch), *argv]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(f"epoch {epoch:>3}:"):
                process.kill()
                break
        process.wait(timeout=HANG_GUARD_S)  # killed, or its output ended: it is ending


def _print_held_after_epoch(epoch: int, announce: str = "") -> str:
    """Code that replaces `print` with one that holds after printing the line of `epoch`
    (sitecustomize runs before the stage's imports, so it wraps the builtin); `announce`:
    code run just before the hold."""
    return f"""import builtins, sys, threading
_print = builtins.print
def _held_print(*args, **kwargs):
    _print(*args, **kwargs)
    if args and str(args[0]).startswith("epoch {epoch:>3}:"):
        sys.stdout.flush()
        {announce or "pass"}
        {_HOLD}
builtins.print = _held_print
"""


def hold_after_epoch_sitecustomize(epoch: int) -> str:
    """A sitecustomize.py: every Python process started with its folder on the path
    (torchrun's ranks, DVC's stages) holds after printing the line of `epoch`."""
    return _print_held_after_epoch(epoch)


def hold_prepare_mid_write() -> str:
    """Code for `python -c CODE stages/prepare.py ARGS...`: the prepare stage, held once
    the shards of its first split are written into its temporary directory (so that
    directory provably exists), after printing HELD_LINE."""
    return f"""
import runpy, sys, threading
from mnist_pipeline.data import prepared
write_shards = prepared._write_shards
def hold(*args, **kwargs):
    shards = write_shards(*args, **kwargs)
    print({HELD_LINE!r}, flush=True)
    {_HOLD}
    return shards
prepared._write_shards = hold
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def hold_matching_params_sitecustomize(epoch: int, variable: str) -> str:
    """A sitecustomize.py that holds, as hold_after_epoch_sitecustomize does, only a
    process whose params.yaml (in its working directory) has the value that the
    environment variable `variable` names, as `dotted.key=JSON` (e.g.
    `model.hidden_sizes=[17]`): one trial of a sweep is held while the others run. Without
    the variable nothing is held, so a later run of the same code goes on. A held process
    announces it by creating the file that `variable`_HELD names, where that is set (what
    a test waits for when it cannot read the held process's output)."""
    marker = f"{variable}_HELD"
    announce = f"if os.environ.get({marker!r}): open(os.environ[{marker!r}], 'a').close()"
    return f"""
import os
_wanted = os.environ.get({variable!r}, "")
if _wanted:
    import json
    import yaml
    _key, _, _value = _wanted.partition("=")
    try:
        with open("params.yaml") as _f:
            _node = yaml.safe_load(_f)
        for _part in _key.split("."):
            _node = _node[_part]
        _match = _node == json.loads(_value)
    except (OSError, KeyError, TypeError, ValueError):
        _match = False
    if _match:
{textwrap.indent(_print_held_after_epoch(epoch, announce), " " * 8)}"""
