"""Proof of reserves at scale, from a liabilities CSV on disk to every published proof: accounts × 4 assets
(1 million by default; ``--por-accounts 10000000`` or BENCH_POR_ACCOUNTS for the issue's 10 million).

Times separately: reading the CSV (``read_liabilities``), the tree (hashing the ids for the leaves and the lookup
index, cutting every account into pieces and placing them, building the tree into the indexed proofs file),
the statement (ready to sign), and the export of every customer's proof (entry shards, tree files, manifest). Then one
proof looked up by account id and verified, one proof rebuilt from the published files, and the ratio to raw SHA-256
throughput on one core, measured in the same run (as many 64-byte hashes as the pipeline makes, one hashlib call
each: the baseline the pipeline's native batch digests are compared with).

Peak memory is the highest sum of PSS (proportional set size: pages shared with the forked workers counted
once) over this process and its workers, sampled every second by a separate process. Targets at 10 million:
≤ 60 s on 2 cores, ≤ 4 GiB; one proof looked up in ≤ 2 ms and verified in ≤ 5 ms."""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_por_csv import DECIMALS, write_csv
from custody.por import shards
from custody.por.liabilities import read_liabilities
from custody.por.proofs import extract
from custody.por.snapshot import build_liabilities
from custody.por.verify import check_proof
from signer.porstatement import Statement, check_claims, coverage

ASSETS = 4


class PeakMemory:
    """The highest PSS of this process plus its descendants, sampled every second by a forked sampler process (a
    thread here would take the GIL from the pipeline it measures): of their own memory (anonymous pages, plus the
    machine's shared memory grown since the start, which holds the shared arrays the workers write into), and
    with the pages of mapped files (the proofs file the export reads; page cache the kernel can drop) too."""

    def __init__(self) -> None:
        self.peak = 0
        self.peak_anon = 0
        self.phases: dict[str, int] = {}  # the anonymous peak within each phase, KiB
        self._marks: list[tuple[float, str]] = []
        self._theirs, self._ours = multiprocessing.Pipe()
        self._sampler = multiprocessing.get_context("fork").Process(target=_sample, args=(os.getpid(), self._theirs))

    def __enter__(self) -> PeakMemory:
        self._sampler.start()
        self._start = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self._ours.send("stop")
        samples: list[tuple[float, int, int]] = self._ours.recv()
        self._sampler.join()
        self.peak = max((s[1] for s in samples), default=0)
        self.peak_anon = max((s[2] for s in samples), default=0)
        start = self._start
        for at, name in self._marks:
            self.phases[name] = max((s[2] for s in samples if start <= s[0] <= at), default=0)
            start = at

    def phase(self, name: str) -> None:
        """End a phase: its peak is the highest sample since the previous one ended."""
        self._marks.append((time.monotonic(), name))


def _sample(pid: int, pipe: Any) -> None:
    """PSS sees shared memory only where a live process has touched it; the shared arrays the workers fill are
    counted instead by the machine's Shmem, above what it was when the run began (the machine otherwise quiet)."""
    samples, before = [], _shmem()
    while not pipe.poll(1.0):
        both = [_pss(p) for p in _tree(pid) if p != os.getpid()]
        shared = max(0, _shmem() - before)
        samples.append((time.monotonic(), sum(b[0] for b in both) + shared, sum(b[1] for b in both) + shared))
    pipe.recv()
    pipe.send(samples)


def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    out += _tree(int(child))
    except OSError:
        pass
    return out


def _shmem() -> int:
    """The machine's shared memory (tmpfs and shared anonymous mappings), KiB."""
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Shmem:"))


def _pss(pid: int) -> tuple[int, int]:
    """(PSS without shared memory, anonymous PSS) in KiB."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("Pss", "Pss_Anon", "Pss_Shmem"):
                    fields[name] = int(rest.split()[0])
    except OSError:
        pass
    return fields.get("Pss", 0) - fields.get("Pss_Shmem", 0), fields.get("Pss_Anon", 0)


def raw_sha256(count: int) -> float:
    """Seconds for ``count`` SHA-256 of 64-byte inputs on one core, hashlib one call each."""
    data = os.urandom(64 * 1024)
    start = time.perf_counter()
    for _ in range(count // 1024):
        for i in range(0, len(data), 64):
            hashlib.sha256(data[i : i + 64]).digest()
    return time.perf_counter() - start


def statement(snapshot_id: bytes, symbols: list[str], tree: Any, accounts: int) -> Statement:
    """The statement as ``custody por snapshot`` writes it, with one hot wallet holding the totals (no node)."""
    held = {s: str(t) for s, t in zip(symbols, tree.totals, strict=True)}
    hot = "0x" + "11" * 20
    claims = {
        "snapshot_id": snapshot_id.hex(),
        "created_at": 1_800_000_000,
        "chain_id": 1,
        "block": {"number": 1, "hash": "0x" + "22" * 32},
        "policy_hash": "33" * 32,
        "assets": [
            {"symbol": s, "decimals": DECIMALS[s], "chain_decimals": DECIMALS[s], "contract": None} for s in symbols
        ],
        "liabilities": {
            "root": tree.root.hex(),
            "height": tree.height,
            "accounts": accounts,
            "leaves": tree.leaves,
            "totals": held,
        },
        "wallets": [{"address": hot, "kind": "hot", "owners": [hot], "threshold": 1, "balances": held}],
        "reserves": held,
        "coverage": {s: coverage(int(v), int(v)) for s, v in held.items()},
    }
    check_claims(claims)
    return Statement(claims)


def run(accounts: int | None = None) -> dict[str, float]:
    n = accounts or int(os.environ.get("BENCH_POR_ACCOUNTS", 1_000_000))
    print(f"\n== proof of reserves: {n:,} accounts × {ASSETS} assets, CSV to every exported proof, 2 workers")
    figures: dict[str, float] = {"accounts": n}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp_name:
        tmp = Path(tmp_name)
        csv = tmp / "liabilities.csv"
        t = time.perf_counter()
        symbols = write_csv(csv, n, ASSETS)
        print(
            f"   generated {csv.stat().st_size / 2**20:,.0f} MiB of CSV in {time.perf_counter() - t:.1f} s (not timed)"
        )
        marks: list[tuple[float, str]] = []
        with PeakMemory() as memory:
            start = time.perf_counter()
            snapshot_id = os.urandom(32)
            got, acc = read_liabilities(csv, {s: DECIMALS[s] for s in symbols}, snapshot_id)
            assert got == symbols and acc.count == n
            figures["csv"] = time.perf_counter() - start
            memory.phase("csv")
            print(f"   ... CSV read in {figures['csv']:.1f} s", flush=True)
            t = time.perf_counter()

            def mark(message: str) -> None:
                marks.append((time.perf_counter(), message))
                if message.startswith("  cut into"):
                    memory.phase("ids hashed, cut and placed")

            tree = build_liabilities(acc, symbols, tmp / "proofs.bin", workers=2, progress=mark)
            figures["tree"] = time.perf_counter() - t
            cut = next(at for at, m in marks if m.startswith("  cut into"))
            figures["hash_and_split"] = cut - t
            memory.phase("tree")
            print(f"   ... tree and proofs file in {figures['tree']:.1f} s", flush=True)
            paused = time.perf_counter()  # the lookups measured here are not part of the pipeline's time
            sample = [acc.account_id(i) for i in random.sample(range(n), 50)]
            del acc
            warm = []
            for account in sample:  # right after the snapshot, the file in the page cache as a server has it
                w = time.perf_counter()
                extract(tmp / "proofs.bin", account)
                warm.append(time.perf_counter() - w)
            figures["lookup_warm_ms"] = 1000 * sorted(warm)[len(warm) // 2]
            start += time.perf_counter() - paused
            t = time.perf_counter()
            st = statement(snapshot_id, symbols, tree, n)
            raw_statement = st.to_bytes()
            figures["statement"] = time.perf_counter() - t
            t = time.perf_counter()
            done = shards.export(tmp / "proofs.bin", tmp / "shards", workers=2)
            figures["export"] = time.perf_counter() - t
            memory.phase("export")
            figures["total"] = time.perf_counter() - start
        figures["peak_mib"] = memory.peak_anon / 1024
        figures["peak_mapped_mib"] = memory.peak / 1024
        figures["proofs_file_gib"] = (tmp / "proofs.bin").stat().st_size / 2**30
        figures["export_gib"] = done.bytes / 2**30
        figures["shards"] = done.shards
        figures["tree_files"] = done.tree_files

        lookups, checks = [], []
        for account in sample:
            t = time.perf_counter()
            proof, assets = extract(tmp / "proofs.bin", account)
            lookups.append(time.perf_counter() - t)
            raw = proof.to_bytes(assets)
            t = time.perf_counter()
            check_proof(st, raw)
            checks.append(time.perf_counter() - t)
        figures["lookup_ms"] = 1000 * sorted(lookups)[len(lookups) // 2]
        figures["verify_ms"] = 1000 * sorted(checks)[len(checks) // 2]
        proof, _ = extract(tmp / "proofs.bin", sample[0])
        t = time.perf_counter()
        published = shards.Published(
            (tmp / "shards" / shards.MANIFEST).read_bytes(), lambda name: (tmp / "shards" / name).read_bytes()
        )
        from_shard = shards.proof_from_shards(published, sample[0], proof.salt)
        figures["shard_proof_ms"] = 1000 * (time.perf_counter() - t)
        assert from_shard == proof and "included" in check_proof(st, from_shard.to_bytes(symbols))
        assert Statement(st.claims).to_bytes() == raw_statement
        shutil.rmtree(tmp / "shards")

    hashes = 2 * n + 2 * (1 << tree.height)  # ids twice (leaf, index), shard keys, leaves and nodes (~)
    figures["sha256_s"] = raw_sha256(hashes)
    figures["ratio"] = figures["sha256_s"] / figures["total"]
    f = figures
    print(
        f"   CSV read {f['csv']:.1f} s; tree {f['tree']:.1f} s (ids hashed, cut and placed in "
        f"{f['hash_and_split']:.1f} s; "
        f"{tree.leaves:,} leaves, height {tree.height}); statement {f['statement'] * 1000:.0f} ms; "
        f"export {f['export']:.1f} s"
    )
    print(
        f"   total {f['total']:.1f} s ({n / f['total']:,.0f} accounts/s); peak memory {f['peak_mib']:,.0f} MiB "
        f"(anonymous PSS, shared included, of this process and its workers; "
        f"{f['peak_mapped_mib']:,.0f} MiB with mapped file pages)"
    )
    print("   peak memory by phase: " + ", ".join(f"{k} {v / 1024:,.0f} MiB" for k, v in memory.phases.items()))
    print(
        f"   proofs file {f['proofs_file_gib']:.2f} GiB; {int(f['shards']):,} entry shards and "
        f"{int(f['tree_files']):,} tree files, {f['export_gib']:.2f} GiB "
        f"({f['export_gib'] * 2**30 / n:,.0f} bytes an account)"
    )
    print(f"   raw SHA-256: {hashes:,} 64-byte hashes in {f['sha256_s']:.1f} s on one core; ratio {f['ratio']:.2f}")
    print(
        f"   one proof: looked up in {f['lookup_warm_ms']:.2f} ms after the snapshot, {f['lookup_ms']:.2f} ms after "
        f"the export (the proofs file partly out of the page cache), verified in {f['verify_ms']:.2f} ms "
        "(medians of 50); "
        f"rebuilt from the published files in {f['shard_proof_ms']:.1f} ms"
    )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--por-accounts", type=int, default=None)
    run(parser.parse_args().por_accounts)
