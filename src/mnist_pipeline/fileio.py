"""Writing outputs so that a failure never leaves a half-written one behind.

Files are written next to their destination under a temporary name and
renamed into place (a rename within one file system is atomic); directories
are built in a temporary sibling and renamed at the end.

A killed run (SIGKILL, power loss) cannot remove its temporary sibling; the next
run for the same destination does (`remove_stale_temporaries`): the names say
whose they are, `.{dest.name}.tmp-{pid}-{random}`.
"""

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import PipelineError


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `dest` if the block succeeds.

    On any exception the temporary directory is removed and `dest` is left as
    it was (DVC has usually removed it already before running the stage).
    """
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        check_replaceable(dest)  # a link or a device is an error; a regular file is replaced
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(dest), dir=dest.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; outputs get the usual mode
        yield tmp
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(dest: Path, *, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; it is renamed onto `dest` on success.

    Only a regular file is ever replaced: a link, a device, a FIFO or a folder at `dest`
    was not made here (the rename would put a file in place of /dev/null or of a link's
    target's name), so it is an error before anything is written. `make_parents=False`
    (a path a user typed) makes a missing parent folder an error too."""
    dest = Path(dest)
    check_replaceable(dest)
    if make_parents:
        dest.parent.mkdir(parents=True, exist_ok=True)
    elif not dest.parent.is_dir():
        raise PipelineError(f"{dest}: its folder {dest.parent} does not exist")
    remove_stale_temporaries(dest)
    fd, name = tempfile.mkstemp(prefix=_temporary_prefix(dest), dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; outputs get the usual mode
        yield tmp
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def check_replaceable(dest: Path) -> None:
    """Raise unless `dest` is missing or a regular file (not a link to one)."""
    try:
        mode = os.lstat(dest).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise PipelineError(f"{dest}: cannot write ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise PipelineError(f"{dest}: is {kind}; refusing to replace it with the output")


_KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFDIR: "a folder",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def read_regular_file(path: Path, max_bytes: int, what: str = "a file") -> bytes:
    """The bytes of `path`, which must be a regular file (links followed) of at most
    `max_bytes`; `what` (with its article) names it in errors. Opened without blocking and
    checked on the open file, so a FIFO or a device (or a link to one) is refused without
    reading from it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such file") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot open ({exc.strerror})") from None
    info = os.fstat(fd)  # before fdopen, which refuses a folder with its own error
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise PipelineError(f"{path}: is {kind}, not {what}")
    with os.fdopen(fd, "rb") as file:
        if info.st_size > max_bytes:
            raise PipelineError(
                f"{path}: {info.st_size} bytes, over the limit of {max_bytes} for {what}"
            )
        # One byte past the size: a file that grew since fstat is seen (read(n) allocates n).
        data = file.read(info.st_size + 1)
    if len(data) > info.st_size:
        raise PipelineError(f"{path}: grew while being read; is something writing it?")
    return data


def _temporary_prefix(dest: Path) -> str:
    return f".{dest.name}.tmp-{os.getpid()}-"


def remove_stale_temporaries(dest: Path) -> list[Path]:
    """Remove the temporary siblings that earlier, killed runs left for `dest`, and return
    them. Only names of the form `.{dest.name}.tmp-*` are touched; one whose process is
    still running (a concurrent run) is kept. Names without a pid (older versions) go."""
    removed = []
    prefix = f".{dest.name}.tmp-"
    for path in Path(dest).parent.glob(glob.escape(prefix) + "*"):
        match = re.fullmatch(r"(\d+)-.+", path.name[len(prefix) :])
        if match is not None and _process_exists(int(match.group(1))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: checks only
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OverflowError:  # not a pid at all
        return False
    return True


def _umask() -> int:
    current = os.umask(0)  # the only way to read it is to set it
    os.umask(current)
    return current


def read_json(path: Path, fix: str, max_bytes: int | None = None) -> Any:
    """Parse a JSON file; a missing or unparsable one, or one over `max_bytes` (checked
    before parsing: parsed JSON takes ~10x its size in memory), is a PipelineError ending
    in `fix`."""
    try:
        with open(path, "rb") as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; {fix}") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise PipelineError(f"{path}: larger than the limit of {max_bytes} bytes; {fix}")
    try:
        return json.loads(data.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc}); {fix}") from None


def write_json(path: Path, data: Any) -> None:
    """Write `data` as pretty JSON, atomically (newline-terminated, stable key order)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
