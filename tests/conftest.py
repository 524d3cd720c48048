"""Shared fixtures. `http_server`: a scripted HTTP server on 127.0.0.1 (tests never
touch the network)."""

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    # Send only this many body bytes, still announcing the full Content-Length.
    truncate_to: int | None = None
    delay_s: float = 0.0  # wait before answering (to trip the client's timeout)


class ScriptedServer:
    """Serves, for each path, its scripted replies in order; the last one repeats.

    Unknown paths get 404. `hits` counts the requests for each path.
    """

    Reply = Reply  # so tests need not import conftest

    def __init__(self, port: int) -> None:
        self.port = port
        self.routes: dict[str, list[Reply]] = {}
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, path: str, *replies: Reply) -> str:
        """Script `path` and return its full URL."""
        self.routes[path] = list(replies)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def next_reply(self, path: str) -> Reply:
        with self._lock:
            replies = self.routes.get(path)
            index = self.hits[path]
            self.hits[path] += 1
        if not replies:
            return Reply(404, b"not found")
        return replies[min(index, len(replies) - 1)]


def _handler(scripted: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            reply = scripted.next_reply(self.path)
            time.sleep(reply.delay_s)
            self.send_response(reply.status)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body[: reply.truncate_to])

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    return Handler


@pytest.fixture
def http_server() -> Iterator[ScriptedServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    scripted = ScriptedServer(server.server_address[1])
    server.RequestHandlerClass = _handler(scripted)
    # A short poll interval: shutdown() waits up to one interval.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield scripted
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def committed_params(tmp_path):
    """A copy of the repository's committed params.yaml: tests check the defaults that
    ship, never what a user changed in the working copy."""
    from mnist_pipeline.testing.dvc_repo import committed_text

    path = tmp_path / "committed-params.yaml"
    path.write_text(committed_text(Path(__file__).resolve().parents[1], "params.yaml"))
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny prepared data set (300/60/60 synthetic images) as the prepare stage writes it."""
    from mnist_pipeline.data import prepared as shards
    from mnist_pipeline.data.raw_formats import read_raw
    from mnist_pipeline.testing import synthetic

    root = tmp_path_factory.mktemp("data")
    splits = synthetic.make_splits((300, 60, 60), seed=11)
    synthetic.write_raw_dir(root / "raw", "pickle", splits)
    parsed, description = read_raw(root / "raw")
    shards.write_prepared(parsed, description["class_names"], "mnist", 100, root / "prepared")
    return root / "prepared"
