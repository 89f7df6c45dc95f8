"""The canonical encoding of anything that is hashed or signed.

JSON with sorted keys, no whitespace, UTF-8, and only these types: objects with string keys, lists,
strings, integers, booleans and null. Floats are refused: every amount is an integer or a string of
digits, so two implementations always produce the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from policies.errors import CanonicalError

_PLAIN = (str, int, bool, type(None))  # exact types that need no further look (the common case, fast)


def _check(value: Any, path: str) -> None:
    if type(value) in _PLAIN:
        return
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalError(f"{path}: object keys must be strings")
            if type(item) not in _PLAIN:
                _check(item, f"{path}.{key}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if type(item) not in _PLAIN:
                _check(item, f"{path}[{i}]")
        return
    raise CanonicalError(f"{path}: {type(value).__name__} has no canonical encoding")


def canonical_bytes(value: Any) -> bytes:
    _check(value, "$")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def canonical_hash(value: Any) -> str:
    """SHA-256 of the canonical bytes, as 64 lowercase hex digits."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


MAX_DEPTH = 32  # far deeper than any document of the project; the C decoder can overflow the stack long
# before Python's recursion limit on hostile nesting, so depth is measured before decoding.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _depth(data: bytes) -> int:
    depth = deepest = 0
    for byte in _STRING.sub(b"", data).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_canonical(data: bytes) -> Any:
    """Decode bytes that must be exactly the canonical encoding of what they hold."""
    if _depth(data) > MAX_DEPTH:
        raise CanonicalError(f"not canonical JSON: nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(data.decode("utf-8"), parse_float=_no_float, parse_constant=_no_float)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CanonicalError(f"not canonical JSON: {exc}") from None
    except (ValueError, RecursionError):  # integers past Python's digit limit, nesting past the stack
        raise CanonicalError("not canonical JSON: a number too long or nesting too deep") from None
    try:
        encoded = canonical_bytes(value)
    except UnicodeEncodeError:  # a lone surrogate escape such as \ud800 decodes but has no UTF-8 form
        raise CanonicalError("not canonical JSON: a string holds a lone surrogate") from None
    if encoded != data:
        raise CanonicalError("bytes are not in canonical form (key order, spacing or escapes differ)")
    return value


def _no_float(text: str) -> Any:
    raise CanonicalError(f"non-integer number {text[:20]} is not allowed")
