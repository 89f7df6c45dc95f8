"""Batch digests (custody.por.digests): hashlib's results byte for byte, and offsets that would make the native loop
read outside the data refused before it runs."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custody.por.digests import digest_joined, digest_rows

ALGORITHMS = ("sha256", "sha512")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(max_size=300), max_size=20),
    st.integers(0, 70),
    st.sampled_from(ALGORITHMS),
    st.binary(max_size=50),
)
def test_every_message_is_hashlibs_digest(messages: list[bytes], width: int, algorithm: str, before: bytes) -> None:
    """Messages of any length (empty ones, several blocks, block edges) after some unused bytes, each with its own
    suffix: what hashlib gives for message ‖ suffix."""
    data = before + b"".join(messages)
    offsets = np.cumsum([len(before)] + [len(m) for m in messages]).astype(np.int64)
    rng = np.random.default_rng(len(data))
    suffix = rng.integers(0, 256, size=(len(messages), width), dtype=np.uint8)
    got = digest_joined(data, offsets, suffix, algorithm)
    want = [hashlib.new(algorithm, m + suffix[i].tobytes()).digest() for i, m in enumerate(messages)]
    assert [row.tobytes() for row in got] == want
    assert [row.tobytes() for row in digest_joined(data, offsets, None, algorithm)] == [
        hashlib.new(algorithm, m).digest() for m in messages
    ]


@pytest.mark.parametrize("width", [0, 1, 55, 56, 64, 100, 193])
def test_rows_of_any_width(width: int) -> None:
    """Strided views are copied, not read past: the rows of a slice are the slice's rows."""
    big = np.random.default_rng(width).integers(0, 256, size=(40, width + 7), dtype=np.uint8)
    rows = big[3:, 2 : 2 + width]
    got = digest_rows(rows)
    assert got.shape == (37, 32)
    assert [r.tobytes() for r in got] == [hashlib.sha256(r.tobytes()).digest() for r in rows]


def test_no_rows() -> None:
    assert digest_rows(np.zeros((0, 10), dtype=np.uint8)).shape == (0, 32)
    assert digest_joined(b"", np.zeros(1, dtype=np.int64), algorithm="sha512").shape == (0, 64)


@pytest.mark.parametrize(
    ("offsets", "suffix", "refusal"),
    [
        ([0, 5, 11], None, "at most 10, the data's length"),  # would read one byte past the data
        ([-1, 5], None, "must rise from 0 or more"),
        ([0, 6, 5, 10], None, "must rise"),  # a negative length
        (np.array([], dtype=np.int64), None, "at least one"),
        ([0, 5, 10], np.zeros((3, 4), dtype=np.uint8), "2 rows expected, not shape (3, 4)"),
        ([0, 5, 10], np.zeros(8, dtype=np.uint8), "2 rows expected, not shape (8,)"),
        ([0, 2**63 - 1, -2, 5], None, "must rise"),  # differences that wrap around int64 to look rising
        (np.array([0, 2**63 - 1, 2**64 - 2, 5], dtype=np.uint64), None, "integers up to 2^63 expected, not uint64"),
        (np.array([0.0, 2.9, 5.5]), None, "integers up to 2^63 expected, not float64"),
        ([0, 5, 10], np.array([[300], [511]]), "suffix: a uint8 array expected, not int64"),
        ([[0, 5, 10]], None, "offsets: a list of at least one"),
    ],
)
def test_what_the_loop_would_misread_is_refused(offsets: object, suffix: np.ndarray | None, refusal: str) -> None:
    """Offsets outside the data, or that only look rising, or of another type, and suffixes of anything but bytes:
    refused before the native loop runs, not read out of bounds or silently converted."""
    with pytest.raises(ValueError, match=re.escape(refusal)):
        digest_joined(b"0123456789", np.asarray(offsets), suffix)


def test_data_and_rows_of_anything_but_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="rows: a uint8 array expected, not int64"):
        digest_rows(np.arange(6, dtype=np.int64).reshape(2, 3))
    with pytest.raises(ValueError, match="data: a uint8 array expected, not str"):
        digest_joined("ab", np.array([0, 2]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rows: a 2-D array expected"):
        digest_rows(np.zeros(5, dtype=np.uint8))


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="one of sha256, sha512, not 'md5'"):
        digest_rows(np.zeros((1, 1), dtype=np.uint8), "md5")
