"""``custody por export-proofs``: every customer's proof, in shards for static hosting, and a manifest of their
SHA-256 hashes; and the customer's side, cutting their own proof out of a shard (docs/proof-of-reserves.md).

A customer finds their shard and entry by a key only they (and the exchange) can compute, from their account id
and salt (the salt is their "proof key" for the snapshot, which the exchange shows them):

    account hash = SHA-256(account id ‖ salt)                       as in the tree
    d            = SHA-512("custody-por-shard" ‖ account hash)
    lookup key   = d[0:16]; shard = the first ``prefix_digits`` hex digits of the lookup key
    entry        = lookup key ‖ (pieces (u8) ‖ 4 × place (u32 big-endian, 0xFFFFFFFF past the pieces)) XOR d[16:33]

No plaintext id is in a shard, and which leaves belong to one account is masked: to anyone without the salt, a
shard is a set of tree nodes. A shard file (all integers big-endian):

    u32 header length ‖ header: canonical JSON {"kind": "custody-por-shard", "format": 1, "snapshot_id",
                        "assets", "height", "prefix", "entries", "sums_width", "nodes": [count per level]}
    entries             "entries" × 33 bytes, sorted by lookup key
    per level 0 … height-1:
      indices           count × u32: the nodes of that level the shard's pieces need (their paths' siblings)
      records           count × (hash (32) ‖ one sum per asset, ``sums_width`` bytes each: 8 when every
                        liability total is below 2^64, else 16)

The nodes every entry of a shard needs are stored once per shard, so the upper levels are shared. A piece's
shares are not stored: they are the statement's totals minus its siblings' sums, and its leaf hash (which
commits to them) must still lead to the root.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from custody.errors import ProofInvalid
from custody.por.proofs import PieceProof, Reading, SplitProof, level_offset
from custody.por.split import MAX_PIECES, UNUSED
from custody.por.tree import HASH, U64, Sibling, account_hash
from policies.canonical import canonical_bytes, parse_canonical

SHARD_KIND, MANIFEST_KIND = "custody-por-shard", "custody-por-shards"
MANIFEST = "manifest.json"
DOMAIN = b"custody-por-shard"
ENTRY = 16 + 1 + 4 * MAX_PIECES
_ID_BYTES = 4  # shard numbers sit above the 32 bits of a place in the sort keys


def shard_digest(acct_hash: bytes) -> bytes:
    return hashlib.sha512(DOMAIN + acct_hash).digest()


def default_prefix_digits(accounts: int) -> int:
    """Hex digits of the shard names: at most about 4096 accounts a shard (4096 shards at 10 million accounts,
    a few MB each). Smaller shards cost more in all (fewer upper nodes shared) and one file creation each."""
    return 1 if accounts <= 4096 * 16 else min(6, math.ceil(math.log(accounts / 4096, 16)))


_JOB: bytes | None = None  # every account hash, set before forking the workers


def _digests(bounds: tuple[int, int]) -> tuple[int, bytes]:
    assert _JOB is not None
    start, stop = bounds
    hashes = _JOB[32 * start : 32 * stop]
    return start, b"".join([shard_digest(hashes[i : i + 32])[:33] for i in range(0, len(hashes), 32)])


def _all_digests(account_hashes: bytes, workers: int) -> np.ndarray:
    global _JOB
    count = len(account_hashes) // 32
    bounds = [(a, min(a + (1 << 16), count)) for a in range(0, count, 1 << 16)]
    _JOB = account_hashes
    try:
        if workers > 1 and len(bounds) > 1:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                done = pool.map(_digests, bounds)
        else:
            done = [_digests(b) for b in bounds]
    finally:
        _JOB = None
    done.sort(key=lambda d: d[0])
    return np.frombuffer(b"".join(d[1] for d in done), dtype=np.uint8).reshape(count, 33)


@dataclass(frozen=True)
class Exported:
    shards: int
    accounts: int
    bytes: int
    manifest: Path


def export(
    proofs_path: Path,
    out_dir: Path,
    *,
    prefix_digits: int | None = None,
    workers: int = 2,
    batch_pieces: int = 1 << 20,
    progress: Callable[[str], None] = lambda _: None,
) -> Exported:
    """Write every shard and the manifest into ``out_dir`` (new or empty)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ProofInvalid(f"{out_dir} is not empty: the shards go into a new directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    with Reading(proofs_path) as f:
        h = f.header
        if h.get("tree", 1) != 2:
            raise ProofInvalid("only a split tree (statement format 3) can be exported in shards")
        n, height = h["accounts"], h["height"]
        digits = prefix_digits or default_prefix_digits(n)
        places = np.frombuffer(f.read("places", 0, 16 * n), dtype="<u4").reshape(n, MAX_PIECES)
        progress(f"hashing {n} accounts' lookup keys")
        digests = _all_digests(f.read("account_hashes", 0, 32 * n), workers)
        top = f.record(height, 0)  # the root's sums: the widest any node's sums can be
        width = 8 if all(s < U64 for s in top.sums) else 16
        tree = np.memmap(
            proofs_path, dtype=np.uint8, mode="r", offset=f.sections["tree"][0], shape=(f.sections["tree"][1],)
        )
        writer = _Writer(out_dir, f, digits, width, tree)
        order = np.argsort(digests[:, :8].copy().view(">u8").ravel(), kind="stable")
        shard_of = (digests[order, :8].copy().view(">u8").ravel() >> np.uint64(64 - 4 * digits)).astype(np.int64)
        shards = 1 << (4 * digits)
        bounds = np.searchsorted(shard_of, np.arange(shards + 1))
        pieces_of = (places != UNUSED).sum(axis=1)
        cumulative = np.concatenate([[0], np.cumsum(pieces_of[order])])
        first = 0
        while first < shards:  # a batch of shards whose pieces fit ``batch_pieces``
            last = int(np.searchsorted(cumulative[bounds], cumulative[bounds[first]] + batch_pieces, side="right")) - 1
            last = max(last, first + 1)
            last = min(last, shards)
            rows = order[bounds[first] : bounds[last]]
            writer.batch(first, last, shard_of[bounds[first] : bounds[last]], digests[rows], places[rows], bounds)
            progress(f"  shards {first:x} … {last - 1:x} written")
            first = last
    manifest = out_dir / MANIFEST
    manifest.write_bytes(
        canonical_bytes(
            {
                "kind": MANIFEST_KIND,
                "format": 1,
                "snapshot_id": h["snapshot_id"],
                "prefix_digits": digits,
                "shards": writer.hashes,
            }
        )
    )
    return Exported(shards, n, writer.size + manifest.stat().st_size, manifest)


class _Writer:
    def __init__(self, out_dir: Path, f: Reading, digits: int, width: int, tree: np.ndarray) -> None:
        self.out_dir, self.f, self.digits, self.width, self.tree = out_dir, f, digits, width, tree
        self.hashes: dict[str, str] = {}
        self.size = 0
        assets = len(f.assets)
        low_halves = (HASH + 16 * np.arange(assets)[:, None] + np.arange(8, 16)[None, :]).ravel()
        self.columns = None if width == 16 else np.concatenate([np.arange(HASH), low_halves])

    def batch(
        self, first: int, last: int, shard_of: np.ndarray, digests: np.ndarray, places: np.ndarray, bounds: np.ndarray
    ) -> None:
        f, height, assets = self.f, self.f.height, len(self.f.assets)
        has = places != UNUSED
        counts = has.sum(axis=1).astype(np.uint8)
        clear = np.zeros((len(places), 1 + 4 * MAX_PIECES), dtype=np.uint8)
        clear[:, 0] = counts
        clear[:, 1:] = places.astype(">u4").view(np.uint8).reshape(len(places), 4 * MAX_PIECES)
        entries = np.concatenate([digests[:, :16], clear ^ digests[:, 16:33]], axis=1)
        # every piece as (shard << 32 | place), sorted: each level's nodes are then sorted too
        piece_shard = np.repeat(shard_of.astype(np.uint64), MAX_PIECES).reshape(-1, MAX_PIECES)[has]
        keys = np.sort((piece_shard << np.uint64(32)) | places[has].astype(np.uint64))
        low = np.uint64(0xFFFFFFFF)
        per_level = []
        for level in range(height):
            nodes = (keys >> np.uint64(32) << np.uint64(32)) | ((keys & low) >> np.uint64(level))
            nodes = nodes[np.concatenate([[True], nodes[1:] != nodes[:-1]])] if len(nodes) else nodes
            siblings = np.sort(nodes ^ np.uint64(1))
            size = 32 + 16 * assets
            start = level_offset(height, level, assets)
            level_records = self.tree[start : start + (size << (height - level))].reshape(-1, size)
            rows = (siblings & low).astype(np.intp)
            # one gather from the mapped file: the hash and, with 8-byte sums, each u128's low half
            records = level_records[rows] if self.columns is None else level_records[np.ix_(rows, self.columns)]
            cut = np.searchsorted(siblings >> np.uint64(32), np.arange(first, last + 1, dtype=np.uint64))
            per_level.append((siblings, records, cut))
        for shard in range(first, last):
            prefix = f"{shard:0{self.digits}x}"
            mine = slice(int(bounds[shard] - bounds[first]), int(bounds[shard + 1] - bounds[first]))
            parts = [entries[mine].tobytes()]
            counts_per_level = []
            for siblings, records, cut in per_level:
                a, b = int(cut[shard - first]), int(cut[shard - first + 1])
                counts_per_level.append(b - a)
                parts.append((siblings[a:b] & low).astype(">u4").tobytes())
                parts.append(records[a:b].tobytes())
            header = canonical_bytes(
                {
                    "kind": SHARD_KIND,
                    "format": 1,
                    "snapshot_id": f.snapshot_id.hex(),
                    "assets": f.assets,
                    "height": height,
                    "prefix": prefix,
                    "entries": mine.stop - mine.start,
                    "sums_width": self.width,
                    "nodes": counts_per_level,
                }
            )
            body = len(header).to_bytes(4, "big") + header + b"".join(parts)
            (self.out_dir / f"{prefix}.bin").write_bytes(body)
            self.hashes[prefix] = hashlib.sha256(body).hexdigest()
            self.size += len(body)


# -- the customer's side ------------------------------------------------------------------------------------
def shard_name(account_id: str, salt: bytes, digits: int) -> str:
    return shard_digest(account_hash(account_id, salt))[:16].hex()[:digits] + ".bin"


def check_manifest(manifest_raw: bytes, name: str, shard: bytes) -> None:
    doc: Any = parse_canonical(manifest_raw)
    if not isinstance(doc, dict) or doc.get("kind") != MANIFEST_KIND or doc.get("format") != 1:
        raise ProofInvalid("not a manifest of proof shards")
    want = doc["shards"].get(name.removesuffix(".bin"))
    if want != hashlib.sha256(shard).hexdigest():
        raise ProofInvalid(f"the shard {name} is not the one the manifest lists: its SHA-256 differs")


def proof_from_shard(shard: bytes, account_id: str, salt: bytes, totals: tuple[int, ...]) -> SplitProof:
    """The customer's format 2 proof, rebuilt from their shard: each piece's siblings, and its shares as the
    statement's ``totals`` minus them. Verify it with ``custody por verify --proof``."""
    try:
        length = int.from_bytes(shard[:4], "big")
        header = json.loads(shard[4 : 4 + length])
        height, assets, width = header["height"], len(header["assets"]), header["sums_width"]
        at = 4 + length
        entries = np.frombuffer(shard, dtype=np.uint8, count=ENTRY * header["entries"], offset=at)
        entries = entries.reshape(-1, ENTRY)
        at += ENTRY * header["entries"]
        levels = []
        for count in header["nodes"]:
            indices = np.frombuffer(shard, dtype=">u4", count=count, offset=at)
            at += 4 * count
            levels.append((indices, at, HASH + width * assets))
            at += count * (HASH + width * assets)
    except (ValueError, KeyError, TypeError):
        raise ProofInvalid("not a proof shard") from None
    acct = account_hash(account_id, salt)
    d = np.frombuffer(shard_digest(acct)[:33], dtype=np.uint8)
    keys = entries[:, :16]
    row = next((i for i in _candidates(keys, d[:16]) if bytes(keys[i]) == d[:16].tobytes()), None)
    if row is None:
        raise ProofInvalid(f"no entry for {account_id!r} with this proof key in the shard")
    clear = (entries[row, 16:] ^ d[16:33]).tobytes()
    count = clear[0]
    places = [int.from_bytes(clear[1 + 4 * j : 5 + 4 * j], "big") for j in range(min(count, MAX_PIECES))]
    pieces = []
    for place in places:
        path = []
        for level, (indices, start, size) in enumerate(levels[:height]):
            node = (place >> level) ^ 1
            i = int(np.searchsorted(indices, node))
            if i >= len(indices) or int(indices[i]) != node:
                raise ProofInvalid(f"the shard lacks the node {node} of level {level}")
            raw = shard[start + i * size : start + (i + 1) * size]
            sums = tuple(int.from_bytes(raw[HASH + width * a : HASH + width * (a + 1)], "big") for a in range(assets))
            path.append(Sibling(raw[:HASH], sums))
        shares = tuple(t - sum(s.sums[a] for s in path) for a, t in enumerate(totals))
        if any(s < 0 for s in shares):
            raise ProofInvalid("the shard's sums exceed the statement's totals")
        pieces.append(PieceProof(place, shares, tuple(path)))
    balances = tuple(sum(p.shares[a] for p in pieces) for a in range(assets))
    return SplitProof(bytes.fromhex(header["snapshot_id"]), account_id, salt, balances, tuple(pieces))


def _candidates(keys: np.ndarray, wanted: np.ndarray) -> range:
    """Entries are sorted by their first 8 bytes (ties, one in 2^64 per pair, in any order): binary search on
    those, then compare the whole key."""
    first = keys[:, :8].copy().view(">u8").ravel()
    value = np.frombuffer(wanted[:8].tobytes(), dtype=">u8")[0]
    return range(int(np.searchsorted(first, value, "left")), int(np.searchsorted(first, value, "right")))
