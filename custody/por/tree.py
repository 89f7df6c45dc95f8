"""The liabilities Merkle sum tree (DESIGN.md section 6), byte for byte; specified in docs/proof-of-reserves.md.

    account hash = SHA-256(account id (UTF-8) ‖ salt (32 bytes))
    leaf         = SHA-256(0x00 ‖ 0x01 ‖ snapshot id (32) ‖ account hash (32)
                           ‖ each balance as u64 big-endian, in the snapshot's asset order)          tree format 1
    piece leaf   = SHA-256(0x00 ‖ 0x02 ‖ snapshot id (32) ‖ account hash (32) ‖ piece (u8) ‖ pieces (u8)
                           ‖ each share as u64 big-endian)              tree format 2 (custody.por.split)
    padding leaf = SHA-256(0x02 ‖ snapshot id (32) ‖ leaf index as u64 big-endian), all its balances zero
    node         = SHA-256(0x01 ‖ left hash ‖ right hash ‖ left sums ‖ right sums), each sum u128 big-endian,
                   one per asset, in the snapshot's asset order

A node's sums are its children's sums added; both children's sums are hashed, so a parent cannot commit to a
total without committing to how it splits (the fix for Maxwell's flaw). The tree has 2^height leaves: in
format 1 the accounts, in order, then padding; in format 2 each account's 2 to 4 pieces at random places
among padding (``custody.por.split``).

Two implementations of the same rules live here: the plain one (``leaf_hash``, ``node_hash``, ``walk``) that
proofs are verified with, and the vectorised builder (``build``) for millions of accounts, which the tests
check against the plain one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import mmap
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

import numpy as np

from custody.errors import WorkerDied
from custody.por.digests import digest_joined, digest_rows, load

T = TypeVar("T")

VERSION = 1  # the tree format of ``leaf_hash``; format 2 (``piece_hash``) splits each account into pieces
SPLIT_VERSION = 2
U64, U128 = 2**64, 2**128
HASH = 32
sha256 = hashlib.sha256


def account_hash(account_id: str, salt: bytes) -> bytes:
    return sha256(account_id.encode() + salt).digest()


def leaf_hash(snapshot_id: bytes, acct_hash: bytes, balances: Sequence[int]) -> bytes:
    return sha256(
        b"\x00" + bytes([VERSION]) + snapshot_id + acct_hash + b"".join(b.to_bytes(8, "big") for b in balances)
    ).digest()


def piece_hash(snapshot_id: bytes, acct_hash: bytes, piece: int, pieces: int, shares: Sequence[int]) -> bytes:
    """A leaf of tree format 2: one of the ``pieces`` parts of an account's balances. Piece number and count are
    hashed so a piece cannot be shown twice under two numbers, and a proof with a piece missing does not verify."""
    return sha256(
        b"\x00"
        + bytes([SPLIT_VERSION])
        + snapshot_id
        + acct_hash
        + bytes([piece, pieces])
        + b"".join(s.to_bytes(8, "big") for s in shares)
    ).digest()


def padding_hash(snapshot_id: bytes, index: int) -> bytes:
    return sha256(b"\x02" + snapshot_id + index.to_bytes(8, "big")).digest()


def sums_bytes(sums: Sequence[int]) -> bytes:
    return b"".join(s.to_bytes(16, "big") for s in sums)


def node_hash(left: bytes, right: bytes, left_sums: Sequence[int], right_sums: Sequence[int]) -> bytes:
    return sha256(b"\x01" + left + right + sums_bytes(left_sums) + sums_bytes(right_sums)).digest()


class TreeError(ValueError):
    """A proof that does not add up (the verifier wraps it in its own error type)."""


@dataclass(frozen=True)
class Sibling:
    hash: bytes
    sums: tuple[int, ...]


def walk(leaf: bytes, balances: Sequence[int], index: int, path: Sequence[Sibling]) -> tuple[bytes, tuple[int, ...]]:
    """From a leaf up to the root: the root hash and sums the path implies. Index bit l says whether the node
    at level l is a right child. Refuses sums outside their ranges instead of wrapping them."""
    if not 0 <= index < 2 ** len(path):
        raise TreeError(f"leaf index {index} does not fit a tree of height {len(path)}")
    node, sums = leaf, tuple(balances)
    if any(not 0 <= b < U64 for b in sums):
        raise TreeError("a balance is outside [0, 2^64)")
    for level, sibling in enumerate(path):
        if len(sibling.sums) != len(sums) or any(not 0 <= s < U128 for s in sibling.sums):
            raise TreeError(f"level {level}: the sibling's sums are malformed or outside [0, 2^128)")
        parent = tuple(a + b for a, b in zip(sums, sibling.sums, strict=True))
        if any(s >= U128 for s in parent):
            raise TreeError(f"level {level}: a sum overflows 128 bits")
        if index >> level & 1:
            node = node_hash(sibling.hash, node, sibling.sums, sums)
        else:
            node = node_hash(node, sibling.hash, sums, sibling.sums)
        sums = parent
    return node, sums


def height_for(accounts: int) -> int:
    """The smallest height whose leaves hold every account (at least 1, so even one account has a path)."""
    return max(1, (accounts - 1).bit_length())


# -- the vectorised builder ----------------------------------------------------------------------------------
class LevelSink(Protocol):
    def write_level(self, level: int, start: int, records: bytes) -> None:
        """Store nodes start, start+1, … of ``level`` (each record: hash ‖ sums, see ``record_size``)."""

    @property
    def sums_width(self) -> int:
        """Bytes of each sum in the records: 16, or 8 when every total is below 2^64 (``sums_width``)."""
        ...


class LeafSource(Protocol):
    """What the builder hashes at the bottom: ``leaves`` real leaves somewhere among 2^height."""

    @property
    def leaves(self) -> int: ...

    def leaf_hashes(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, 32) uint8: the hashes of leaves start … stop-1, padding included."""
        ...

    def leaf_sums(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, assets) uint64: their balances (zero for padding)."""
        ...


def record_size(assets: int, width: int = 16) -> int:
    return HASH + width * assets


def sums_width(balances: np.ndarray) -> int:
    """8 when every asset's total, and so every node's sum, is below 2^64 (records a third smaller); else 16."""
    low = (balances & np.uint64(0xFFFFFFFF)).sum(axis=0, dtype=np.uint64)  # no overflow below 2^32 rows
    high = (balances >> np.uint64(32)).sum(axis=0, dtype=np.uint64)
    return 8 if all((int(h) << 32) + int(lo) < U64 for h, lo in zip(high, low, strict=True)) else 16


@dataclass
class Accounts:
    """Everything the leaves are made of, without a Python object per account (millions of them). As a
    ``LeafSource`` it is tree format 1: one leaf per account, in file order, then padding."""

    snapshot_id: bytes
    ids: bytes  # every account id, UTF-8, joined
    offsets: np.ndarray  # int64, len n+1: id i is ids[offsets[i]:offsets[i+1]]
    salts: bytes  # 32 bytes per account
    balances: np.ndarray  # uint64, shape (n, assets)

    @property
    def count(self) -> int:
        return len(self.offsets) - 1

    @property
    def leaves(self) -> int:
        return self.count

    def account_id(self, i: int) -> str:
        return self.ids[int(self.offsets[i]) : int(self.offsets[i + 1])].decode()

    def account_hashes(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, 32) uint8: SHA-256(id ‖ salt) of accounts start … stop-1."""
        salts = np.frombuffer(self.salts, dtype=np.uint8, count=HASH * stop).reshape(stop, HASH)
        return digest_joined(self.ids, self.offsets[start : stop + 1], salts[start:])

    def id_keys(self, start: int, stop: int) -> np.ndarray:
        """The lookup index's key of accounts start … stop-1: the first 8 bytes of SHA-256(id), as uint64."""
        return first_u64(digest_joined(self.ids, self.offsets[start : stop + 1]))

    def leaf_hashes(self, start: int, stop: int) -> np.ndarray:
        real_stop = min(stop, self.count)
        parts = []
        if start < real_stop:
            n, assets = real_stop - start, self.balances.shape[1]
            rows = np.empty((n, 2 + 2 * HASH + 8 * assets), dtype=np.uint8)
            rows[:, 0], rows[:, 1] = 0, VERSION
            rows[:, 2:34] = np.frombuffer(self.snapshot_id, dtype=np.uint8)
            rows[:, 34:66] = self.account_hashes(start, real_stop)
            rows[:, 66:] = self.balances[start:real_stop].astype(">u8").view(np.uint8).reshape(n, 8 * assets)
            parts.append(digest_rows(rows))
        pad_start = max(start, self.count)
        if pad_start < stop:
            parts.append(padding_hashes(self.snapshot_id, np.arange(pad_start, stop, dtype=np.int64)))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def leaf_sums(self, start: int, stop: int) -> np.ndarray:
        lo = np.zeros((stop - start, self.balances.shape[1]), dtype=np.uint64)
        real_stop = min(stop, self.count)
        if start < real_stop:
            lo[: real_stop - start] = self.balances[start:real_stop]
        return lo


def first_u64(rows: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each row, big-endian, as native uint64 (index keys; what entries are sorted and
    searched by)."""
    return rows[:, :8].copy().view(">u8").ravel().astype(np.uint64)


def padding_hashes(snapshot_id: bytes, indices: np.ndarray) -> np.ndarray:
    n = len(indices)
    rows = np.empty((n, 1 + HASH + 8), dtype=np.uint8)
    rows[:, 0] = 2
    rows[:, 1:33] = np.frombuffer(snapshot_id, dtype=np.uint8)
    rows[:, 33:] = indices.astype(">u8").view(np.uint8).reshape(n, 8)
    return digest_rows(rows)


def _sums_rows(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Per node, each asset's sum as u128 big-endian: an (n, 16 × assets) uint8 array."""
    both = np.empty((*hi.shape, 2), dtype=">u8")
    both[..., 0], both[..., 1] = hi, lo
    return both.view(np.uint8).reshape(hi.shape[0], -1)


def _up(hashes: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One level up: each pair of nodes to its parent."""
    n, assets = hashes.shape[0] // 2, hi.shape[1]
    sums = _sums_rows(hi, lo)
    rows = np.empty((n, 1 + 2 * HASH + 32 * assets), dtype=np.uint8)
    rows[:, 0] = 1
    rows[:, 1 : 1 + 2 * HASH] = hashes.reshape(n, 2 * HASH)
    rows[:, 1 + 2 * HASH :] = sums.reshape(n, 32 * assets)  # the left child's sums, then the right one's
    new_lo = lo[0::2] + lo[1::2]
    carry = (new_lo < lo[0::2]).astype(np.uint64)
    new_hi = hi[0::2] + hi[1::2] + carry
    return digest_rows(rows), new_hi, new_lo


def _records(hashes: np.ndarray, hi: np.ndarray, lo: np.ndarray, width: int) -> bytes:
    if width == 16:
        return np.concatenate([hashes, _sums_rows(hi, lo)], axis=1).tobytes()
    if hi.any():
        raise TreeError("a sum reaches 2^64 in records of 8-byte sums")
    return np.concatenate([hashes, lo.astype(">u8").view(np.uint8).reshape(len(lo), -1)], axis=1).tobytes()


def _subtree(source: LeafSource, levels: int, sink: LevelSink, chunk: int) -> tuple[int, bytes, np.ndarray, np.ndarray]:
    """Build one chunk of leaves up to its own root, storing every level; return that root."""
    size = 1 << levels
    start = chunk * size
    hashes = source.leaf_hashes(start, start + size)
    lo = source.leaf_sums(start, start + size)
    hi = np.zeros_like(lo)
    sink.write_level(0, start, _records(hashes, hi, lo, sink.sums_width))
    for level in range(1, levels + 1):
        hashes, hi, lo = _up(hashes, hi, lo)
        sink.write_level(level, start >> level, _records(hashes, hi, lo, sink.sums_width))
    return chunk, hashes.tobytes(), hi, lo


def build(
    source: LeafSource,
    height: int,
    sink: LevelSink,
    *,
    chunk_levels: int = 16,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    meanwhile: Callable[[], None] = lambda: None,
) -> tuple[bytes, tuple[int, ...]]:
    """Build the whole tree, handing every level to ``sink``; return the root hash and sums. Chunks of
    2^chunk_levels leaves are built (in ``workers`` forked processes) up to their own roots, then the top.
    ``meanwhile`` runs in this process once the workers are started (before the chunks, without workers)."""
    if source.leaves > 2**height:
        raise TreeError(f"{source.leaves} leaves do not fit a tree of height {height}")
    levels = min(chunk_levels, height)
    chunks = 1 << (height - levels)
    if workers > 1:
        load()
    roots: list[tuple[int, bytes, np.ndarray, np.ndarray]] = []
    with forked([functools.partial(_subtree, source, levels, sink, chunk) for chunk in range(chunks)], workers) as done:
        meanwhile()
        for root in done:
            roots.append(root)
            if progress:
                progress(len(roots), chunks)
    roots.sort(key=lambda r: r[0])
    hashes = np.frombuffer(b"".join(r[1] for r in roots), dtype=np.uint8).reshape(-1, HASH)
    hi, lo = np.concatenate([r[2] for r in roots]), np.concatenate([r[3] for r in roots])
    for level in range(levels + 1, height + 1):
        hashes, hi, lo = _up(hashes, hi, lo)
        sink.write_level(level, 0, _records(hashes, hi, lo, sink.sums_width))
    total = tuple((int(h) << 64) | int(low) for h, low in zip(hi[0], lo[0], strict=True))
    return hashes[0].tobytes(), total


def new_salts(count: int) -> bytes:
    return os.urandom(32 * count)


def shared_array(shape: tuple[int, ...], dtype: type | str) -> np.ndarray:
    """A zeroed array in shared anonymous memory: what forked workers write into it, the parent sees."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(mmap.mmap(-1, max(1, nbytes)), dtype=dtype, count=int(np.prod(shape))).reshape(shape)


_TASKS: Sequence[Callable[[], Any]] = ()  # in a worker of ``forked``: its pool's tasks


def _worker_tasks(tasks: Sequence[Callable[[], Any]]) -> None:
    global _TASKS
    _TASKS = tasks


def _run_task(i: int) -> Any:
    return _TASKS[i]()


@contextlib.contextmanager
def forked(tasks: Sequence[Callable[[], T]], workers: int = 1) -> Iterator[Iterator[T]]:
    """Run every task once and yield their results as they are done: in ``workers`` forked processes, which
    inherit this process's memory (the tasks are handed to them at the fork, not pickled; only results are), or
    here, each as its result is read, with one worker or one task. Unlike multiprocessing's Pool, a worker that
    dies (killed, perhaps by the out-of-memory killer) fails the work with WorkerDied instead of leaving it
    waiting forever. Leaving, early or on an error, drops the tasks not yet queued for a worker (all but a few) and
    waits for the others."""
    if workers <= 1 or len(tasks) <= 1:
        yield (task() for task in tasks)
        return
    pool = ProcessPoolExecutor(
        min(workers, len(tasks)),
        mp_context=multiprocessing.get_context("fork"),
        initializer=_worker_tasks,
        initargs=(tasks,),
    )
    try:
        yield _results([pool.submit(_run_task, i) for i in range(len(tasks))])  # the first submit forks them all
    finally:
        started = dict(getattr(pool, "_processes", None) or {})  # shutdown forgets them
        pool.shutdown(wait=True, cancel_futures=True)
        for process in started.values():  # alive only when a later fork failed: nothing else ends them then
            if process.is_alive():
                process.terminate()
            process.join()


def _results(futures: list[Future[T]]) -> Iterator[T]:
    try:
        for done in as_completed(futures):
            yield done.result()  # a task's own error is raised as it is
    except BrokenProcessPool:
        raise WorkerDied(
            "a worker process died before its work was done (killed, perhaps by the out-of-memory killer); "
            "the job is stopped"
        ) from None


def run_forked(tasks: Sequence[Callable[[], object]], workers: int = 1) -> None:
    """Run every task once (``forked``); whatever a task makes, it writes into a ``shared_array``. Each process
    draws its own randomness: a task must not rely on a generator state it shares with another."""
    with forked(tasks, workers) as done:
        for _ in done:
            pass


def free_shared(array: np.ndarray) -> None:
    """Give a ``shared_array``'s memory back now: dropping the array is not enough while forked workers (of a
    later pool) still map it. Its contents read as zeros afterwards; it must not be used again."""
    base: object = array
    while not isinstance(base, mmap.mmap):  # views of views, then the buffer numpy took: the mmap
        base = base.obj if isinstance(base, memoryview) else base.base  # type: ignore[attr-defined]
    base.madvise(mmap.MADV_REMOVE)


class Hashing:
    """Every account's hash (SHA-256(id ‖ salt), for the leaves), lookup-index key and, given ``digest`` (from
    (n, 32) account hashes to (n, ``digest_size``) uint8), its digest of the account hash (the published shards'
    lookup key): one pass over the ids,
    in ``workers`` forked processes, while the caller goes on with other work (cutting and placing the pieces
    needs none of it). The workers write straight into the shared arrays ``hashes``, ``keys`` and ``digests``,
    which hold the results once ``wait`` has returned: nothing comes back through a pipe, so no second copy of
    10 million accounts' worth is ever in memory."""

    def __init__(
        self,
        acc: Accounts,
        *,
        workers: int = 1,
        chunk: int = 1 << 16,
        digest: Callable[[np.ndarray], np.ndarray] | None = None,
        digest_size: int = 0,
    ) -> None:
        n = acc.count
        self.acc, self.digest = acc, digest
        self.hashes = shared_array((n, HASH), np.uint8)
        self.keys = shared_array((n,), np.uint64)
        self.digests = shared_array((n, digest_size), np.uint8) if digest is not None else None
        if workers > 1:
            load()  # compiled once here, not in every worker
        tasks = [functools.partial(self.hash_chunk, a, min(a + chunk, n)) for a in range(0, n, chunk)]
        self._pool = contextlib.ExitStack()
        self._done = self._pool.enter_context(forked(tasks, workers))

    def hash_chunk(self, start: int, stop: int) -> None:
        hashes = self.acc.account_hashes(start, stop)
        self.hashes[start:stop] = hashes
        self.keys[start:stop] = self.acc.id_keys(start, stop)
        if self.digest is not None and self.digests is not None:
            self.digests[start:stop] = self.digest(hashes)

    def wait(self) -> Hashing:
        """Block until every account is hashed (at once without workers: the work is done here)."""
        try:
            for _ in self._done:
                pass
        finally:
            self._pool.close()
        return self

    def __enter__(self) -> Hashing:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._pool.__exit__(kind, error, trace)  # left early (an error): the chunks not started are dropped


def hash_accounts(acc: Accounts, *, workers: int = 1, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Every account's hash ((n, 32) uint8, in file order) and lookup-index key (uint64), at once."""
    with Hashing(acc, workers=workers, chunk=chunk) as hashing:
        hashing.wait()
    return hashing.hashes, hashing.keys
