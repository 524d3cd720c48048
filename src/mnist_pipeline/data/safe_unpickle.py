"""An unpickler that admits only what pickled numpy arrays need.

Plain `pickle.load` runs whatever a file names (any importable callable), so a
crafted `mnist.pkl.gz` could run code. This one resolves exactly the globals
that numpy arrays pickle with, under their Python 2 and 3 and numpy 1 and 2
names, and checks their arguments; anything else is an UnpicklingError.
"""

import pickle
from typing import Any

import numpy as np

_RECONSTRUCT: Any = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own, wherever it lives


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to reconstruct {subtype!r}")
    return _RECONSTRUCT(subtype, shape, dtype)


def _dtype(*args: Any) -> np.dtype:
    # encoding="bytes" (parsers.read_pickle) hands Python 2 strings over as bytes: b"f4" -> "f4".
    decoded: list[Any] = [a.decode("latin1") if isinstance(a, bytes) else a for a in args]
    dtype = np.dtype(*decoded)
    if dtype.hasobject:  # object arrays would hold arbitrary pickled objects
        raise pickle.UnpicklingError(f"refusing object dtype {dtype}")
    return dtype


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    # How numpy pickles arrays with protocol 5 (Python 3.14's default), e.g. a re-saved copy.
    return np.frombuffer(buffer, dtype=_dtype(dtype)).reshape(shape, order=order)


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


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Loads pickled numpy arrays and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None
