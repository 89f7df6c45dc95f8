"""Many short messages digested in one call: SHA-256 or SHA-512 of each row of an array, at native speed.

hashlib spends about half a microsecond on every call whatever the message (the hash object, OpenSSL's context,
the digest's bytes), and the proofs of reserves of 10 million accounts hash about 100 million short messages: a
minute of CPU in call overhead alone. Here one loop, compiled by numba, calls OpenSSL's EVP digest functions for
every message with one reused context: 80 to 200 ns a message. It is the libcrypto hashlib itself is linked
against (reached through hashlib's own extension module), so the digests are hashlib's, byte for byte
(tests/por/test_digests.py). The loop only reads where the checked offsets say: a bad offset is refused before
any native code runs.
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

        lib = ctypes.CDLL(_hashlib.__file__)  # dlsym on it also finds the symbols of the libraries it needs
        try:
            lib.EVP_MD_fetch  # noqa: B018 (OpenSSL 3)
        except AttributeError:
            raise RuntimeError("hashlib's OpenSSL has no EVP_MD_fetch: OpenSSL 3 or newer is needed") from None
        self.new = _function(lib.EVP_MD_CTX_new, (), ctypes.c_void_p)
        self.free = _function(lib.EVP_MD_CTX_free, (ctypes.c_void_p,), None)
        self.fetch = _function(lib.EVP_MD_fetch, (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p), ctypes.c_void_p)
        # pointers and lengths as machine words: what numba passes from the loop
        self.init = _function(lib.EVP_DigestInit_ex, (ctypes.c_ssize_t,) * 3, ctypes.c_int)
        self.update = _function(lib.EVP_DigestUpdate, (ctypes.c_ssize_t,) * 3, ctypes.c_int)
        self.final = _function(lib.EVP_DigestFinal_ex, (ctypes.c_ssize_t,) * 3, ctypes.c_int)
        self.digests = {name: self.fetch(None, name.upper().encode(), None) for name in SIZES}
        if not all(self.digests.values()):
            raise RuntimeError("OpenSSL has no SHA-256 or SHA-512 digest to fetch")


def _function(f: Any, argtypes: tuple[Any, ...], restype: Any) -> Any:
    f.argtypes, f.restype = argtypes, restype
    return f


@functools.cache
def load() -> tuple[_Libcrypto, Callable[..., int]]:
    """libcrypto's functions and the compiled loop (about a third of a second the first time). Called before
    forking workers, so that they inherit the loop instead of each compiling it again."""
    import numba
    from numba import types

    c = _Libcrypto()
    init, update, final = c.init, c.update, c.final
    data, offsets = types.Array(types.uint8, 1, "C", readonly=True), types.Array(types.int64, 1, "C", readonly=True)
    suffix, out = types.Array(types.uint8, 2, "C", readonly=True), types.Array(types.uint8, 2, "C")

    @numba.njit(types.intp(data, offsets, suffix, out, types.intp, types.intp), nogil=True)
    def digest_all(data, offsets, suffix, out, md, ctx):  # type: ignore[no-untyped-def]
        n, size, width = out.shape[0], out.shape[1], suffix.shape[1]
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
    for each i (``suffix`` an (n, k) uint8 array, or none)."""
    if algorithm not in SIZES:
        raise ValueError(f"algorithm: one of {', '.join(SIZES)}, not {algorithm!r}")
    c, digest_all = load()
    if isinstance(data, bytes):
        buffer = np.frombuffer(data, dtype=np.uint8)
    else:
        buffer = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    if n < 0:
        raise ValueError("offsets: at least one is needed (where the first message starts)")
    tail = np.zeros((n, 0), dtype=np.uint8) if suffix is None else np.ascontiguousarray(suffix, dtype=np.uint8)
    if tail.ndim != 2 or len(tail) != n:
        raise ValueError(f"suffix: {n} rows expected, not shape {tail.shape}")
    if n and (offsets[0] < 0 or offsets[-1] > len(buffer) or (np.diff(offsets) < 0).any()):
        raise ValueError(f"offsets: must rise from 0 or more to at most {len(buffer)}, the data's length")
    out = np.empty((n, SIZES[algorithm]), dtype=np.uint8)
    ctx = c.new()
    if not ctx:
        raise MemoryError("OpenSSL could not allocate a digest context")
    try:
        failed = digest_all(buffer, offsets, tail, out, c.digests[algorithm], ctx)
    finally:
        c.free(ctx)
    if failed:
        raise RuntimeError(f"OpenSSL failed to digest {failed} of {n} messages")
    return out


def digest_rows(rows: np.ndarray, algorithm: str = "sha256") -> np.ndarray:
    """(n, digest size) uint8: the digest of each row of an (n, k) uint8 array."""
    n, width = rows.shape
    return digest_joined(rows, np.arange(n + 1, dtype=np.int64) * width, None, algorithm)
