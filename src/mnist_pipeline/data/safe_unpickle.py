"""An unpickler that admits only what pickled numpy arrays need.

Plain `pickle.load` runs whatever a file names (any importable callable), so a
crafted `mnist.pkl.gz` could run code. This one resolves exactly the globals
that numpy arrays pickle with, under their Python 2 and 3 and numpy 1 and 2
names, and checks their arguments; anything else is an UnpicklingError.

Memory is bounded by construction (`load_bounded`): the stream is read through
`BoundedReader` (at most `max_bytes` in all, no single read larger), a first pass
counts the opcodes (each builds at most one small object, or one whose data the
stream holds), and no array may be allocated larger than MAX_ARRAY_BYTES.
"""

import math
import pickle
import pickletools
import struct
from typing import IO, Any

import numpy as np

_RECONSTRUCT: Any = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own, wherever it lives
# The largest array a pickle may make: MNIST's largest is 50,000 x 784 float32 = 157 MB.
MAX_ARRAY_BYTES = 400_000_000
# mnist.pkl.gz holds a few dozen opcodes; a pickle of millions of tiny opcodes (each a list,
# a memo entry) would take ~100 bytes of memory per byte of stream.
MAX_OPCODES = 100_000


class TooLarge(pickle.UnpicklingError):
    """The stream is longer than its limit."""


class BoundedReader:
    """A read-only stream over `stream` that fails once more than `max_bytes` were read.
    Every read asks for at most the remaining budget + 1 bytes, so a length field
    claiming gigabytes allocates no more than the budget."""

    def __init__(self, stream: IO[bytes], max_bytes: int) -> None:
        self._stream = stream
        self._max_bytes = max_bytes
        self.read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        allowed = self._max_bytes - self.read_bytes + 1
        size = allowed if size is None or size < 0 else min(size, allowed)
        return self._count(self._stream.read(size))

    def readline(self, size: int | None = -1) -> bytes:
        allowed = self._max_bytes - self.read_bytes + 1
        size = allowed if size is None or size < 0 else min(size, allowed)
        return self._count(self._stream.readline(size))

    def readinto(self, buffer: memoryview) -> int:
        # The unpickler reads large strings straight into their final bytes object with
        # this; without it, each would be read, then copied (one more copy at peak).
        allowed = self._max_bytes - self.read_bytes + 1
        view = memoryview(buffer).cast("B")
        size = self._stream.readinto(view[: min(len(view), allowed)])  # type: ignore[attr-defined]
        self.read_bytes += size
        if self.read_bytes > self._max_bytes:
            raise TooLarge(f"more than {self._max_bytes} bytes of pickle data, the limit")
        return size

    def _count(self, data: bytes) -> bytes:
        self.read_bytes += len(data)
        if self.read_bytes > self._max_bytes:
            raise TooLarge(f"more than {self._max_bytes} bytes of pickle data, the limit")
        return data


def count_opcodes(stream: BoundedReader, max_opcodes: int = MAX_OPCODES) -> int:
    """Walk the pickle's opcodes up to STOP without building anything, skipping their
    arguments in small reads (pickletools.genops would hold each string argument whole:
    a claimed 2 GB string would be read into memory just to be counted); fail past
    `max_opcodes` opcodes or at the stream's byte limit."""
    for count in range(1, max_opcodes + 1):
        code = stream.read(1)
        if not code:
            raise pickle.UnpicklingError("pickle data was truncated")
        op = _OPCODES.get(code.decode("latin1"))
        if op is None:
            raise pickle.UnpicklingError(f"unknown pickle opcode {code!r}")
        if op.arg is not None:
            _skip_argument(stream, op.arg)
        if op.name == "STOP":
            return count
    raise pickle.UnpicklingError(f"more than {max_opcodes} pickle opcodes, the limit")


_OPCODES = {op.code: op for op in pickletools.opcodes}
_LENGTH_PREFIXES = {  # pickletools' markers for a length-prefixed argument: (bytes, format)
    pickletools.TAKEN_FROM_ARGUMENT1: (1, "<B"),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, "<i"),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, "<I"),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, "<Q"),
}
MAX_LINE_BYTES = 65_536  # a newline-terminated argument: a module or class name, a number
SKIP_CHUNK_BYTES = 1 << 20


def _skip_argument(stream: BoundedReader, arg: pickletools.ArgumentDescriptor) -> None:
    if arg.n == pickletools.UP_TO_NEWLINE:
        for _ in range(2 if arg.name.endswith("_pair") else 1):  # GLOBAL, INST: two lines
            line = stream.readline(MAX_LINE_BYTES)
            if not line.endswith(b"\n"):
                raise pickle.UnpicklingError("a pickle text argument is unterminated or too long")
        return
    if arg.n in _LENGTH_PREFIXES:
        size, fmt = _LENGTH_PREFIXES[arg.n]
        prefix = stream.read(size)
        if len(prefix) != size:
            raise pickle.UnpicklingError("pickle data was truncated")
        length = struct.unpack(fmt, prefix)[0]
        if length < 0:
            raise pickle.UnpicklingError(f"negative pickle argument length {length}")
    else:
        length = arg.n
    while length > 0:  # the byte limit stops a length of gigabytes here
        chunk = stream.read(min(length, SKIP_CHUNK_BYTES))
        if not chunk:
            raise pickle.UnpicklingError("pickle data was truncated")
        length -= len(chunk)


def _check_array_bytes(shape: Any, dtype: np.dtype) -> None:
    dims = shape if isinstance(shape, tuple | list) else (shape,)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise pickle.UnpicklingError(f"refusing array shape {shape!r}")
    nbytes = math.prod(dims) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise pickle.UnpicklingError(
            f"refusing a {nbytes}-byte array, over the limit of {MAX_ARRAY_BYTES} bytes"
        )


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to reconstruct {subtype!r}")
    # numpy itself passes (0,); any other shape would be allocated here, from nothing.
    _check_array_bytes(shape, _dtype(dtype))
    return _RECONSTRUCT(subtype, shape, dtype)


def _dtype(*args: Any) -> np.dtype:
    # encoding="bytes" (raw_formats.read_pickle) hands Python 2 strings over as bytes:
    # b"f4" -> "f4".
    decoded: list[Any] = [a.decode("latin1") if isinstance(a, bytes) else a for a in args]
    dtype = np.dtype(*decoded)
    if dtype.hasobject:  # object arrays would hold arbitrary pickled objects
        raise pickle.UnpicklingError(f"refusing object dtype {dtype}")
    return dtype


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    # How numpy pickles arrays with protocol 5 (Python 3.14's default), e.g. a re-saved copy.
    dtype = _dtype(dtype)
    _check_array_bytes(shape, dtype)  # a view of the buffer, but checked all the same
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _encode(text: Any, encoding: Any) -> bytes:  # how Python 3 protocol-2 pickles store bytes
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing _codecs.encode other than str -> latin1")
    return text.encode("latin1")


def _empty_bytes() -> bytes:  # Python 3 protocol 2 writes b"" as bytes()
    return b""


# Exactly the globals that pickled numpy arrays use; nothing else can be imported.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1.x / Python 2 name
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2 name
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # pickle protocol 5
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,
    ("__builtin__", "bytes"): _empty_bytes,  # the protocol-2 name of builtins.bytes
}


def load_bounded(
    open_stream: Any, max_bytes: int, max_opcodes: int = MAX_OPCODES, encoding: str = "bytes"
) -> Any:
    """Unpickle what `open_stream()` (a context manager giving a binary stream) holds, in two
    passes over it: count the opcodes, then load. Both read at most `max_bytes`."""
    with open_stream() as f:
        count_opcodes(BoundedReader(f, max_bytes), max_opcodes)
    with open_stream() as f:
        return NumpyOnlyUnpickler(BoundedReader(f, max_bytes), encoding=encoding).load()


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Loads pickled numpy arrays and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None
