"""Proof of reserves at scale: 10 million accounts × 4 assets (BENCH_POR_ACCOUNTS to change), build the
liabilities tree and write the indexed proofs file every account's proof is cut from, on both cores.

Prints accounts/s, wall time, peak memory (this process and its workers), the ratio to raw SHA-256
throughput (as many 64-byte hashes with hashlib as the tree makes, in the same run), and the time to cut and
verify one proof. Targets: ≤ 90 s, ≤ 4 GiB, one proof verified in ≤ 5 ms."""

from __future__ import annotations

import hashlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from custody.por.proofs import ProofsFile, extract
from custody.por.tree import Accounts, account_hash, build, height_for, leaf_hash, new_salts, walk

ASSETS = ["ETH", "USDC", "USDT", "WBTC"]


def make_accounts(n: int) -> Accounts:
    rng = np.random.default_rng(7)
    width = len(str(n - 1))
    ids = b"".join(f"acct-{i:0{width}d}".encode() for i in range(n))
    offsets = np.arange(0, (n + 1) * (5 + width), 5 + width, dtype=np.int64)
    balances = rng.integers(0, 10**12, size=(n, len(ASSETS)), dtype=np.uint64)
    return Accounts(os.urandom(32), ids, offsets, new_salts(n), balances)


def raw_sha256(count: int) -> float:
    data = os.urandom(64 * 1024)
    start = time.perf_counter()
    for _ in range(count // 1024):
        for i in range(0, len(data), 64):
            hashlib.sha256(data[i : i + 64]).digest()
    return time.perf_counter() - start


def peak_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024  # ru_maxrss is in KiB on Linux; the sum over-states, never under-states


def run() -> None:
    n = int(os.environ.get("BENCH_POR_ACCOUNTS", 10_000_000))
    print(f"\n== proof of reserves: {n:,} accounts × {len(ASSETS)} assets, 2 workers")
    acc = make_accounts(n)
    height = height_for(n)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        path = Path(tmp) / "proofs.bin"
        start = time.perf_counter()
        store = ProofsFile(path, acc, ASSETS, height)
        root, totals = build(acc, height, store, workers=2)
        store.close()
        elapsed = time.perf_counter() - start
        size = path.stat().st_size
        hashes = n + 2 * 2**height - 1  # account hashes, leaves (with padding), nodes
        baseline = raw_sha256(hashes)
        t = time.perf_counter()
        proof, _ = extract(path, acc.account_id(n // 3))
        cut = time.perf_counter() - t
        t = time.perf_counter()
        leaf = leaf_hash(acc.snapshot_id, account_hash(proof.account_id, proof.salt), proof.balances)
        assert walk(leaf, proof.balances, proof.index, proof.path) == (root, totals)
        verify = time.perf_counter() - t
    print(f"   tree of height {height} and indexed proofs file ({size / 2**30:.2f} GiB) in {elapsed:.1f} s")
    print(f"   {n / elapsed:,.0f} accounts/s; peak memory {peak_mib():,.0f} MiB (this process plus its workers)")
    print(f"   raw SHA-256: {hashes:,} 64-byte hashes in {baseline:.1f} s on one core; ratio {baseline / elapsed:.2f}")
    print(f"   one proof: cut from the file in {cut * 1000:.1f} ms, verified in {verify * 1000:.2f} ms")


if __name__ == "__main__":
    run()
