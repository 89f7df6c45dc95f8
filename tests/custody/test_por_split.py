"""Leaf privacy (tree format 2): shares, places, the builder against the plain rules, proofs cut from the indexed
file by the lookup index, and every tampering of a split proof the verifier must refuse."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from custody.errors import ProofInvalid
from custody.por.proofs import AccountProof, PieceProof, ProofsFile, SplitProof, extract, parse_proof
from custody.por.split import (
    MAX_PIECES,
    UNUSED,
    SplitLeaves,
    arrange,
    csprng,
    draw_pieces,
    draw_shares,
    place,
    split,
)
from custody.por.tree import Accounts, Sibling, build, hash_accounts, node_hash, padding_hash, piece_hash
from custody.por.verify import check_proof
from signer.porstatement import Statement
from tests.fuzzing import FUZZ, mutated, only_our_errors

ASSETS = ["ETH", "USDC", "BTC"]


def accounts(n: int, assets: int = 3, seed: int = 1) -> Accounts:
    rng = np.random.default_rng(seed)
    ids = [f"user-{i:05d}" for i in range(n)]
    offsets = np.cumsum([0] + [len(i) for i in ids]).astype(np.int64)
    balances = rng.integers(0, 2**64, size=(n, assets), dtype=np.uint64, endpoint=False)
    balances[0] = 2**64 - 1
    balances[1 % n] = [0, 1, 2][:assets]  # zero, the one balance that cannot be cut, and the smallest that can
    return Accounts(os.urandom(32), "".join(ids).encode(), offsets, os.urandom(32 * n), balances)


def snapshot(acc: Accounts, path: Path, workers: int = 1) -> tuple[SplitLeaves, bytes, tuple[int, ...]]:
    hashes, keys = hash_accounts(acc, workers=workers, chunk=7)
    leaves = split(acc, hashes, workers=workers)
    store = ProofsFile(path, acc, ASSETS[: acc.balances.shape[1]], leaves.height, keys, leaves)
    root, totals = build(leaves, leaves.height, store, chunk_levels=2, workers=workers)
    store.close()
    return leaves, root, totals


def statement(acc: Accounts, leaves: SplitLeaves, root: bytes, totals: tuple[int, ...]) -> Statement:
    """Only what ``check_proof`` reads; the statement's own checks are tests/signer's."""
    return Statement(
        {
            "snapshot_id": acc.snapshot_id.hex(),
            "assets": [{"symbol": a, "decimals": 0} for a in ASSETS],
            "liabilities": {
                "root": root.hex(),
                "height": leaves.height,
                "accounts": acc.count,
                "leaves": leaves.leaves,
                "totals": {a: str(t) for a, t in zip(ASSETS, totals, strict=True)},
            },
        }
    )


def test_shares_add_up_exactly_and_no_share_of_two_or_more_is_whole():
    balances = np.array([[0, 1, 2, 3, 4, 5, 2**64 - 1, 10**18]] * 3000, dtype=np.uint64)
    pieces = draw_pieces(len(balances), csprng)
    assert set(np.unique(pieces).tolist()) == {2, 3, 4}
    shares = draw_shares(balances, pieces, csprng)
    assert (shares.astype(object).sum(axis=1) == balances.astype(object)).all()
    for i in range(len(balances)):
        k = int(pieces[i])
        assert not shares[i, k:].any()  # an account has only k pieces
        for a, b in enumerate(balances[i].tolist()):
            column = shares[i, :, a].tolist()
            if b == 0:
                assert column == [0] * MAX_PIECES  # every piece of a zero balance is zero
            elif b >= 2:
                assert column[0] > 0 and column[1] > 0 and max(column) < b
                assert sum(1 for x in column if x) == min(k, b)  # a share is zero only when b < k


@pytest.mark.parametrize("workers", [1, 2])
def test_places_keep_piece_0_left_piece_1_right_and_never_share_a_leaf(workers: int) -> None:
    pieces = draw_pieces(300, csprng)
    height = max(1, (int(pieces.sum()) - 1).bit_length())
    places = place(pieces, height, workers=workers)
    half = 1 << (height - 1)
    assert (places[:, 0] < half).all() and (places[:, 1] >= half).all() and (places[:, 1] < 2 * half).all()
    assert (places[:, 0] != places[:, 1] - half).any()  # the halves' orders drawn apart, not from one state
    used = places[places != UNUSED]
    assert len(used) == int(pieces.sum()) == len(set(used.tolist()))
    for i, k in enumerate(pieces.tolist()):
        assert (places[i, k:] == UNUSED).all() and (places[i, :k] != UNUSED).all()


@pytest.mark.parametrize("workers", [1, 2])
def test_arranged_leaves_hold_every_piece_where_it_was_placed(workers: int) -> None:
    """Arranged 7 accounts at a time, in forked workers too: each piece at its place, the padding empty."""
    acc = accounts(60)
    pieces = draw_pieces(acc.count, csprng)
    height = max(1, (int(pieces.sum()) - 1).bit_length())
    places = place(pieces, height)
    leaves = arrange(acc, np.zeros((acc.count, 32), np.uint8), pieces, places, height, workers=workers, chunk=7)
    got = np.zeros(acc.balances.shape, dtype=object)
    for i, k in enumerate(pieces.tolist()):
        for j in range(k):
            at = int(places[i, j])
            assert (int(leaves.owner[at]), int(leaves.piece[at])) == (i, j)
            got[i] += leaves.shares[at].astype(object)
    assert (got == acc.balances.astype(object)).all()
    padding = leaves.owner < 0
    assert int((~padding).sum()) == int(pieces.sum()) and not leaves.shares[padding].any()


def reference(leaves: SplitLeaves) -> tuple[bytes, tuple[int, ...]]:
    """The format 2 tree by the plain rules, one hash at a time."""
    level = []
    for i in range(1 << leaves.height):
        owner = int(leaves.owner[i])
        shares = tuple(int(x) for x in leaves.shares[i])
        if owner < 0:
            assert not any(shares)
            level.append((padding_hash(leaves.snapshot_id, i), shares))
        else:
            acct = leaves.account_hashes[owner].tobytes()
            k = int(leaves.pieces[owner])
            level.append((piece_hash(leaves.snapshot_id, acct, int(leaves.piece[i]), k, shares), shares))
    while len(level) > 1:
        level = [
            (node_hash(a[0], b[0], a[1], b[1]), tuple(x + y for x, y in zip(a[1], b[1], strict=True)))
            for a, b in zip(level[0::2], level[1::2], strict=True)
        ]
    return level[0]


@pytest.mark.parametrize(("n", "workers"), [(1, 1), (2, 1), (9, 2), (40, 2)])
def test_the_split_builder_matches_the_plain_rules(tmp_path, n, workers):
    acc = accounts(n)
    leaves, root, totals = snapshot(acc, tmp_path / "proofs.bin", workers)
    assert (root, totals) == reference(leaves)
    assert totals == tuple(int(s) for s in acc.balances.astype(object).sum(axis=0))
    assert 2 * n <= leaves.leaves <= 4 * n and (1 << (leaves.height - 1)) < max(leaves.leaves, 2)


def test_every_proof_cut_by_the_index_verifies(tmp_path):
    acc = accounts(33)
    leaves, root, totals = snapshot(acc, tmp_path / "proofs.bin", workers=2)
    st = statement(acc, leaves, root, totals)
    for i in range(acc.count):
        proof, assets = extract(tmp_path / "proofs.bin", acc.account_id(i))
        assert isinstance(proof, SplitProof) and assets == ASSETS
        assert len(proof.pieces) == int(leaves.pieces[i])
        assert proof.balances == tuple(int(b) for b in acc.balances[i])
        raw = proof.to_bytes(ASSETS)
        assert parse_proof(raw, ASSETS) == proof
        assert f"in {len(proof.pieces)} pieces adding up to it" in check_proof(st, raw)
    for missing in ("user-0002", "user-000020", "nobody"):  # a prefix or extension of a real id is not an id
        with pytest.raises(ProofInvalid, match="no account"):
            extract(tmp_path / "proofs.bin", missing)


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    acc = accounts(12)
    # every account has a balance of several units in each asset, and room below 2^64 to be raised by a tampering
    acc.balances[:] = np.minimum(np.maximum(acc.balances, 10), 2**63)
    path = tmp_path_factory.mktemp("split") / "proofs.bin"
    leaves, root, totals = snapshot(acc, path)
    st = statement(acc, leaves, root, totals)
    i = int(np.flatnonzero(leaves.pieces >= 3)[0])  # 3 or 4 pieces, so that pieces can be moved and dropped
    proof, _ = extract(path, acc.account_id(i))
    assert isinstance(proof, SplitProof)
    return st, proof


def _piece(proof: SplitProof, j: int, **change: object) -> SplitProof:
    pieces = list(proof.pieces)
    pieces[j] = dataclasses.replace(pieces[j], **change)  # type: ignore[arg-type]
    return dataclasses.replace(proof, pieces=tuple(pieces))


def _move_one_unit(proof: SplitProof) -> SplitProof:
    """One unit from piece 0 to piece 2: the shares still add up to the balances shown."""
    a, c = proof.pieces[0], proof.pieces[2]
    moved = _piece(proof, 0, shares=(a.shares[0] - 1, *a.shares[1:]))
    return _piece(moved, 2, shares=(c.shares[0] + 1, *c.shares[1:]))


def _drop_last(proof: SplitProof) -> SplitProof:
    """k - 1 pieces whose shares still add up to the balances shown."""
    first, last = proof.pieces[0], proof.pieces[-1]
    merged = dataclasses.replace(first, shares=tuple(x + y for x, y in zip(first.shares, last.shares, strict=True)))
    return dataclasses.replace(proof, pieces=(merged, *proof.pieces[1:-1]))


TAMPERING = {
    "a balance shown higher than the shares": (
        lambda p: dataclasses.replace(p, balances=(p.balances[0] + 1, *p.balances[1:])),
        "add up to",
    ),
    "a share raised with the balance shown": (
        lambda p: dataclasses.replace(
            _piece(p, 1, shares=(p.pieces[1].shares[0] + 1, *p.pieces[1].shares[1:])),
            balances=(p.balances[0] + 1, *p.balances[1:]),
        ),
        "does not lead to the statement's root",
    ),
    "a unit moved between pieces": (_move_one_unit, "does not lead to the statement's root"),
    "the last piece left out, its shares moved to piece 0": (_drop_last, "does not lead to the statement's root"),
    "pieces 0 and 1 swapped": (
        lambda p: dataclasses.replace(p, pieces=(p.pieces[1], p.pieces[0], *p.pieces[2:])),
        "piece 0 must be in the left half",
    ),
    "pieces 1 and 2 swapped": (
        lambda p: dataclasses.replace(p, pieces=(p.pieces[0], p.pieces[2], p.pieces[1], *p.pieces[3:])),
        "piece 0 must be in the left half|does not lead",
    ),
    "a piece shown twice": (
        lambda p: dataclasses.replace(p, pieces=(*p.pieces[:2], p.pieces[1], *p.pieces[3:])),
        "same place",
    ),
    "one piece only": (
        lambda p: dataclasses.replace(p, pieces=p.pieces[:1], balances=p.pieces[0].shares),
        "an account has 2 to 4",
    ),
    "another salt": (lambda p: dataclasses.replace(p, salt=bytes(32)), "does not lead to the statement's root"),
    "another account id": (
        lambda p: dataclasses.replace(p, account_id=p.account_id + "x"),
        "does not lead to the statement's root",
    ),
    "a level missing": (lambda p: _piece(p, 1, path=p.pieces[1].path[:-1]), "piece 1 has"),
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_a_tampered_split_proof_is_refused(honest, name):
    st, proof = honest
    assert "included with" in check_proof(st, proof.to_bytes(ASSETS))
    change, message = TAMPERING[name]
    with pytest.raises(ProofInvalid, match=message):
        check_proof(st, change(proof).to_bytes(ASSETS))


def test_a_format_1_proof_is_refused_against_a_split_statement(honest):
    st, proof = honest
    old = AccountProof(proof.snapshot_id, proof.account_id, 0, proof.salt, proof.balances, proof.pieces[0].path)
    with pytest.raises(ProofInvalid, match="a format 1 proof cannot be checked against a format 3 statement"):
        check_proof(st, old.to_bytes(ASSETS))


def test_a_lookup_never_reads_the_ids(tmp_path):
    """The index and the account hashes find and confirm an account: with the ids section wiped, every proof
    is still cut, and an id that is not there is still refused."""
    acc = accounts(40)
    snapshot(acc, tmp_path / "proofs.bin")
    with open(tmp_path / "proofs.bin", "r+b") as f:
        header = json.loads(f.read(4096))
        at, length = header["sections"]["ids"]
        f.seek(at)
        f.write(b"\xff" * length)
    for i in range(acc.count):
        proof, _ = extract(tmp_path / "proofs.bin", acc.account_id(i))
        assert proof.balances == tuple(int(b) for b in acc.balances[i])
    with pytest.raises(ProofInvalid, match="no account"):
        extract(tmp_path / "proofs.bin", "user-00040")


SPLIT_PROOF = SplitProof(
    bytes(32),
    "alice",
    bytes(32),
    (5, 6, 0),
    (
        PieceProof(1, (2, 3, 0), (Sibling(bytes(32), (1, 2, 0)),)),
        PieceProof(2, (3, 3, 0), (Sibling(b"\x01" * 32, (0, 0, 0)),)),
    ),
).to_bytes(ASSETS)


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(SPLIT_PROOF)))
def test_the_split_proof_reader_answers_or_refuses_with_our_errors(raw):
    only_our_errors(lambda value: parse_proof(value, ASSETS), raw)
