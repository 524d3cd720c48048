"""HTTP(S) downloads that end, whatever the server does: one file to a path, retried on
transient failures with doubling delays, every byte and second of it bounded.

`Budget` bounds one file: its bytes, and a deadline for the whole of it, retries
included. Within it: `fetch.timeout_s` per read (a stalled server); a watchdog that shuts
the socket down when the headers take more than HEADERS_WITHIN_S or the deadline passes
(a server trickling a byte at a time never trips a read timeout); a body slower than
MIN_BYTES_PER_S over a STALL_WINDOW_S window has stalled; a body over the byte budget
(announced or received) stops there; redirects go to http(s) only, at most MAX_REDIRECTS.

Failures are `SourceFailed` (this source cannot be used: a 4xx, a stall, too big) or its
`Transient` kind (worth retrying: no connection, a timeout, a 5xx, a truncated body),
each with a short reason for the user.
"""

import contextlib
import http.client
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mnist_pipeline.config.params import FetchConfig

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

Sleep = Callable[[float], None]


class SourceFailed(Exception):
    """This source cannot be used; the message is a short reason."""


class Transient(SourceFailed):
    """A failure worth retrying (connection, timeout, 5xx, truncated body)."""


@dataclass(frozen=True)
class Budget:
    """The bounds of one file's download."""

    max_bytes: int  # the file itself
    deadline: float  # time.monotonic() by which the file must be complete
    deadline_s: float  # the same as configured, for messages


def deadline_failure(budget: Budget) -> SourceFailed:
    return SourceFailed(f"not complete within fetch.deadline_s = {budget.deadline_s:g} s")


def backoff_delay_s(backoff_s: float, attempt: int) -> float:
    """The delay after failed attempt `attempt` (1-based): doubling, capped at MAX_BACKOFF_S
    unless the first delay is already larger."""
    return min(backoff_s * 2 ** (attempt - 1), max(backoff_s, MAX_BACKOFF_S))


def download(url: str, dest: Path, config: FetchConfig, budget: Budget, sleep: Sleep) -> None:
    """Download with up to `config.retries` attempts; delays double from `backoff_s`."""
    for attempt in range(1, config.retries + 1):
        remaining_s = budget.deadline - time.monotonic()
        if remaining_s <= 0:
            raise deadline_failure(budget)
        try:
            _download_once(url, dest, min(config.timeout_s, remaining_s), budget)
            return
        except Transient as exc:
            if attempt == config.retries:
                raise Transient(f"{exc}, after {attempt} attempt(s)") from None
            delay_s = backoff_delay_s(config.backoff_s, attempt)
            if time.monotonic() + delay_s >= budget.deadline:
                raise deadline_failure(budget) from None
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
            raise SourceFailed(f"refusing a redirect to {scheme or 'a relative'}:// URL {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download_once(url: str, dest: Path, timeout_s: float, budget: Budget) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with _Watchdog(budget.deadline) as watchdog:
        opener = urllib.request.build_opener(
            _HTTPHandler(watchdog), _HTTPSHandler(watchdog), _RedirectHandler()
        )
        try:
            _request(opener, request, dest, timeout_s, budget.max_bytes, watchdog)
        except (SourceFailed, Transient):
            if watchdog.fired:
                raise _watchdog_failure(watchdog, budget) from None
            raise
        if watchdog.fired:  # the shut-down socket may read as a short, complete-looking body
            raise _watchdog_failure(watchdog, budget)


def _watchdog_failure(watchdog: _Watchdog, budget: Budget) -> SourceFailed:
    if watchdog.headers_late:
        return SourceFailed(f"stalled: no complete headers within {HEADERS_WITHIN_S:g} s")
    return deadline_failure(budget)


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
            raise Transient(f"HTTP {exc.code}") from None
        raise SourceFailed(f"HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise Transient(f"cannot connect: {exc.reason}") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        raise Transient(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None


def _save_body(response: Any, dest: Path, name: str, max_bytes: int) -> None:
    """Stream the body to `dest`; a body shorter than Content-Length is transient, one
    longer than `max_bytes` (announced or received) a failure."""
    length = response.headers.get("Content-Length")
    expected_bytes = int(length) if length and length.isdigit() else None
    too_big = f"over the limit of {max_bytes} bytes for this file"
    if expected_bytes is not None and expected_bytes > max_bytes:
        raise SourceFailed(f"Content-Length {expected_bytes}, {too_big}")
    received_bytes = 0
    # disable=None: no bar unless stderr is a terminal (DVC logs, CI, tests).
    progress = {"unit": "B", "unit_scale": True, "file": sys.stderr, "disable": None}
    window_started, window_bytes = time.monotonic(), 0
    with open(dest, "wb") as f, tqdm(total=expected_bytes, desc=name, **progress) as bar:
        # read1: whatever has arrived, so a trickle is seen (read(n) waits for all n bytes).
        while chunk := response.read1(CHUNK_BYTES):
            if received_bytes + len(chunk) > max_bytes:  # an endless body stops here
                raise SourceFailed(f"body {too_big}")
            f.write(chunk)
            received_bytes += len(chunk)
            bar.update(len(chunk))
            window_bytes += len(chunk)
            window_s = time.monotonic() - window_started
            if window_s >= STALL_WINDOW_S:
                if window_bytes < MIN_BYTES_PER_S * window_s:
                    raise SourceFailed(
                        f"stalled: {window_bytes} bytes in {window_s:.0f} s "
                        f"(under {MIN_BYTES_PER_S} bytes/s)"
                    )
                window_started, window_bytes = time.monotonic(), 0
    # http.client returns a short body without complaint when the peer closes early.
    if expected_bytes is not None and received_bytes < expected_bytes:
        raise Transient(f"truncated body: {received_bytes} of {expected_bytes} bytes")
