"""The privacy property of the split tree, on small trees: no customer's proof shows any other account's complete
non-zero balance of any asset, and a customer's pieces add up to exactly their balance.

What a proof shows about others, per asset: each sibling's sum, and (since the customer knows their own pieces
and where they are) each sibling's sum minus the customer's own shares inside that sibling. The check fails
when one of those figures equals another account's balance. It is a real check: the same accounts in a tree of
format 1 fail it (the sibling of a leaf is another account's leaf), and so does a split tree whose pieces sit
side by side instead of apart (a sibling two levels up is then a whole account).

Balances are large random numbers, or zero (zero pieces are what could make a subtree hold one account and
nothing else), never 1: a balance of one unit cannot be cut, and its single unit is then a share like any other.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from custody.por.proofs import AccountProof, ProofsFile, SplitProof, extract
from custody.por.split import MAX_PIECES, UNUSED, arrange, csprng, draw_pieces, permutation, split
from custody.por.tree import Accounts, Sibling, build, hash_accounts, height_for

ASSETS = ["ETH", "USDC", "BTC"]
Shown = list[tuple[int, ...]]


def accounts(n: int, seed: int) -> Accounts:
    rng = np.random.default_rng(seed)
    ids = [f"customer-{i}" for i in range(n)]
    offsets = np.cumsum([0] + [len(i) for i in ids]).astype(np.int64)
    balances = rng.integers(2**40, 2**41, size=(n, len(ASSETS)), dtype=np.uint64)
    balances[rng.random(balances.shape) < 0.35] = 0
    balances[0] = [5, 0, 2**40]  # a small balance too: 5 units in 2 to 4 shares
    return Accounts(os.urandom(32), "".join(ids).encode(), offsets, os.urandom(32 * n), balances)


def shown_to(proof: AccountProof | SplitProof) -> Shown:
    """Every per-asset figure about others that this proof shows or lets its customer work out."""
    if isinstance(proof, AccountProof):
        own = [(proof.index, proof.balances, proof.path)]
    else:
        own = [(p.index, p.shares, p.path) for p in proof.pieces]
    figures: Shown = []
    for index, _, path in own:
        for level, sibling in enumerate(path):
            figures.append(sibling.sums)
            node = (index >> level) ^ 1
            inside = [shares for place, shares, _ in own if place >> level == node]
            figures.append(tuple(s - sum(x[a] for x in inside) for a, s in enumerate(sibling.sums)))
    return figures


def leaks(acc: Accounts, path: Path) -> list[str]:
    """Each time a proof from ``path`` shows another account's complete non-zero balance of an asset."""
    found = []
    for c in range(acc.count):
        proof, _ = extract(path, acc.account_id(c))
        if isinstance(proof, SplitProof):  # the customer's own pieces add up to exactly their balance
            assert proof.balances == tuple(int(b) for b in acc.balances[c])
            added = [sum(p.shares[a] for p in proof.pieces) for a in range(len(ASSETS))]
            assert added == [int(b) for b in acc.balances[c]]
        figures = shown_to(proof)
        for other in range(acc.count):
            for a, balance in enumerate(acc.balances[other].tolist()):
                if other != c and balance and any(f[a] == balance for f in figures):
                    found.append(f"{acc.account_id(c)}'s proof shows {acc.account_id(other)}'s whole {ASSETS[a]}")
    return found


def split_snapshot(acc: Accounts, path: Path, arranged: tuple[np.ndarray, np.ndarray, int] | None = None) -> None:
    """The real split, or the given (pieces, places, height)."""
    hashes, keys = hash_accounts(acc)
    leaves = split(acc, hashes) if arranged is None else arrange(acc, hashes, *arranged)
    store = ProofsFile(path, acc, ASSETS, leaves.height, keys, leaves)
    build(leaves, leaves.height, store)
    store.close()


def test_no_proof_shows_another_accounts_whole_balance(tmp_path):
    for draw in range(30):  # fresh pieces, shares and places each time: the property must hold for every draw
        acc = accounts(12, seed=draw)
        split_snapshot(acc, tmp_path / f"{draw}.bin")
        assert leaks(acc, tmp_path / f"{draw}.bin") == []


def test_the_check_catches_a_tree_of_format_1(tmp_path):
    acc = accounts(12, seed=1)
    height = height_for(acc.count)
    store = ProofsFile(tmp_path / "v1.bin", acc, ASSETS, height, hash_accounts(acc)[1])
    build(acc, height, store)
    store.close()
    found = leaks(acc, tmp_path / "v1.bin")
    assert "customer-1's proof shows customer-0's whole USDC" not in found  # customer-0 holds no USDC
    assert "customer-1's proof shows customer-0's whole ETH" in found  # leaves 0 and 1 are siblings


def test_the_check_catches_pieces_placed_side_by_side(tmp_path):
    """Split, but each account's pieces in its own aligned block of 4 leaves: a level-2 sibling of everyone
    else's pieces is then one whole account."""
    acc = accounts(12, seed=2)
    pieces = draw_pieces(acc.count, csprng)
    places = np.full((acc.count, MAX_PIECES), UNUSED, dtype=np.uint32)
    for i, k in enumerate(pieces.tolist()):
        places[i, :k] = np.arange(4 * i, 4 * i + k)
    split_snapshot(acc, tmp_path / "adjacent.bin", (pieces, places, 6))  # 48 leaves in use of 64
    assert leaks(acc, tmp_path / "adjacent.bin") != []


def test_sibling_figures_are_what_the_proof_carries():
    proof = SplitProof(b"", "x", b"", (7,), ())
    assert shown_to(proof) == []
    one = AccountProof(b"", "x", 1, b"", (7,), (Sibling(b"", (3,)),))
    assert shown_to(one) == [(3,), (3,)]


def test_the_check_catches_pieces_scattered_without_the_halves_rule(tmp_path):
    """Scattered at random, but with no rule keeping piece 0 and piece 1 apart: now and then all of an account's
    non-zero pieces fall under one sibling (with zero pieces of others beside them). Over 30 draws this has
    always shown dozens of whole balances; the halves rule is what makes it impossible."""
    found = 0
    for draw in range(30):
        acc = accounts(12, seed=draw)
        pieces = draw_pieces(acc.count, csprng)
        height = height_for(int(pieces.sum()))
        order = permutation(1 << height, csprng)
        places = np.full((acc.count, MAX_PIECES), UNUSED, dtype=np.uint32)
        starts = [0, *np.cumsum(pieces, dtype=np.int64).tolist()]
        for i, k in enumerate(pieces.tolist()):
            places[i, :k] = order[starts[i] : starts[i] + k]
        split_snapshot(acc, tmp_path / f"{draw}.bin", (pieces, places, height))
        found += len(leaks(acc, tmp_path / f"{draw}.bin"))
    assert found > 0
