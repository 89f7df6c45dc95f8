"""The liabilities file's rules applied to whole columns at once (millions of cells, no Python object per cell).

Each function takes an Arrow string column as the CSV reader produced it and answers, for every cell, whether
the row-by-row reader (``custody.por.liabilityrows``) would accept it, and what it would make of it. They only
say *which* cells are refused; the message is written by the row-by-row rules, so it is the same word for word.

Balances are converted with integer arithmetic only: a cell is accepted exactly when ``parse_amount`` accepts
it (ASCII digits, at most one point with digits on both sides, at most 79 characters, no more significant
decimals than the asset's places) and its value in base units is below 2^64. No float is involved anywhere.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from policies.units import MAX_DIGITS

MAX_ID_CHARS = 128
# Every character Python's re matches with \s (str.isspace()); an account id may not start or end with one.
# tests/custody/test_por_csv.py checks the list against re over every code point.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)

# Powers of ten in uint64 (10^19 is the last that fits); a digit at 10^19 needs care: 2 × 10^19 > 2^64.
_POW = np.array([10**e for e in range(20)], dtype=np.uint64)
_POW_OR_ZERO = np.append(_POW, np.uint64(0))  # index 20 stands for any larger scale: only 0 survives it
_LIMIT = np.array([(2**64 - 1) // 10**e for e in range(20)] + [0], dtype=np.uint64)  # the most that scales
_MIX = np.uint64(0x9E3779B97F4A7C15)
_LOW_BYTES = np.array([2 ** (8 * k) - 1 for k in range(9)], dtype=np.uint64)  # the first k bytes of a word
_FINGERPRINT_BYTES = 4 * MAX_ID_CHARS  # the longest an account id can be in UTF-8
_TOP = 10**19
_TOP_ROOM = 2**64 - _TOP  # with a leading 1 at 10^19, the rest must stay below this
_ID_FORBIDDEN = np.zeros(256, dtype=bool)
_ID_FORBIDDEN[[*range(0x20), 0x7F, ord(",")]] = True  # UTF-8 never uses these bytes inside a longer character


def buffers(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The column's offsets (int64, n+1, starting at 0) and its bytes, without copying them."""
    if column.type != pa.large_string():
        column = column.cast(pa.large_string())
    if column.null_count:
        raise ValueError("the CSV reader produced a null cell")  # ConvertOptions(strings_can_be_null=False)
    n = len(column)
    _, raw_offsets, raw_data = column.buffers()
    offsets = np.frombuffer(raw_offsets, dtype=np.int64)[column.offset : column.offset + n + 1]
    data = np.frombuffer(raw_data, dtype=np.uint8) if raw_data is not None else np.zeros(0, dtype=np.uint8)
    data = data[offsets[0] : offsets[-1]]
    return offsets - offsets[0], data


def _cells_of(positions: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The cell each byte position belongs to (an empty cell shares its start with the next one: the later wins)."""
    return np.searchsorted(starts, positions, side="right") - 1


def decimal_column(column: pa.Array, places: int) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's balance in base units (uint64, 0 where refused) and whether it is accepted.

    A cell of at most 19 digits (once the fraction's trailing zeros are dropped) loses its point and goes
    through Arrow's exact string-to-uint64 cast (below 10^19, it cannot overflow), then is scaled to the
    asset's places with an overflow check; a longer one goes through ``_digit_by_digit``.
    """
    column = column.cast(pa.large_string())
    offsets, data = buffers(column)
    lengths = np.diff(offsets)
    ok = (lengths >= 1) & (lengths <= MAX_DIGITS + 1)
    is_point = data == ord(".")
    not_digit = (data - np.uint8(ord("0"))) >= 10  # wraps below '0', so one comparison tells digits
    ok[_cells_of(np.flatnonzero(not_digit & ~is_point), offsets[:-1])] = False
    point = np.asarray(pc.find_substring(column, "."), dtype=np.int64)
    has_point = point >= 0
    points = has_point.astype(np.int64)
    if np.count_nonzero(is_point) != np.count_nonzero(has_point):  # some cell has two points or more
        points = np.asarray(pc.count_substring(column, "."), dtype=np.int64)
        ok &= points <= 1
    ok &= (point != 0) & (point != lengths - 1)  # digits on both sides of the point
    if np.any(ok & has_point & (lengths - point - 1 > places)):
        # Trailing zeros after the point are not significant (parse_amount drops them): "1.50" is "1.5".
        column = pc.if_else(pa.array(has_point), pc.utf8_rtrim(column, "0"), column)
        offsets, data = buffers(column)
        lengths = np.diff(offsets)
        is_point = data == ord(".")
    fraction = np.where(has_point, lengths - point - 1, 0)
    ok &= fraction <= places
    simple = ok & (lengths - points <= 19)
    shifted = offsets.copy()
    np.cumsum(points, out=shifted[1:])
    shifted[1:] = offsets[1:] - shifted[1:]
    digits = pa.LargeStringArray.from_buffers(len(lengths), pa.py_buffer(shifted), pa.py_buffer(data[~is_point]))
    if not simple.all():
        digits = pc.if_else(pa.array(simple), digits, pa.scalar("0", pa.large_string()))
    whole = np.asarray(pc.cast(digits, pa.uint64()), dtype=np.uint64)
    scale = np.clip(places - fraction, 0, len(_POW))
    ok &= ~simple | (whole <= _LIMIT[scale])
    values = np.where(ok & simple, whole * _POW_OR_ZERO[scale], np.uint64(0))
    hard = np.flatnonzero(ok & ~simple)
    if len(hard):
        values[hard], ok[hard] = _digit_by_digit(column.take(pa.array(hard)), places)
    return values, ok


def _digit_by_digit(column: pa.Array, places: int) -> tuple[np.ndarray, np.ndarray]:
    """Cells already known to be digits with at most one inner point and no excess decimals, of any length up
    to 79: each digit's power of ten is worked out and the 64-bit sum is checked for overflow."""
    offsets, data = buffers(column)
    starts, lengths = offsets[:-1], np.diff(offsets)
    n, size = len(lengths), len(data)
    cell = np.repeat(np.arange(n, dtype=np.int64), lengths)
    digit = data - np.uint8(ord("0"))
    is_digit = digit < 10
    points = np.flatnonzero(~is_digit)
    point = starts + lengths  # a cell without a point: as if it were just after the last digit
    point[cell[points]] = points
    # The power of ten each digit stands for in base units: places + (digits between it and the point) before
    # the point, places - (its rank after the point) after it.
    to_point = point[cell] - np.arange(size, dtype=np.int64)
    exponent = places + to_point - (to_point > 0)
    nonzero = is_digit & (digit != 0)
    ok = np.ones(n, dtype=bool)
    ok[cell[nonzero & ((exponent < 0) | (exponent >= 20))]] = False  # below the unit, or ≥ 10^20 > 2^64
    top = np.zeros(n, dtype=np.uint64)  # the digit at 10^19 (2 × 10^19 already exceeds 2^64)
    at_top = nonzero & (exponent == 19)
    top[cell[at_top]] = digit[at_top]
    low = nonzero & (exponent >= 0) & (exponent < 19)
    terms = np.zeros(size + 1, dtype=np.uint64)  # one spare element: reduceat needs every start < len
    terms[:size][low] = digit[low].astype(np.uint64) * _POW[exponent[low]]
    rest = np.add.reduceat(terms, starts)  # each term below 10^19 and distinct powers: the sum < 10^19
    ok &= (top <= 1) & ((top == 0) | (rest < np.uint64(_TOP_ROOM)))
    return np.where(ok, rest + top * np.uint64(_TOP), np.uint64(0)), ok


def account_ids_ok(column: pa.Array) -> np.ndarray:
    """Whether each cell is an account id: 1 to 128 characters, no control character or comma, no whitespace
    at either end (the rule ``ACCOUNT_ID`` in custody/por/liabilityrows.py states as a regular expression)."""
    offsets, data = buffers(column)
    starts, lengths = offsets[:-1], np.diff(offsets)
    ok = lengths >= 1
    ok[_cells_of(np.flatnonzero(_ID_FORBIDDEN[data]), starts)] = False
    if not len(data):
        return ok
    if data.max() < 0x80:  # ASCII: a character is a byte, and the only space left is ' '
        ok &= lengths <= MAX_ID_CHARS
        first, last = data[np.minimum(starts, len(data) - 1)], data[np.maximum(starts + lengths - 1, 0)]
        ok &= (first != ord(" ")) & (last != ord(" "))
        return ok
    ok &= np.asarray(pc.utf8_length(column), dtype=np.int64) <= MAX_ID_CHARS
    space = pa.array(list(WHITESPACE), type=pa.large_string())
    for end in (pc.utf8_slice_codeunits(column, 0, 1), pc.utf8_slice_codeunits(column, -1)):
        ok &= ~np.asarray(pc.is_in(end, value_set=space), dtype=bool)
    return ok


def fingerprints(column: pa.Array) -> np.ndarray:
    """A 64-bit hash of each cell (of its first 512 bytes: a longer one is no account id). Equal cells have equal
    fingerprints; different fingerprints prove cells different, so duplicates are looked for among equal ones."""
    offsets, data = buffers(column)
    starts, lengths = offsets[:-1], np.diff(offsets)
    padded = np.zeros(len(data) + 8, dtype=np.uint8)
    padded[: len(data)] = data
    words = np.ndarray(shape=(len(data) + 1,), dtype="<u8", buffer=padded, strides=(1,))  # 8 bytes at each offset
    hashed = lengths.astype(np.uint64) * _MIX
    for k in range(0, min(int(lengths.max(initial=0)), _FINGERPRINT_BYTES), 8):
        # Only cells that reach byte k take this round, so a cell's fingerprint never depends on its neighbours.
        live = np.flatnonzero(lengths > k)
        step = hashed[live] ^ (words[starts[live] + k] & _LOW_BYTES[np.minimum(lengths[live] - k, 8)])
        step *= _MIX
        hashed[live] = step ^ (step >> np.uint64(29))
    return hashed


def first_duplicate(ids: pa.Array | pa.ChunkedArray, hashes: np.ndarray | None = None) -> tuple[int, int] | None:
    """The first row whose id an earlier row already has, and the first row that has it; None when all differ.

    ``hashes``, the ids' fingerprints in any order (sorted batch by batch, say), settle the common case in one
    sort: all different, so are the ids. Otherwise the rows whose fingerprint an earlier row shares are compared
    with those rows, in order."""
    if hashes is not None:
        ordered = np.sort(hashes, kind="stable")  # a merge of runs when they come sorted batch by batch
        if not np.any(ordered[1:] == ordered[:-1]):
            return None
    column = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    rowwise = fingerprints(column)
    order = np.argsort(rowwise, kind="stable")
    ranked = rowwise[order]
    for row in np.sort(order[np.flatnonzero(ranked[1:] == ranked[:-1]) + 1]):
        text = column[int(row)].as_py()
        for earlier in np.flatnonzero(rowwise[:row] == rowwise[row]):
            if column[int(earlier)].as_py() == text:
                return int(row), int(earlier)
    return None
