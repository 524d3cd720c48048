"""Fetch a data set's raw files into a directory and check them against known md5s.

Where the files can come from is a list of `Candidate`s, tried in order: the
registry's mirrors by default, or what `fetch.source` names (an http(s) URL or a
local path, to the pickle file itself or to a directory holding either format's
files; or a list of such sources). The first candidate whose files all verify
wins. Transient network failures are retried with exponential backoff; a 4xx or a
checksum mismatch moves on to the next candidate at once. If nothing works, one
`PipelineError` lists every candidate and why it failed.

Every download is bounded: `fetch.timeout_s` per read (a stalled server),
`fetch.deadline_s` per file, retries included (a server that trickles headers or
body a byte at a time: a watchdog closes the socket), a byte limit per file (the
registry's for the mirrors, `fetch.max_bytes` for `fetch.source`) and one on the
gunzipped content hashed for the md5; redirects go to http(s) only, at most 5.
"""

import contextlib
import gzip
import hashlib
import http.client
import os
import shutil
import socket
import stat
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mnist_pipeline.config.params import FetchConfig, Location, parse_location
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

CHUNK_BYTES = 1 << 16
MAX_BACKOFF_S = 30.0  # retry delays double up to this (or stay at a larger fetch.backoff_s)
MAX_REDIRECTS = 5
# A body slower than this over a whole window has stalled (a server trickling bytes keeps
# each read under fetch.timeout_s): that source fails and the next is tried, well before
# fetch.deadline_s, which must leave a slow but real mirror time to finish.
STALL_WINDOW_S = 30.0
MIN_BYTES_PER_S = 1024
# The status line and headers of one response (redirects each get their own): a server
# trickling them a byte at a time never trips the per-read timeout, and the body's stall
# window only starts after them.
HEADERS_WITHIN_S = 30.0
USER_AGENT = "mnist-pipeline/0.1 (python urllib)"
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

Sleep = Callable[[float], None]


class _SourceFailed(Exception):
    """This candidate cannot be used; the message is a short reason."""


class _Transient(_SourceFailed):
    """A failure worth retrying (connection, timeout, 5xx, truncated body)."""


class _ChecksumMismatch(_SourceFailed):
    """The file is whole but not the one expected; `md5s` are those it has (of its bytes
    and, if gzip, of its content)."""

    def __init__(self, message: str, md5s: frozenset[str]) -> None:
        super().__init__(message)
        self.md5s = md5s


class _OtherDataset(_SourceFailed):
    """The files are those of another registered data set (`dataset`)."""

    def __init__(self, message: str, dataset: str) -> None:
        super().__init__(message)
        self.dataset = dataset


@dataclass(frozen=True)
class _Limits:
    """The bounds of one file's fetch."""

    max_bytes: int  # the file itself
    max_gunzipped_bytes: int  # its content, hashed for the md5
    deadline: float  # time.monotonic() by which the file must be complete
    deadline_s: float  # the same as configured, for messages


def _deadline_failure(limits: _Limits) -> _SourceFailed:
    return _SourceFailed(f"not complete within fetch.deadline_s = {limits.deadline_s:g} s")


@dataclass(frozen=True)
class Candidate:
    """One way to get every file of one format: file name -> where it is."""

    format: Format
    label: str  # what the user sees in messages
    locations: dict[str, Location]


def candidate_sources(spec: DatasetSpec, sources: tuple[Location, ...] | None) -> list[Candidate]:
    """The candidates to try in order: the built-in mirrors (`sources` None), or those each
    of `sources` stands for, in order (`FetchConfig.locations`)."""
    if sources is None:
        return [
            _candidate(src.format, parse_location(mirror), spec, in_dir=src.format == "idx")
            for src in spec.sources
            for mirror in src.mirrors
        ]
    formats = [fmt for fmt in FORMATS if any(s.format == fmt for s in spec.sources)]
    candidates = []
    for location in sources:
        if "pickle" in formats and not _is_dir(location):
            candidates.append(_candidate("pickle", location, spec, in_dir=False))
        else:  # a directory may hold either format; the pickle is one file: looked for first
            candidates += [_candidate(fmt, location, spec, in_dir=True) for fmt in formats]
    return candidates


def _candidate(fmt: Format, location: Location, spec: DatasetSpec, in_dir: bool) -> Candidate:
    if not in_dir:
        return Candidate(fmt, location.value, {PICKLE_FILE: location})
    locations = {name: _join(location, name) for name in spec.files(fmt)}
    label = locations[PICKLE_FILE].value if fmt == "pickle" else f"{location.value} (idx files)"
    return Candidate(fmt, label, locations)


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
    for candidate in candidate_sources(spec, present):
        try:
            files = _fetch_candidate(candidate, spec, config, out_dir, sleep, user_source)
        except _SourceFailed as exc:
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
        for name, location in candidate.locations.items():
            accepted = set(spec.md5s.get(name, ()))
            if name in config.checksums:
                accepted.add(config.checksums[name])
            known = spec.limits.get(name, FileLimits(config.max_bytes, config.max_bytes))
            limits = _Limits(
                max_bytes=config.max_bytes if user_source else known.max_bytes,
                max_gunzipped_bytes=known.max_gunzipped_bytes,
                deadline=time.monotonic() + config.deadline_s,
                deadline_s=config.deadline_s,
            )
            try:
                files[name] = _fetch_file(location, out_dir / name, accepted, config, sleep, limits)
            except _ChecksumMismatch as exc:
                other = dataset_with_file(name, exc.md5s, other_than=spec.name)
                if other is None:
                    raise
                raise _OtherDataset(f"{other}'s file, not {spec.name}'s", other) from None
    except _SourceFailed as exc:
        for other_name in candidate.locations:
            (out_dir / other_name).unlink(missing_ok=True)
        # The label names a one-file candidate; with several files, say which one failed.
        if len(candidate.locations) > 1:
            message = f"{name}: {exc}"
            if isinstance(exc, _OtherDataset):
                raise _OtherDataset(message, exc.dataset) from None
            raise _SourceFailed(message) from None
        raise
    return files


def _fetch_file(
    location: Location,
    dest: Path,
    accepted: set[str],
    config: FetchConfig,
    sleep: Sleep,
    limits: _Limits,
) -> dict[str, Any]:
    """Download or copy to a temporary name, verify, then rename onto `dest`."""
    part = dest.with_name(f".{dest.name}.part")
    try:
        if location.kind == "url":
            _download(location.value, part, config, sleep, limits)
        else:
            _copy(Path(location.value), part, limits.max_bytes)
        md5 = _verify(part, accepted, limits.max_gunzipped_bytes)
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)
    return {"md5": md5, "bytes": dest.stat().st_size}


def _copy(path: Path, dest: Path, max_bytes: int) -> None:
    try:
        info = path.stat()
    except OSError:
        raise _SourceFailed("not found") from None
    # A device (/dev/zero) or a FIFO would be read forever; only regular files are data.
    if not stat.S_ISREG(info.st_mode):
        raise _SourceFailed("not found" if stat.S_ISDIR(info.st_mode) else "not a regular file")
    if info.st_size > max_bytes:
        raise _SourceFailed(
            f"{info.st_size} bytes, over the limit of {max_bytes} (fetch.max_bytes)"
        )
    try:
        shutil.copyfile(path, dest)  # a copy, not a link: the output must not change under DVC
    except OSError as exc:
        raise _SourceFailed(f"cannot read ({exc.strerror or exc})") from None


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
                    raise _SourceFailed(
                        f"gunzips to more than {max_bytes} bytes, the limit for this file"
                    )
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return digest.hexdigest()


def backoff_delay_s(backoff_s: float, attempt: int) -> float:
    """The delay after failed attempt `attempt` (1-based): doubling, capped at MAX_BACKOFF_S
    unless the first delay is already larger."""
    return min(backoff_s * 2 ** (attempt - 1), max(backoff_s, MAX_BACKOFF_S))


def _download(url: str, dest: Path, config: FetchConfig, sleep: Sleep, limits: _Limits) -> None:
    """Download with up to `config.retries` attempts; delays double from `backoff_s`."""
    for attempt in range(1, config.retries + 1):
        remaining_s = limits.deadline - time.monotonic()
        if remaining_s <= 0:
            raise _deadline_failure(limits)
        try:
            _download_once(url, dest, min(config.timeout_s, remaining_s), limits)
            return
        except _Transient as exc:
            if attempt == config.retries:
                raise _Transient(f"{exc}, after {attempt} attempt(s)") from None
            delay_s = backoff_delay_s(config.backoff_s, attempt)
            if time.monotonic() + delay_s >= limits.deadline:
                raise _deadline_failure(limits) from None
            print(f"{url}: {exc}; retrying in {delay_s:g} s", file=sys.stderr)
            sleep(delay_s)


class _Watchdog:
    """Shuts the connection's socket down at the deadline, or earlier while headers are
    awaited: HEADERS_WITHIN_S after each request starts (`awaiting_headers`). The socket
    timeout bounds one read only: a server sending a byte every few seconds (headers or
    body) never trips it, but a shut-down socket ends any read at once."""

    def __init__(self, deadline: float) -> None:
        self.fired = False
        self.headers_late = False
        self._deadline = deadline
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def __enter__(self) -> "_Watchdog":
        self.awaiting_headers()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def awaiting_headers(self) -> None:
        """A request starts: its headers must arrive within HEADERS_WITHIN_S."""
        self._arm(min(self._deadline, time.monotonic() + HEADERS_WITHIN_S))

    def headers_received(self) -> None:
        """The body may take until the deadline."""
        self._arm(self._deadline)

    def _arm(self, at: float) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(max(0.0, at - time.monotonic()), self._fire, (at,))
            self._timer.daemon = True
            self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        """Called with each new connection's socket (redirects open new ones)."""
        self.awaiting_headers()
        with self._lock:
            self._sock = sock
            if self.fired:
                self._shutdown()

    def _fire(self, at: float) -> None:
        with self._lock:
            self.fired = True
            self.headers_late = at < self._deadline
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)


def _watched(base: type[http.client.HTTPConnection], watchdog: _Watchdog) -> Any:
    """`base` whose sockets `watchdog` can shut down."""

    class Watched(base):  # type: ignore[valid-type, misc]
        def connect(self) -> None:
            super().connect()
            watchdog.watch(self.sock)

    return Watched


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPConnection, self._watchdog), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPSConnection, self._watchdog), req)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows at most MAX_REDIRECTS redirects, and only to http(s) URLs (urllib's own
    would follow one to ftp://)."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        scheme = urllib.parse.urlparse(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise _SourceFailed(f"refusing a redirect to {scheme or 'a relative'}:// URL {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download_once(url: str, dest: Path, timeout_s: float, limits: _Limits) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with _Watchdog(limits.deadline) as watchdog:
        opener = urllib.request.build_opener(
            _HTTPHandler(watchdog), _HTTPSHandler(watchdog), _RedirectHandler()
        )
        try:
            _request(opener, request, dest, timeout_s, limits.max_bytes, watchdog)
        except (_SourceFailed, _Transient):
            if watchdog.fired:
                raise _watchdog_failure(watchdog, limits) from None
            raise
        if watchdog.fired:  # the shut-down socket may read as a short, complete-looking body
            raise _watchdog_failure(watchdog, limits)


def _watchdog_failure(watchdog: _Watchdog, limits: _Limits) -> _SourceFailed:
    if watchdog.headers_late:
        return _SourceFailed(f"stalled: no complete headers within {HEADERS_WITHIN_S:g} s")
    return _deadline_failure(limits)


def _request(
    opener: urllib.request.OpenerDirector,
    request: urllib.request.Request,
    dest: Path,
    timeout_s: float,
    max_bytes: int,
    watchdog: _Watchdog,
) -> None:
    url = request.full_url
    try:
        with opener.open(request, timeout=timeout_s) as response:
            watchdog.headers_received()
            _save_body(response, dest, Path(urllib.parse.urlparse(url).path).name, max_bytes)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500:
            raise _Transient(f"HTTP {exc.code}") from None
        raise _SourceFailed(f"HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise _Transient(f"cannot connect: {exc.reason}") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None


def _save_body(response: Any, dest: Path, name: str, max_bytes: int) -> None:
    """Stream the body to `dest`; a body shorter than Content-Length is transient, one
    longer than `max_bytes` (announced or received) a failure."""
    length = response.headers.get("Content-Length")
    expected_bytes = int(length) if length and length.isdigit() else None
    too_big = f"over the limit of {max_bytes} bytes for this file"
    if expected_bytes is not None and expected_bytes > max_bytes:
        raise _SourceFailed(f"Content-Length {expected_bytes}, {too_big}")
    received_bytes = 0
    # disable=None: no bar unless stderr is a terminal (DVC logs, CI, tests).
    progress = {"unit": "B", "unit_scale": True, "file": sys.stderr, "disable": None}
    window_started, window_bytes = time.monotonic(), 0
    with open(dest, "wb") as f, tqdm(total=expected_bytes, desc=name, **progress) as bar:
        # read1: whatever has arrived, so a trickle is seen (read(n) waits for all n bytes).
        while chunk := response.read1(CHUNK_BYTES):
            if received_bytes + len(chunk) > max_bytes:  # an endless body stops here
                raise _SourceFailed(f"body {too_big}")
            f.write(chunk)
            received_bytes += len(chunk)
            bar.update(len(chunk))
            window_bytes += len(chunk)
            window_s = time.monotonic() - window_started
            if window_s >= STALL_WINDOW_S:
                if window_bytes < MIN_BYTES_PER_S * window_s:
                    raise _SourceFailed(
                        f"stalled: {window_bytes} bytes in {window_s:.0f} s "
                        f"(under {MIN_BYTES_PER_S} bytes/s)"
                    )
                window_started, window_bytes = time.monotonic(), 0
    # http.client returns a short body without complaint when the peer closes early.
    if expected_bytes is not None and received_bytes < expected_bytes:
        raise _Transient(f"truncated body: {received_bytes} of {expected_bytes} bytes")


def _one_line(text: str) -> str:
    return " ".join(text.split())
