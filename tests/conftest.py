"""Shared fixtures. `http_server`: a scripted HTTP server on 127.0.0.1 (tests never
touch the network). And a guard: no test reads the checkout's working params.yaml,
which holds a user's edits (tests take the committed one: `committed_params`)."""

import os
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from filelock import FileLock

from mnist_pipeline.testing.dvc_repo import (
    ALL_STAGES,
    SMALL_PARAMS,
    commit_all,
    copy_into,
    make_repo,
    run,
    set_params,
    stages_run,
    write_local_source,
)
from tests.support import REPO, refuse_working_params


def pytest_configure(config: pytest.Config) -> None:
    sys.addaudithook(refuse_working_params)  # hooks last for the process: tests only


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first: end-to-end, then the ones that run subprocesses, then
    the in-process rest (a stable sort: each file keeps its order). `make test` hands
    files to its workers in this order (--dist loadfile --no-loadscope-reorder), so the
    short ones fill in around the long ones instead of one long file running alone at
    the end."""

    def weight(item: pytest.Item) -> int:
        return 0 if item.get_closest_marker("e2e") else 1 if item.get_closest_marker("slow") else 2

    items.sort(key=weight)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    # Send only this many body bytes, still announcing the full Content-Length.
    truncate_to: int | None = None
    # Never answer (until the test ends): the client's timeout trips however fast or
    # slow the machine is, unlike a delay that the timeout must be shorter than.
    hang: bool = False
    headers: tuple[tuple[str, str], ...] = ()  # extra headers (Location for redirects)
    # Hostile servers: send the body byte by byte, this far apart; or the status line
    # and headers so; or repeat the body without end (and without Content-Length).
    # These delays are the attack itself (a trickle), not waits for something: the tests
    # assert only that the client gives up, never how many bytes came in a given time.
    body_byte_delay_s: float = 0.0
    header_byte_delay_s: float = 0.0
    endless: bool = False


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
        self.released = threading.Event()  # set when the test ends: hanging replies return

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
            if reply.hang:
                scripted.released.wait()
                return
            if reply.header_byte_delay_s:
                return self._trickle(b"HTTP/1.1 200 OK\r\n" * 1000, reply.header_byte_delay_s)
            self.send_response(reply.status)
            if not reply.endless:
                self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            try:
                if reply.endless:
                    while True:  # until the client hangs up
                        self.wfile.write(reply.body)
                elif reply.body_byte_delay_s:
                    self._trickle(reply.body[: reply.truncate_to], reply.body_byte_delay_s)
                else:
                    self.wfile.write(reply.body[: reply.truncate_to])
            except OSError:
                pass  # the client gave up, as it should

        def _trickle(self, data: bytes, delay_s: float) -> None:
            try:
                for index in range(len(data)):
                    self.wfile.write(data[index : index + 1])
                    self.wfile.flush()
                    time.sleep(delay_s)
            except OSError:
                pass

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
        scripted.released.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def committed_params(tmp_path):
    """A copy of the repository's committed params.yaml: tests check the defaults that
    ship, never what a user changed in the working copy."""
    from mnist_pipeline.testing.dvc_repo import committed_text

    path = tmp_path / "committed-params.yaml"
    path.write_text(committed_text(REPO, "params.yaml"))
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny prepared data set (300/60/60 synthetic images) as the prepare stage writes it."""
    from mnist_pipeline.data import prepared
    from mnist_pipeline.data.raw_formats import read_raw
    from mnist_pipeline.testing import synthetic

    root = tmp_path_factory.mktemp("data")
    splits = synthetic.make_splits((300, 60, 60), seed=11)
    synthetic.write_raw_dir(root / "raw", "pickle", splits)
    parsed, description = read_raw(root / "raw")
    prepared.write_prepared(parsed, description["class_names"], "mnist", 100, root / "prepared")
    return root / "prepared"


# The reproduced repository the end-to-end tests start from. A copy of this checkout's
# pipeline with small params, fed by a local synthetic data set, reproduced (`dvc repro`,
# all five stages) and committed: built once per test run, by the first xdist worker to
# ask for it (under a file lock), then copied into each module that needs one
# (`reproduced_copy`), which pays for a directory copy instead of a whole pipeline. Each
# copy is a repository of its own (git objects, DVC cache, workspace); only the data
# set file outside it is shared, and nothing writes to that.

REPRODUCED_ROWS = (1000, 200, 200)  # train, valid, test
SCRIPTS = (
    "scripts/report.py",
    "scripts/seeds.py",
    "scripts/exp.py",
    "scripts/reset.py",
    "scripts/exps.py",
    "scripts/sweep.py",
    "scripts/release.py",
)


def _build(root: Path) -> Path:
    shutil.rmtree(root, ignore_errors=True)  # what a build that failed half-way left
    (root / "source").mkdir(parents=True)
    fetch = write_local_source(root / "source", REPRODUCED_ROWS, seed=7)
    repo = make_repo(root / "repo", REPO)
    copy_into(repo, REPO, *SCRIPTS)
    set_params(repo, SMALL_PARAMS)
    set_params(repo, {"fetch": fetch})
    assert stages_run(run(repo, "dvc", "repro").stdout) == ALL_STAGES
    commit_all(repo, "baseline")
    (root / "built").touch()
    return repo


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory) -> Path:
    """The committed, reproduced repository (read-only: copy it with `reproduced_copy`)."""
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker has its own base folder; their parent is the run's.
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = shared / "reproduced"
    with FileLock(shared / "reproduced.lock"):
        if not (root / "built").exists():
            _build(root)
    return root / "repo"


@pytest.fixture(scope="module")
def reproduced_copy(reproduced, tmp_path_factory):
    """A function that copies the reproduced repository into a new folder named after
    `name` and returns the copy."""

    def copy(name: str) -> Path:
        dest = tmp_path_factory.mktemp(name) / "repo"
        shutil.copytree(reproduced, dest, symlinks=True, ignore=_without_dvc_tmp(reproduced))
        return dest

    return copy


def _without_dvc_tmp(repo: Path):
    """Leave out .dvc/tmp: DVC's state of the original's files (inodes, mtimes) and its
    locks; the copy's DVC builds its own."""
    dvc_dir = str(repo / ".dvc")

    def ignore(folder: str, names: list[str]) -> list[str]:
        return ["tmp"] if folder == dvc_dir and "tmp" in names else []

    return ignore
