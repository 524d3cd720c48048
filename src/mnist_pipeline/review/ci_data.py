"""Can a CI runner have the pipeline's data? The review workflow's first data step.

A runner starts from a fresh clone: the data comes from the DVC remote (`dvc pull`), or
the fetch stage gets it from `fetch.source` (null: the data set's built-in mirrors).
A repository set up as the README's Quickstart has neither: fetch.source names a local
folder (/usr/share/datasets/fashion-mnist) that only the author's machine has, and no
remote. Its review run would fail deep inside `make repro`; this says why in one line.

Only the `fetch` section is read, raw, and each source entry classified with the
pipeline's own `parse_location`: what else params.yaml holds (or requires) does not
matter here, and `make repro` checks the whole file anyway.
"""

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnist_pipeline.config.params import Location, parse_location
from mnist_pipeline.errors import PipelineError

FIXES = (
    "add a DVC remote (`dvc remote add -d NAME URL`, commit .dvc/config, `dvc push`) "
    "or use the default data set's mirrors (`fetch.source: null`)"
)


def fetch_sources(params: Mapping[str, Any]) -> list[Location] | None:
    """`fetch.source` of raw params classified, in order; None: the built-in mirrors (also
    when params has no fetch section, as the stages then take the defaults)."""
    fetch = params.get("fetch", {})
    if not isinstance(fetch, Mapping):
        raise PipelineError("fetch: expected a mapping")
    source = fetch.get("source")
    if source is None:
        return None
    if isinstance(source, str):
        entries = [("fetch.source", source)]
    elif isinstance(source, list) and all(isinstance(entry, str) for entry in source):
        entries = [(f"fetch.source[{i}]", entry) for i, entry in enumerate(source)]
    else:
        raise PipelineError("fetch.source: expected null, a string or a list of strings")
    locations = []
    for key, entry in entries:
        try:
            locations.append(parse_location(entry))
        except PipelineError as exc:
            raise PipelineError(f"{key}: {exc}") from None
    return locations


def check_ci_data(params: Mapping[str, Any], remotes: Sequence[str], root: Path) -> str:
    """Where the runner gets the data, as one line; a PipelineError naming fetch.source
    and the two fixes when there is no remote and every source is a local path that does
    not exist on this machine (relative ones are taken from `root`, as the stages run
    there). A URL is taken as reachable: the runner is online."""
    if remotes:
        return f"data from the DVC remote ({', '.join(remotes)})"
    locations = fetch_sources(params)
    if locations is None:
        return "data from the data set's built-in mirrors (fetch.source: null)"
    for location in locations:
        if location.kind == "url" or (root / location.value).exists():
            return f"data from fetch.source {location.value}"
    names = ", ".join(location.value for location in locations)
    raise PipelineError(
        f"fetch.source ({names}) is not on this machine and no DVC remote is configured, "
        f"so this run has no data: {FIXES}"
    )


def configured_remotes(root: Path) -> list[str]:
    """The DVC remotes of the repository at `root` (its config and config.local, the
    user's and the system's), as `dvc remote list` shows them, through this interpreter's
    dvc. Read from `dvc config --list` (`remote.NAME.url=...` lines): `dvc remote list`
    wraps long lines to the terminal's width."""
    if not (root / ".dvc").is_dir():
        raise PipelineError(f"{root}: not a DVC repository (no .dvc directory)")
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "config", "--list"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:
        lines = listed.stderr.strip().splitlines() or ["(no message)"]
        raise PipelineError(f"dvc config --list failed: {lines[-1]}")
    keys = [line.split("=", 1)[0] for line in listed.stdout.splitlines()]
    names = [
        key.removeprefix("remote.").rsplit(".", 1)[0] for key in keys if key.startswith("remote.")
    ]
    return sorted(set(names))
