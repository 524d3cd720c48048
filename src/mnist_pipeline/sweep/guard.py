"""Run one command for a sweep and stop it, whole, when the sweep lets go of it.

    python guard.py -- dvc exp run ...

The sweep starts this in a session of its own, holding the write end of its stdin. When
that pipe closes — the sweep stops the trial (timeout, Ctrl-C), or the sweep's process
dies, even by SIGKILL, which it cannot catch — the guard stops its process group: SIGINT
first (DVC's clean stop, which removes its temporary copy), SIGKILL after GRACE_S. So a
killed sweep leaves no training running behind it. The guard exits with the command's
status (or 128 + the signal that ended it).
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading

GRACE_S = 20.0  # for DVC and the stage to stop cleanly after SIGINT


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("guard: no command given", file=sys.stderr)
        return 2
    # A group of its own, whoever started it: the signals below are for the command only.
    if os.getpgrp() != os.getpid():
        os.setsid()
    # The group's SIGINT is for the command; the guard outlives it to send SIGKILL. A
    # handler, not SIG_IGN: an ignored signal stays ignored in the command it starts.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    wake = threading.Event()
    released = threading.Event()

    def wait_child() -> None:
        child.wait()
        wake.set()

    def wait_release() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except OSError:
            pass
        released.set()
        wake.set()

    def on_sigterm(signum: int, frame: object) -> None:
        released.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    threading.Thread(target=wait_child, daemon=True).start()
    threading.Thread(target=wait_release, daemon=True).start()
    wake.wait()
    if child.poll() is None and released.is_set():
        os.killpg(os.getpgrp(), signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=GRACE_S)
        # Whatever is left of the group (the stage, if DVC went first), the guard last.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    returncode = child.wait()
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: the thread blocked reading stdin would make the interpreter's
    # shutdown abort (it cannot take the stdin buffer's lock).
    os._exit(status)
