"""Where a data set's raw files can come from: `Candidate`s, in the order to try them.

The registry's mirrors by default; or what `fetch.source` names: an http(s) URL,
a file:// URL or a local path, to the pickle file itself or to a directory
holding either format's files; or a list of such sources.
"""

import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.data.registry import PICKLE_FILE, DatasetSpec, Format
from mnist_pipeline.errors import PipelineError


@dataclass(frozen=True)
class Candidate:
    """One way to get every file of one format: file name -> http(s) URL or local path."""

    format: Format
    label: str  # what the user sees in messages
    locations: dict[str, str]


def candidate_sources(spec: DatasetSpec, source: str | tuple[str, ...] | None) -> list[Candidate]:
    """The candidates to try in order: the built-in mirrors, or those `source` stands for
    (a list of sources: each one's candidates, in the list's order)."""
    if isinstance(source, tuple):
        return [candidate for one in source for candidate in candidate_sources(spec, one)]
    if source is None:
        return [
            _candidate(src.format, mirror, spec, in_dir=src.format == "idx")
            for src in spec.sources
            for mirror in src.mirrors
        ]
    location = _location(source)
    formats = [fmt for fmt in ("pickle", "idx") if any(s.format == fmt for s in spec.sources)]
    if "pickle" in formats and not _is_dir(location):
        return [_candidate("pickle", location, spec, in_dir=False)]
    # A directory may hold either format; the pickle is one file, so look for it first.
    return [_candidate(fmt, location, spec, in_dir=True) for fmt in formats]


def _candidate(fmt: Format, location: str, spec: DatasetSpec, in_dir: bool) -> Candidate:
    if not in_dir:
        return Candidate(fmt, location, {PICKLE_FILE: location})
    locations = {name: _join(location, name) for name in spec.files(fmt)}
    label = locations[PICKLE_FILE] if fmt == "pickle" else f"{location} (idx files)"
    return Candidate(fmt, label, locations)


def _location(source: str) -> str:
    """An http(s) URL as is, anything else as a local path (file:// URLs included)."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("http", "https"):
        return source
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise PipelineError(f"fetch.source: {source}: file:// URLs must name a local path")
        return urllib.request.url2pathname(parsed.path)
    # len > 1 keeps Windows drive letters (C:\...) paths.
    if len(parsed.scheme) > 1:
        raise PipelineError(
            f"fetch.source: {source}: unsupported URL scheme {parsed.scheme!r}; "
            "use http(s)://, file:// or a local path"
        )
    return str(Path(source).expanduser())


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _is_dir(location: str) -> bool:
    return location.endswith("/") if is_url(location) else Path(location).is_dir()


def _join(location: str, name: str) -> str:
    if is_url(location):
        return (location if location.endswith("/") else location + "/") + name
    return str(Path(location) / name)
