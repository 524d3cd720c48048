"""Fetch a data set's raw files into a directory and check them against known md5s.

Where the files can come from is a list of `Candidate`s, tried in order: the
registry's mirrors by default, or the `Location`s that `fetch.source` names (an http(s)
URL or a local path, to the pickle file itself or to a directory holding either
format's files; or a list of such sources). The first candidate whose files all verify
wins. Transient network failures are retried (http_download.py); a 4xx or a checksum
mismatch moves on to the next candidate at once. If nothing works, one `PipelineError`
lists every candidate and why it failed.

Every file is bounded: its bytes (the registry's limit for the mirrors, `fetch.max_bytes`
for `fetch.source`), its time (`fetch.deadline_s`, retries included; see
http_download.py for how a download keeps to it), and the gunzipped content hashed for
the md5 (a gzip bomb would be hashed for minutes).
"""

import gzip
import hashlib
import os
import shutil
import stat
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.config.params import FetchConfig, Location, parse_location
from mnist_pipeline.data.http_download import Budget, Sleep, SourceFailed, download
from mnist_pipeline.data.raw_description import DESCRIPTION_FILE
from mnist_pipeline.data.registry import (
    FORMATS,
    PICKLE_FILE,
    DatasetSpec,
    FileLimits,
    Format,
    dataset_with_file,
    get_dataset,
)
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import file_digest, write_json

HINT = (
    "download the files yourself and set fetch.source in params.yaml to their path or URL "
    "(and fetch.checksums if they differ from upstream)"
)
# After the built-in mirrors failed (offline, most likely): the local route too.
MIRRORS_HINT = (
    f"{HINT}; or, offline, train on Fashion-MNIST from a local folder: "
    "`apt-get install dataset-fashion-mnist`, then `make exp PRESET=fashion-mnist-debian` "
    "(README: Quickstart on Fashion-MNIST)"
)


class _ChecksumMismatch(SourceFailed):
    """The file is whole but not the one expected; `md5s` are those it has (of its bytes
    and, if gzip, of its content)."""

    def __init__(self, message: str, md5s: frozenset[str]) -> None:
        super().__init__(message)
        self.md5s = md5s


class _OtherDataset(SourceFailed):
    """The files are those of another registered data set (`dataset`)."""

    def __init__(self, message: str, dataset: str) -> None:
        super().__init__(message)
        self.dataset = dataset


@dataclass(frozen=True)
class Candidate:
    """One way to get every file of one format."""

    format: Format
    label: str  # what the user sees in messages
    files: dict[str, Location]  # file name -> where it is


def candidates(spec: DatasetSpec, locations: tuple[Location, ...] | None) -> list[Candidate]:
    """The candidates to try in order: the built-in mirrors (`locations` None), or those
    each of `locations` (`FetchConfig.locations`) stands for, in order."""
    if locations is None:
        return [
            _candidate(src.format, parse_location(mirror), spec, in_dir=src.format == "idx")
            for src in spec.sources
            for mirror in src.mirrors
        ]
    formats = [fmt for fmt in FORMATS if any(s.format == fmt for s in spec.sources)]
    found = []
    for location in locations:
        if "pickle" in formats and not _is_dir(location):
            found.append(_candidate("pickle", location, spec, in_dir=False))
        else:  # a directory may hold either format; the pickle is one file: looked for first
            found += [_candidate(fmt, location, spec, in_dir=True) for fmt in formats]
    return found


def _candidate(fmt: Format, location: Location, spec: DatasetSpec, in_dir: bool) -> Candidate:
    if not in_dir:
        return Candidate(fmt, location.value, {PICKLE_FILE: location})
    files = {name: _join(location, name) for name in spec.files(fmt)}
    label = files[PICKLE_FILE].value if fmt == "pickle" else f"{location.value} (idx files)"
    return Candidate(fmt, label, files)


def _is_dir(location: Location) -> bool:
    if location.kind == "url":
        return location.value.endswith("/")
    return Path(location.value).is_dir()


def _join(location: Location, name: str) -> Location:
    if location.kind == "url":
        base = location.value if location.value.endswith("/") else location.value + "/"
        return Location("url", base + name)
    return Location("path", str(Path(location.value) / name))


def fetch_dataset(
    config: FetchConfig,
    out_dir: Path,
    *,
    spec: DatasetSpec | None = None,
    sleep: Sleep = time.sleep,
) -> dict[str, Any]:
    """Fetch and verify the data set's files into `out_dir`; write and return dataset.json.

    `spec` defaults to the registry entry for `config.dataset` (tests pass their own);
    `sleep` is called with each retry delay in seconds.
    """
    spec = spec or get_dataset(config.dataset)
    out_dir = Path(out_dir)
    user_source = config.locations is not None
    # A local path that is not there at all is named as such, not as its missing files.
    missing = [
        location
        for location in config.locations or ()
        if location.kind == "path" and not os.path.lexists(location.value)
    ]
    failures = [f"{location.value} (no such file or folder)" for location in missing]
    present = None
    if config.locations is not None:
        present = tuple(location for location in config.locations if location not in missing)
    others = []
    for candidate in candidates(spec, present):
        try:
            files = _fetch_candidate(candidate, spec, config, out_dir, sleep, user_source)
        except SourceFailed as exc:
            failures.append(f"{candidate.label} ({_one_line(str(exc))})")
            if isinstance(exc, _OtherDataset):
                others.append(exc.dataset)
            continue
        # The source stays out of dataset.json so that switching mirrors changes nothing.
        print(f"{spec.name}: {candidate.format} files from {candidate.label}", file=sys.stderr)
        description = {
            "dataset": spec.name,
            "format": candidate.format,
            "class_names": list(spec.class_names),
            "files": files,
        }
        write_json(out_dir / DESCRIPTION_FILE, description)
        return description
    all_missing = bool(missing) and len(missing) == len(config.locations or ())
    hint = _failure_hint(spec.name, others, all_missing, user_source)
    raise PipelineError(f"could not fetch {spec.name}: tried {'; '.join(failures)}; {hint}")


def _failure_hint(dataset: str, others: list[str], all_missing: bool, user_source: bool) -> str:
    """What to do about a failed fetch: the fix that fits what was found."""
    if others:
        # Not fetch.checksums: that would pass the check and train "mnist" on clothes.
        return (
            f"those are {others[0]}'s files, not {dataset}'s: set fetch.dataset: "
            f"{others[0]} in params.yaml to train on them"
        )
    if all_missing:
        return "check the path in fetch.source (params.yaml): nothing is there"
    return HINT if user_source else MIRRORS_HINT


def _fetch_candidate(
    candidate: Candidate,
    spec: DatasetSpec,
    config: FetchConfig,
    out_dir: Path,
    sleep: Sleep,
    user_source: bool,
) -> dict[str, dict[str, Any]]:
    """Fetch all of one candidate's files, or none: a partial set is removed.
    `user_source`: the files come from fetch.source, so fetch.max_bytes bounds them."""
    files = {}
    try:
        for name, location in candidate.files.items():
            accepted = set(spec.md5s.get(name, ()))
            if name in config.checksums:
                accepted.add(config.checksums[name])
            known = spec.limits.get(name, FileLimits(config.max_bytes, config.max_bytes))
            budget = Budget(
                max_bytes=config.max_bytes if user_source else known.max_bytes,
                deadline=time.monotonic() + config.deadline_s,
                deadline_s=config.deadline_s,
            )
            try:
                files[name] = _fetch_file(
                    location, out_dir / name, accepted, config, sleep, budget, known
                )
            except _ChecksumMismatch as exc:
                other = dataset_with_file(name, exc.md5s, other_than=spec.name)
                if other is None:
                    raise
                raise _OtherDataset(f"{other}'s file, not {spec.name}'s", other) from None
    except SourceFailed as exc:
        for other_name in candidate.files:
            (out_dir / other_name).unlink(missing_ok=True)
        # The label names a one-file candidate; with several files, say which one failed.
        if len(candidate.files) > 1:
            message = f"{name}: {exc}"
            if isinstance(exc, _OtherDataset):
                raise _OtherDataset(message, exc.dataset) from None
            raise SourceFailed(message) from None
        raise
    return files


def _fetch_file(
    location: Location,
    dest: Path,
    accepted: set[str],
    config: FetchConfig,
    sleep: Sleep,
    budget: Budget,
    known: FileLimits,
) -> dict[str, Any]:
    """Download or copy to a temporary name, verify, then rename onto `dest`."""
    part = dest.with_name(f".{dest.name}.part")
    try:
        if location.kind == "url":
            download(location.value, part, config, budget, sleep)
        else:
            _copy(Path(location.value), part, budget.max_bytes)
        # The content hashed for the md5 is bounded too: a gzip bomb would take minutes.
        md5 = _verify(part, accepted, known.max_gunzipped_bytes)
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)
    return {"md5": md5, "bytes": dest.stat().st_size}


def _copy(path: Path, dest: Path, max_bytes: int) -> None:
    try:
        info = path.stat()
    except OSError:
        raise SourceFailed("not found") from None
    # A device (/dev/zero) or a FIFO would be read forever; only regular files are data.
    if not stat.S_ISREG(info.st_mode):
        raise SourceFailed("not found" if stat.S_ISDIR(info.st_mode) else "not a regular file")
    if info.st_size > max_bytes:
        raise SourceFailed(f"{info.st_size} bytes, over the limit of {max_bytes} (fetch.max_bytes)")
    try:
        shutil.copyfile(path, dest)  # a copy, not a link: the output must not change under DVC
    except OSError as exc:
        raise SourceFailed(f"cannot read ({exc.strerror or exc})") from None


def _verify(path: Path, accepted: set[str], max_gunzipped_bytes: int) -> str:
    """Return the file's md5 if it or its gunzipped content has an accepted md5."""
    file_md5 = file_digest(path, "md5")
    if file_md5 in accepted:
        return file_md5
    content_md5 = _gunzipped_md5(path, max_gunzipped_bytes)
    if content_md5 in accepted:
        return file_md5
    expected = " or ".join(sorted(accepted)) or "(none known)"
    raise _ChecksumMismatch(
        f"checksum mismatch: expected {expected}, got {file_md5} (file) / "
        f"{content_md5 or 'not gzip'} (gunzipped)",
        frozenset(md5 for md5 in (file_md5, content_md5) if md5 is not None),
    )


def _gunzipped_md5(path: Path, max_bytes: int) -> str | None:
    """md5 of the decompressed content, or None if the file is not valid gzip; content
    beyond `max_bytes` is a failure (a gzip bomb would otherwise be hashed for minutes)."""
    digest = hashlib.md5(usedforsecurity=False)
    total_bytes = 0
    try:
        with gzip.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                total_bytes += len(chunk)
                if total_bytes > max_bytes:
                    raise SourceFailed(
                        f"gunzips to more than {max_bytes} bytes, the limit for this file"
                    )
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return digest.hexdigest()


def _one_line(text: str) -> str:
    return " ".join(text.split())
