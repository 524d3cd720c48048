"""A sweep's trial is bounded and stopped whole: past its time, on the sweep's stop, and
when the sweep's process dies, the trial's whole process group ends (grandchildren
too), and the trial's outcome says which in one line."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mnist_pipeline.sweep import experiment, guard
from mnist_pipeline.testing.bounds import HANG_GUARD_S

pytestmark = pytest.mark.slow

# A command that never ends by itself, with a grandchild that never ends either; it
# writes the grandchild's pid first, so the test can watch it.
HANGS = """
import subprocess, sys, threading
child = subprocess.Popen([sys.executable, "-c", "import threading; threading.Event().wait()"])
open(sys.argv[1], "w").write(str(child.pid))
threading.Event().wait()
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def wait_for_file(path: Path) -> int:
    deadline = time.monotonic() + HANG_GUARD_S
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    return int(path.read_text())


def gone(pid: int) -> bool:
    deadline = time.monotonic() + HANG_GUARD_S
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def test_a_trial_past_its_time_is_abandoned_with_its_group(tmp_path):
    marker = tmp_path / "pid"
    beats = []
    returncode, stopped = experiment._run_guarded(
        tmp_path,
        [sys.executable, "-c", HANGS, str(marker)],
        threads=1,
        deadline=time.monotonic() + 1.0,  # it never ends by itself: any bound is passed
        log_path=tmp_path / "log",
        heartbeat=lambda: beats.append(1),
        heartbeat_s=0.2,
        stop=threading.Event(),
    )
    assert (returncode, stopped) == (None, False)
    assert gone(wait_for_file(marker))


def test_the_sweeps_stop_ends_a_running_trial_and_says_so(tmp_path):
    marker = tmp_path / "pid"
    stop = threading.Event()
    result = {}

    def run():
        result["value"] = experiment._run_guarded(
            tmp_path,
            [sys.executable, "-c", HANGS, str(marker)],
            threads=1,
            deadline=time.monotonic() + 3600,
            log_path=tmp_path / "log",
            heartbeat=lambda: None,
            heartbeat_s=0.2,
            stop=stop,
        )

    thread = threading.Thread(target=run)
    thread.start()
    grandchild = wait_for_file(marker)
    stop.set()
    thread.join(HANG_GUARD_S)
    assert result["value"] == (None, True)
    assert gone(grandchild)


def test_the_guard_stops_its_group_when_the_sweep_dies(tmp_path):
    """The sweep (here a shell holding the guard's stdin) is killed with SIGKILL: the
    guard sees its pipe close and ends the command and its grandchild."""
    marker = tmp_path / "pid"
    sweep = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, threading\n"
            "subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, start_new_session=True)\n"
            "threading.Event().wait()",
            sys.executable,
            guard.__file__,
            "--",
            sys.executable,
            "-c",
            HANGS,
            str(marker),
        ]
    )
    grandchild = wait_for_file(marker)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait(timeout=HANG_GUARD_S)
    assert gone(grandchild)


def test_a_command_that_ends_gives_its_status_through_the_guard(tmp_path):
    command = [sys.executable, guard.__file__, "--", sys.executable, "-c", "raise SystemExit(3)"]
    with subprocess.Popen(command, stdin=subprocess.PIPE) as process:  # the sweep holds stdin
        assert process.wait(timeout=HANG_GUARD_S) == 3


def test_an_abandoned_trial_is_one_line_naming_the_setting(tmp_path, monkeypatch):
    marker = tmp_path / "pid"
    monkeypatch.setattr(
        experiment,
        "dvc_command",
        lambda name, overrides: [sys.executable, "-c", HANGS, str(marker)],
    )
    outcome = experiment.run_experiment(
        tmp_path,  # not a repository: no experiment of that name exists yet
        "s-0",
        {},
        threads=1,
        timeout_s=1.5,
        log_path=tmp_path / "log",
        heartbeat=lambda: None,
        heartbeat_s=0.2,
        stop=threading.Event(),
    )
    assert outcome.metrics is None and not outcome.stopped
    assert outcome.error == "abandoned after 0.025 min (the sweep's trial_timeout_min)"
    assert gone(wait_for_file(marker))
