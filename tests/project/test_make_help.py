"""`make help` lists every phony target with a one-line description, as plain text."""

import re
import shutil
import subprocess

import pytest

from tests.support import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _phony() -> list[str]:
    text = (REPO / "Makefile").read_text()
    match = re.search(r"^\.PHONY:(.*)$", text, re.M)
    assert match, "the Makefile has no .PHONY line"
    return match.group(1).split()


def test_help_lists_every_phony_target_with_a_description():
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "\x1b" not in result.stdout, "plain text: no colour codes"
    described = {}
    for line in result.stdout.splitlines():
        name, _, description = line.partition(" ")
        described[name] = description.strip()
    phony = _phony()
    assert "help" in phony
    missing = [name for name in phony if not described.get(name)]
    assert not missing, f"no description in `make help` for: {missing}"
    assert set(described) <= set(phony), "help lists a target that is not .PHONY"
