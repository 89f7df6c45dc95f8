"""Many short messages digested in one call: SHA-256 or SHA-512 of each row of an array, at native speed.

hashlib spends about half a microsecond on every call whatever the message (the hash object, OpenSSL's context,
the digest's bytes), and the proofs of reserves of 10 million accounts hash about 100 million short messages: a
minute of CPU in call overhead alone. Here one loop, compiled by numba, calls OpenSSL's EVP digest functions for
every message with one reused context: 80 to 200 ns a message. It is the libcrypto hashlib itself is linked
against (reached through hashlib's own extension module), so the digests are hashlib's, byte for byte
(tests/custody/test_por_digests.py). The loop reads only where the offsets say, and they are checked first, on
a private copy: data and suffixes of bytes only (uint8), offsets of integers that rise within the data.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

SIZES = {"sha256": 32, "sha512": 64}


class _Libcrypto:
    """The EVP functions of hashlib's libcrypto, and each algorithm's fetched digest (once a process; a forked
    worker inherits them)."""

    def __init__(self) -> None:
        import _hashlib  # the OpenSSL-backed hashlib: its libcrypto is the one loaded in this process

        try:  # dlsym on the extension also finds the symbols of the libraries it needs
            lib = ctypes.CDLL(_hashlib.__file__)
            lib.EVP_MD_fetch  # noqa: B018
        except (AttributeError, OSError):
            raise RuntimeError(
                f"this Python's hashlib ({getattr(_hashlib, '__file__', 'built in')}) does not expose OpenSSL 3's "
                "EVP functions, which proofs of reserves hash with: use a Python linked against a shared OpenSSL 3"
            ) from None
        self.new = _function(lib.EVP_MD_CTX_new, (), ctypes.c_void_p)
        self.free = _function(lib.EVP_MD_CTX_free, (ctypes.c_void_p,), None)
        # pointers and lengths as machine words: what numba passes from the loop
        self.init = _function(lib.EVP_DigestInit_ex, (ctypes.c_ssize_t,) * 3, ctypes.c_int)
        self.update = _function(lib.EVP_DigestUpdate, (ctypes.c_ssize_t,) * 3, ctypes.c_int)
        self.final = _function(lib.EVP_DigestFinal_ex, (ctypes.c_ssize_t,) * 3, ctypes.c_int)
        self.clear_errors = _function(lib.ERR_clear_error, (), None)
        fetch = _function(lib.EVP_MD_fetch, (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p), ctypes.c_void_p)
        self.digests = {name: fetch(None, name.upper().encode(), None) for name in SIZES}
        if not all(self.digests.values()):
            raise RuntimeError("OpenSSL has no SHA-256 or SHA-512 digest to fetch")


def _function(f: Any, argtypes: tuple[Any, ...], restype: Any) -> Any:
    f.argtypes, f.restype = argtypes, restype
    return f


def load() -> None:
    """Compile the loop now (under a second): before forking workers, so that they inherit it instead of each
    compiling it again."""
    _load()


@functools.cache
def _load() -> tuple[_Libcrypto, Callable[..., int]]:
    import numba
    from numba import types

    c = _Libcrypto()
    init, update, final = c.init, c.update, c.final
    data, offsets = types.Array(types.uint8, 1, "C", readonly=True), types.Array(types.int64, 1, "C", readonly=True)
    suffix, out = types.Array(types.uint8, 2, "C", readonly=True), types.Array(types.uint8, 2, "C")

    @numba.njit(types.intp(data, offsets, suffix, out, types.intp, types.intp), nogil=True)
    def digest_all(data, offsets, suffix, out, md, ctx):  # type: ignore[no-untyped-def]
        n, size, width = out.shape[0], out.shape[1], suffix.shape[1]
        if offsets.shape[0] != n + 1 or suffix.shape[0] != n:
            return -1
        base, tail, dst = np.intp(data.ctypes.data), np.intp(suffix.ctypes.data), np.intp(out.ctypes.data)
        failed = 0
        for i in range(n):
            ok = init(ctx, md, 0) == 1
            ok &= update(ctx, base + offsets[i], offsets[i + 1] - offsets[i]) == 1
            if width:
                ok &= update(ctx, tail + i * width, width) == 1
            ok &= final(ctx, dst + i * size, 0) == 1
            failed += not ok
        return failed

    return c, digest_all


def digest_joined(
    data: bytes | np.ndarray, offsets: np.ndarray, suffix: np.ndarray | None = None, algorithm: str = "sha256"
) -> np.ndarray:
    """(n, digest size) uint8, n = len(offsets) - 1: the digest of data[offsets[i]:offsets[i+1]] ‖ suffix[i]
    for each i (``data`` bytes or a uint8 array, ``suffix`` an (n, k) uint8 array, or none)."""
    if algorithm not in SIZES:
        raise ValueError(f"algorithm: one of {', '.join(SIZES)}, not {algorithm!r}")
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else _bytes("data", data).reshape(-1)
    offsets = np.asarray(offsets)
    if offsets.dtype.kind not in "iu" or not np.can_cast(offsets.dtype, np.int64):
        raise ValueError(f"offsets: integers up to 2^63 expected, not {offsets.dtype}")
    offsets = np.array(offsets, dtype=np.int64, order="C", copy=True)  # what is checked is what the loop reads
    n = len(offsets) - 1
    if offsets.ndim != 1 or n < 0:
        raise ValueError("offsets: a list of at least one (where the first message starts)")
    tail = np.zeros((n, 0), dtype=np.uint8) if suffix is None else _bytes("suffix", suffix)
    if tail.ndim != 2 or len(tail) != n:
        raise ValueError(f"suffix: {n} rows expected, not shape {tail.shape}")
    if n and (offsets[0] < 0 or offsets[-1] > len(buffer) or (offsets[1:] < offsets[:-1]).any()):
        raise ValueError(f"offsets: must rise from 0 or more to at most {len(buffer)}, the data's length")
    out = np.empty((n, SIZES[algorithm]), dtype=np.uint8)
    c, digest_all = _load()
    ctx = c.new()
    if not ctx:
        raise MemoryError("OpenSSL could not allocate a digest context")
    try:
        failed = digest_all(buffer, offsets, tail, out, c.digests[algorithm], ctx)
    finally:
        c.free(ctx)
    if failed:
        c.clear_errors()  # OpenSSL's error queue, left for nobody
        raise RuntimeError(f"OpenSSL failed to digest {failed} of {n} messages")
    return out


def digest_rows(rows: np.ndarray, algorithm: str = "sha256") -> np.ndarray:
    """(n, digest size) uint8: the digest of each row of an (n, k) uint8 array."""
    rows = _bytes("rows", rows)
    if rows.ndim != 2:
        raise ValueError(f"rows: a 2-D array expected, not shape {rows.shape}")
    n, width = rows.shape
    return digest_joined(rows, np.arange(n + 1, dtype=np.int64) * width, None, algorithm)


def _bytes(name: str, array: np.ndarray) -> np.ndarray:
    """A C-contiguous uint8 array (copied when it was not contiguous); other types are refused, not converted."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
        raise ValueError(f"{name}: a uint8 array expected, not {getattr(array, 'dtype', type(array).__name__)}")
    return np.ascontiguousarray(array)
