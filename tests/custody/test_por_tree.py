"""The liabilities tree: the vectorised builder against the plain rules, proofs cut from the indexed file, and
every tampering a dishonest exchange could try on a proof."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest

from custody.errors import ProofInvalid, WorkerDied
from custody.por import proofs
from custody.por.proofs import AccountProof, ProofsFile, SplitProof, extract, parse_proof
from custody.por.tree import (
    Accounts,
    Hashing,
    Sibling,
    TreeError,
    account_hash,
    build,
    free_shared,
    hash_accounts,
    height_for,
    leaf_hash,
    node_hash,
    padding_hash,
    run_forked,
    shared_array,
    sums_width,
    walk,
)
from custody.por.verify import check_proof
from signer.porstatement import Statement

ASSETS = ["ETH", "USDC", "BTC"]


def accounts(n: int, assets: int = 3, seed: int = 1) -> Accounts:
    rng = np.random.default_rng(seed)
    ids = [f"user-{i:05d}" for i in range(n)]
    blob = "".join(ids).encode()
    offsets = np.cumsum([0] + [len(i) for i in ids]).astype(np.int64)
    balances = rng.integers(0, 2**64, size=(n, assets), dtype=np.uint64, endpoint=False)
    balances[0] = 2**64 - 1  # the largest balance there is, to exercise the carries
    return Accounts(os.urandom(32), blob, offsets, os.urandom(32 * n), balances)


def reference(acc: Accounts, height: int) -> tuple[bytes, tuple[int, ...]]:
    """The tree by the plain rules, one hash at a time."""
    level = []
    for i in range(2**height):
        if i < acc.count:
            bal = tuple(int(b) for b in acc.balances[i])
            h = leaf_hash(acc.snapshot_id, account_hash(acc.account_id(i), acc.salts[32 * i : 32 * i + 32]), bal)
        else:
            bal, h = (0,) * acc.balances.shape[1], padding_hash(acc.snapshot_id, i)
        level.append((h, bal))
    while len(level) > 1:
        level = [
            (node_hash(a[0], b[0], a[1], b[1]), tuple(x + y for x, y in zip(a[1], b[1], strict=True)))
            for a, b in zip(level[0::2], level[1::2], strict=True)
        ]
    return level[0]


class Memory:
    sums_width = 16

    def __init__(self) -> None:
        self.levels: dict[int, dict[int, bytes]] = {}

    def write_level(self, level: int, start: int, records: bytes) -> None:
        self.levels.setdefault(level, {})[start] = records


@pytest.mark.parametrize(("n", "chunk_levels", "workers"), [(1, 16, 1), (5, 1, 1), (37, 2, 2), (64, 3, 1)])
def test_builder_matches_the_plain_rules(n, chunk_levels, workers):
    acc = accounts(n)
    height = height_for(n)
    assert 2 ** (height - 1) < max(n, 2) <= 2**height
    root = build(acc, height, Memory(), chunk_levels=chunk_levels, workers=workers)
    assert root == reference(acc, height)
    assert root[1] == tuple(int(s) for s in acc.balances.astype(object).sum(axis=0))


@pytest.mark.parametrize("width", [16, 8])
def test_every_proof_from_the_indexed_file_walks_to_the_root(tmp_path, width):
    acc = accounts(21)
    if width == 8:
        acc.balances >>= np.uint64(8)
    assert sums_width(acc.balances) == width
    height = height_for(21)
    store = ProofsFile(tmp_path / "proofs.bin", acc, ASSETS, height, hash_accounts(acc)[1], sums_width=width)
    root, totals = build(acc, height, store, chunk_levels=2, workers=2)
    store.close()
    for i in range(acc.count):
        proof, assets = extract(tmp_path / "proofs.bin", acc.account_id(i))
        assert assets == ASSETS and proof.index == i and len(proof.path) == height
        assert proof.balances == tuple(int(b) for b in acc.balances[i])
        assert parse_proof(proof.to_bytes(ASSETS), ASSETS) == proof
        leaf = leaf_hash(acc.snapshot_id, account_hash(proof.account_id, proof.salt), proof.balances)
        assert walk(leaf, proof.balances, proof.index, proof.path) == (root, totals)
    with pytest.raises(ProofInvalid, match="no account"):
        extract(tmp_path / "proofs.bin", "user-0002")  # a prefix of real ids is not an id


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    acc = accounts(8)
    path = tmp_path_factory.mktemp("por") / "proofs.bin"
    store = ProofsFile(path, acc, ASSETS, 3, hash_accounts(acc)[1])
    root = build(acc, 3, store)
    store.close()
    proof, _ = extract(path, acc.account_id(5))
    return acc, root, proof


def _root_of(acc: Accounts, proof) -> tuple[bytes, tuple[int, ...]]:
    leaf = leaf_hash(acc.snapshot_id, account_hash(proof.account_id, proof.salt), proof.balances)
    return walk(leaf, proof.balances, proof.index, proof.path)


def _lower_sibling_keep_parent(proof):
    """Move 1 unit from the sibling's sum onto our side of the path: every parent total stays the same."""
    path = list(proof.path)
    s = path[0]
    path[0] = Sibling(s.hash, (s.sums[0] - 1, *s.sums[1:]))
    return dataclasses.replace(proof, path=tuple(path), balances=(proof.balances[0] + 1, *proof.balances[1:]))


TAMPERING = {
    "a changed balance": lambda p: dataclasses.replace(p, balances=(p.balances[0] - 1, *p.balances[1:])),
    "swapped sibling sums": lambda p: dataclasses.replace(
        p, path=(Sibling(p.path[0].hash, (p.path[0].sums[1], p.path[0].sums[0], p.path[0].sums[2])), *p.path[1:])
    ),
    "a sibling sum lowered, the parent total kept": _lower_sibling_keep_parent,
    "another account's index": lambda p: dataclasses.replace(p, index=p.index ^ 1),
    "another salt": lambda p: dataclasses.replace(p, salt=bytes(32)),
    "another account id": lambda p: dataclasses.replace(p, account_id=p.account_id + "x"),
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_a_tampered_proof_does_not_reach_the_root(honest, name):
    acc, root, proof = honest
    assert _root_of(acc, proof) == root
    assert _root_of(acc, TAMPERING[name](proof)) != root


def test_a_proof_for_another_snapshot_does_not_reach_the_root(honest):
    acc, root, proof = honest
    other = dataclasses.replace(acc, snapshot_id=bytes(32))
    assert _root_of(other, proof)[0] != root[0]


def test_out_of_range_numbers_are_refused_not_wrapped(honest):
    _, _, proof = honest
    with pytest.raises(TreeError, match="2\\^64"):
        walk(b"", (2**64, 0, 0), 0, proof.path)
    big = (Sibling(proof.path[0].hash, (2**128, 0, 0)), *proof.path[1:])
    with pytest.raises(TreeError, match="2\\^128"):
        walk(b"", proof.balances, proof.index, big)
    with pytest.raises(TreeError, match="does not fit"):
        walk(b"", proof.balances, 8, proof.path)


def test_a_format_2_statement_and_its_format_1_proofs_still_verify(tmp_path):
    """Snapshots before leaf privacy: one leaf per account, statement format 2 (no ``leaves``)."""
    acc = accounts(6)
    height = height_for(6)
    store = ProofsFile(tmp_path / "proofs.bin", acc, ASSETS, height, hash_accounts(acc)[1])
    root, totals = build(acc, height, store)
    store.close()
    st = Statement(
        {
            "snapshot_id": acc.snapshot_id.hex(),
            "assets": [{"symbol": a, "decimals": 0} for a in ASSETS],
            "liabilities": {
                "root": root.hex(),
                "height": height,
                "accounts": 6,
                "totals": {a: str(t) for a, t in zip(ASSETS, totals, strict=True)},
            },
        }
    )
    assert st.format == 2
    proof, _ = extract(tmp_path / "proofs.bin", acc.account_id(4))
    assert isinstance(proof, AccountProof)
    assert "every sum on its path adds up to the root" in check_proof(st, proof.to_bytes(ASSETS))
    lowered = dataclasses.replace(proof, balances=(proof.balances[0] - 1, *proof.balances[1:]))
    with pytest.raises(ProofInvalid, match="does not lead to the statement's root"):
        check_proof(st, lowered.to_bytes(ASSETS))
    split = SplitProof(proof.snapshot_id, proof.account_id, proof.salt, proof.balances, ())
    with pytest.raises(ProofInvalid, match="a format 2 proof cannot be checked against a format 2 statement"):
        check_proof(st, split.to_bytes(ASSETS))


def test_records_have_8_byte_sums_only_when_every_total_is_below_2_64(tmp_path):
    acc = accounts(6)
    assert sums_width(acc.balances) == 16
    acc.balances >>= np.uint64(8)
    assert sums_width(acc.balances) == 8
    acc.balances[:2, 1] = np.uint64(2**63)  # two halves of 2^64: each fits, their sum does not
    assert sums_width(acc.balances) == 16
    store = ProofsFile(tmp_path / "proofs.bin", acc, ASSETS, 3, hash_accounts(acc)[1], sums_width=8)
    with pytest.raises(TreeError, match="reaches 2\\^64"):  # a wrong width is refused, never truncated
        build(acc, 3, store)
    store.close()


def test_a_freed_shared_array_gives_its_memory_back_even_where_a_worker_still_maps_it():
    array = shared_array((1000, 32), np.uint8)
    array[:] = 7
    child = os.fork()
    if child == 0:  # a worker of a pool forked before the array is let go: it maps the same pages
        time.sleep(5)
        os._exit(0)
    try:
        free_shared(array)
        assert not array.any()  # the pages are gone, not merely unmapped from this process
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)


def test_the_proofs_file_is_written_whole_when_each_write_is_cut_short(tmp_path, monkeypatch):
    """One pwrite writes at most about 2 GiB on Linux (a section of 67 million accounts): what it did not write is
    written again, never left as zeros."""
    acc = accounts(21)
    height = height_for(21)
    pwrite = os.pwrite
    for name in ("whole.bin", "short.bin"):
        store = ProofsFile(tmp_path / name, acc, ASSETS, height, hash_accounts(acc)[1])
        build(acc, height, store, chunk_levels=2)
        store.close()
        monkeypatch.setattr(proofs.os, "pwrite", lambda fd, data, at: pwrite(fd, memoryview(data)[:7], at))
    assert (tmp_path / "short.bin").read_bytes() == (tmp_path / "whole.bin").read_bytes()


def test_a_proofs_file_cut_short_is_refused_not_read_as_garbage(tmp_path):
    acc = accounts(21)
    height = height_for(21)
    store = ProofsFile(tmp_path / "proofs.bin", acc, ASSETS, height, hash_accounts(acc)[1])
    build(acc, height, store, chunk_levels=2)
    store.close()
    with open(tmp_path / "proofs.bin", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "proofs.bin") - 100)  # the end of the last section (the index) lost
    with pytest.raises(ProofInvalid, match="cut short"):
        extract(tmp_path / "proofs.bin", acc.account_id(3))


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging the suite: what a worker's death used to do to a job (multiprocessing's Pool)."""

    def expired(*_: object) -> None:
        raise TimeoutError(f"still waiting after {seconds} s")

    before = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


def _killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does to a worker


def test_a_worker_killed_stops_the_job_instead_of_hanging_it() -> None:
    with deadline(60), pytest.raises(WorkerDied, match="a worker process died before its work was done"):
        run_forked([lambda: None, _killed, lambda: None, lambda: None], workers=2)


def test_hashing_and_building_stop_when_a_worker_is_killed(tmp_path, monkeypatch):
    acc = accounts(40)
    with monkeypatch.context() as m:
        m.setattr(Accounts, "id_keys", lambda *_: _killed())
        with deadline(60), pytest.raises(WorkerDied), Hashing(acc, workers=2, chunk=7) as hashing:
            hashing.wait()
    store = ProofsFile(tmp_path / "proofs.bin", acc, ASSETS, 6, hash_accounts(acc)[1])
    monkeypatch.setattr(Accounts, "leaf_hashes", lambda *_: _killed())
    with deadline(60), pytest.raises(WorkerDied):
        build(acc, 6, store, chunk_levels=2, workers=2)
    store.close()


def test_a_task_may_fork_workers_of_its_own() -> None:
    """Each pool hands its tasks to its own workers: a task's pool does not replace the tasks of the worker it
    runs in (its next task would then be another pool's, or none)."""
    counts = shared_array((8,), np.int64)

    def inner(i: int) -> None:
        counts[i] += 1

    def outer(i: int) -> None:
        run_forked([functools.partial(inner, i), lambda: None], workers=2)

    with deadline(60):
        run_forked([functools.partial(outer, i) for i in range(8)], workers=2)
    assert counts.tolist() == [1] * 8
