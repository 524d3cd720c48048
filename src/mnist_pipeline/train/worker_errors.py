"""How a torchrun worker's error reaches the user: the error-file protocol, both ends.

torchrun gives each worker a file (TORCHELASTIC_ERROR_FILE) and reads it back when
the worker fails. A worker writes its one-line error there (`record`, called by the
stage's error handler); the launcher gets every failed rank's record from torchrun's
`ChildFailedError` and reports the one that failed first (`first_failure`): the root
cause, not the peers that only saw it vanish.
"""

import json
import os
import time
from collections.abc import Mapping
from typing import Any

ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"


def record(message: str, traceback_text: str) -> str:
    """In a torchrun worker, leave `message` in its error file, in the JSON layout that
    torchrun's agent reads, and return it prefixed with the rank; else return it as is."""
    path = os.environ.get(ERROR_FILE_ENV)
    if path is None:
        return message
    extra = {
        "py_callstack": traceback_text,
        "timestamp": str(int(time.time())),
        "failed_at_ns": str(time.time_ns()),  # finer than the seconds torchrun compares
    }
    with open(path, "w") as error_file:
        json.dump({"message": {"message": message, "extraInfo": extra}}, error_file)
    return f"rank {os.environ.get('RANK', '?')}: {message}"


def first_failure(failures: Mapping[int, Any]) -> tuple[int, str]:
    """(rank, one-line error) of the rank whose recorded error came first, from
    `ChildFailedError.failures`; a rank that recorded nothing (killed) sorts last."""
    rank, failure = min(failures.items(), key=lambda item: _failed_at_ns(item[1]))
    return rank, _text(failure)


def _recorded(failure: Any) -> dict[str, Any]:
    """What the rank wrote with `record` ({} if it wrote nothing)."""
    recorded = failure.error_file_data.get("message")
    return recorded if isinstance(recorded, dict) else {}


def _failed_at_ns(failure: Any) -> float:
    return float(_recorded(failure).get("extraInfo", {}).get("failed_at_ns", "inf"))


def _text(failure: Any) -> str:
    """The rank's own one-line error, else torchrun's description (exit code, signal)."""
    message = _recorded(failure).get("message") or failure.message
    if not isinstance(message, str) or not message:
        message = f"exit code {failure.exitcode}"
    return " ".join(message.split())
