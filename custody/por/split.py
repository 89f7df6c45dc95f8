"""Leaf privacy (tree format 2; Chalkias, Lewi, Mohassel, Nikolaenko 2020; DAPOL+ 2021): each account's balances
are cut into 2 to 4 pieces, and the pieces are scattered across the tree among the padding.

In tree format 1 the sibling of a customer's leaf is another account's leaf, so every proof shows one other
(anonymous) account's exact balances. Here a leaf is a piece, and the rules make sure no sibling a proof shows
holds the whole of another account's balance of any asset (docs/proof-of-reserves.md, "Leaf privacy"):

- the number of pieces k ∈ {2, 3, 4} is drawn per account and per snapshot;
- for each asset, a balance b is cut into k shares, non-negative integers adding up to exactly b. A zero balance
  gives zero shares. Otherwise min(k, b) of the shares are at least 1 (pieces 0, 1, … first) and the rest 0:
  a share may be zero only when b < k. A share equal to b (the others zero) would put the whole balance in one
  leaf, which a sibling can show, so with b ≥ 2 at least pieces 0 and 1 each hold part of it; b = 1 cannot be
  cut, and its one unit looks like any other share of 1;
- piece 0 goes to a random place in the left half of the tree, piece 1 to one in the right half, pieces 2 and
  3 to random free places in either; padding fills the rest. Every sibling subtree in a proof lies within one
  half, so it never holds both piece 0 and piece 1 of any account: never the whole of a balance ≥ 2.

All randomness comes from ``csprng`` (AES-256-CTR keyed from os.urandom, the CTR_DRBG construction): the
places are a permutation drawn by sorting 64-bit random keys, vectorised with numpy.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from custody.por.digests import digest_rows
from custody.por.tree import (
    HASH,
    SPLIT_VERSION,
    Accounts,
    TreeError,
    height_for,
    padding_hashes,
    run_forked,
    shared_array,
)

MIN_PIECES, MAX_PIECES = 2, 4
MAX_HEIGHT = 32  # piece places are stored as u32 (the proofs file and the shards): 4 billion leaves
UNUSED = np.uint32(0xFFFFFFFF)
Random = Callable[[int], bytes]


def csprng(nbytes: int) -> bytes:
    """``nbytes`` random bytes: an AES-256-CTR keystream under a fresh key from os.urandom (gigabytes a second,
    where os.urandom alone gives a few hundred megabytes)."""
    encryptor = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
    return encryptor.update(bytes(nbytes)) + encryptor.finalize()


def _u64(rand: Random, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(rand(8 * int(np.prod(shape))), dtype=np.uint64).reshape(shape)


def draw_pieces(count: int, rand: Random) -> np.ndarray:
    """How many pieces each account is cut into: 2, 3 or 4 (uint8)."""
    return (MIN_PIECES + _u64(rand, (count,)) % np.uint64(MAX_PIECES - MIN_PIECES + 1)).astype(np.uint8)


def draw_shares(balances: np.ndarray, pieces: np.ndarray, rand: Random) -> np.ndarray:
    """(n, MAX_PIECES, assets) uint64: share j of each balance; shares j ≥ pieces are zero.

    With nz = min(k, b) non-zero shares, r = b − nz units are spread by nz − 1 random cut points in [0, r]
    and each of the nz shares gets one more: shares ≥ 1 that add up to b. Cut points of unused shares are put
    at r, so those shares are 0. The three cut points are sorted by a min/max network (np.sort along an axis
    of 3 is a slow loop)."""
    n, assets = balances.shape
    nz = np.minimum(pieces.astype(np.uint64)[:, None], balances)
    r = balances - nz
    cuts = _u64(rand, (MAX_PIECES - 1, n, assets)) % (r + np.uint64(1))
    for j in range(MAX_PIECES - 1):
        np.copyto(cuts[j], r, where=nz <= j + 1)
    c0, c1, c2 = cuts
    lo, hi = np.minimum(c0, c1), np.maximum(c0, c1)
    c0, c1, c2 = np.minimum(lo, c2), np.minimum(hi, np.maximum(lo, c2)), np.maximum(hi, c2)
    shares = np.empty((n, MAX_PIECES, assets), dtype=np.uint64)
    shares[:, 0], shares[:, 1], shares[:, 2], shares[:, 3] = c0, c1 - c0, c2 - c1, r - c2
    shares += np.arange(MAX_PIECES, dtype=np.uint64)[None, :, None] < nz[:, None, :]
    return shares


def permutation(count: int, rand: Random) -> np.ndarray:
    """A random order of 0 … count-1 (int64): the indices sorted by random keys in their high bits (ties,
    one in 2^(64 - bits) per pair, fall back to index order). In place, to keep 10 million accounts' worth
    of temporaries out of memory."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    bits = np.uint64(height_for(count))
    keys = _u64(rand, (count,)).copy()
    keys >>= bits
    keys <<= bits
    keys |= np.arange(count, dtype=np.uint64)
    keys.sort()
    keys &= (np.uint64(1) << bits) - np.uint64(1)
    return keys.view(np.int64)


def place(pieces: np.ndarray, height: int, *, workers: int = 1) -> np.ndarray:
    """(n, MAX_PIECES) uint32: the leaf index of each piece, UNUSED past an account's pieces. Piece 0 in the
    left half, piece 1 in the right half, the others anywhere still free. The three random orders (of each half,
    and of the free places) are drawn at once, in ``workers`` forked processes."""
    n, half = len(pieces), 1 << (height - 1)
    if n > half or int(pieces.sum(dtype=np.int64)) > 2 * half:
        raise TreeError(f"{n} accounts in {int(pieces.sum())} pieces do not fit a tree of height {height}")
    left, right, order = (shared_array((size,), np.int64) for size in (half, half, 2 * (half - n)))
    run_forked([functools.partial(_permute, out) for out in (left, right, order)], workers)
    places = np.full((n, MAX_PIECES), UNUSED, dtype=np.uint32)
    places[:, 0], places[:, 1] = left[:n], half + right[:n]
    free = np.concatenate([left[n:], half + right[n:]])[order]
    at = 0
    for j in range(2, MAX_PIECES):
        has = pieces > j
        count = int(has.sum())
        places[has, j] = free[at : at + count]
        at += count
    return places


def _permute(out: np.ndarray) -> None:
    out[:] = permutation(len(out), csprng)


@dataclass
class SplitLeaves:
    """The leaves of a format 2 tree, in tree order (a ``LeafSource`` for ``tree.build``)."""

    snapshot_id: bytes
    account_hashes: np.ndarray  # (n, 32) uint8, file order
    pieces: np.ndarray  # (n,) uint8
    places: np.ndarray  # (n, MAX_PIECES) uint32
    owner: np.ndarray  # (2^height,) int32: the account of each leaf, -1 for padding
    piece: np.ndarray  # (2^height,) uint8: which of its account's pieces
    shares: np.ndarray  # (2^height, assets) uint64
    height: int

    @property
    def leaves(self) -> int:
        return int(self.pieces.sum(dtype=np.int64))

    def leaf_hashes(self, start: int, stop: int) -> np.ndarray:
        owner = self.owner[start:stop]
        out = np.empty((stop - start, HASH), dtype=np.uint8)
        real = owner >= 0
        n, assets = int(real.sum()), self.shares.shape[1]
        if n:
            who = owner[real]
            rows = np.empty((n, 4 + 2 * HASH + 8 * assets), dtype=np.uint8)
            rows[:, 0], rows[:, 1] = 0, SPLIT_VERSION
            rows[:, 2:34] = np.frombuffer(self.snapshot_id, dtype=np.uint8)
            rows[:, 34:66] = self.account_hashes[who]
            rows[:, 66] = self.piece[start:stop][real]
            rows[:, 67] = self.pieces[who]
            rows[:, 68:] = self.shares[start:stop][real].astype(">u8").view(np.uint8).reshape(n, 8 * assets)
            out[real] = digest_rows(rows)
        if n < stop - start:
            out[~real] = padding_hashes(self.snapshot_id, start + np.flatnonzero(~real))
        return out

    def leaf_sums(self, start: int, stop: int) -> np.ndarray:
        return self.shares[start:stop]


def split(acc: Accounts, account_hashes: np.ndarray, *, workers: int = 1) -> SplitLeaves:
    """Cut every account into pieces, place them, and lay the leaves out in tree order, in ``workers`` forked
    processes. ``account_hashes`` (n, 32) is only kept for the leaves, not read here: it may still be being
    filled (``tree.Hashing``)."""
    pieces = draw_pieces(acc.count, csprng)
    height = height_for(int(pieces.sum(dtype=np.int64)))
    if height > MAX_HEIGHT:
        raise TreeError(f"{acc.count} accounts need a tree of height {height}; at most {MAX_HEIGHT} is supported")
    places = place(pieces, height, workers=workers)
    return arrange(acc, account_hashes, pieces, places, height, workers=workers)


def arrange(
    acc: Accounts,
    account_hashes: np.ndarray,
    pieces: np.ndarray,
    places: np.ndarray,
    height: int,
    *,
    workers: int = 1,
    chunk: int = 1 << 18,
) -> SplitLeaves:
    """The leaves in tree order, given where each piece goes: ``chunk`` accounts at a time (so the random cut
    points of 10 million accounts never sit in memory at once), in ``workers`` forked processes writing into
    the shared leaf arrays (each piece has its own place, so no two write the same leaf)."""
    n, assets = acc.balances.shape
    size = 1 << height
    owner, piece = shared_array((size,), np.int32), shared_array((size,), np.uint8)
    shares = shared_array((size, assets), np.uint64)
    owner.fill(-1)

    def cut(start: int, stop: int) -> None:
        drawn = draw_shares(acc.balances[start:stop], pieces[start:stop], csprng)
        for j in range(MAX_PIECES):
            has = pieces[start:stop] > j
            at = places[start:stop, j][has]
            owner[at] = np.arange(start, stop, dtype=np.int32)[has]
            piece[at] = j
            shares[at] = drawn[has, j]

    run_forked([functools.partial(cut, a, min(n, a + chunk)) for a in range(0, n, chunk)], workers)
    return SplitLeaves(acc.snapshot_id, account_hashes.reshape(n, HASH), pieces, places, owner, piece, shares, height)
