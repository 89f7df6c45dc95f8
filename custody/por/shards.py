"""``custody por export-proofs``: every customer's proof as static files (entry shards, the tree in subtree files,
and a manifest of their SHA-256 hashes); and the customer's side, rebuilding their own proof from those files
(docs/proof-of-reserves.md, "Publishing every proof").

A customer finds their entry by a key only they (and the exchange) can compute, from their account id and salt
(the salt is their "proof key" for the snapshot, which the exchange shows them):

    account hash = SHA-256(account id ‖ salt)                       as in the tree
    d            = SHA-512("custody-por-shard" ‖ account hash)
    lookup key   = d[0:16]; entry shard = the first ``prefix_digits`` hex digits of the lookup key
    entry        = lookup key ‖ (pieces (u8) ‖ 4 × place (u32 big-endian, 0xFFFFFFFF past the pieces)) XOR d[16:33]

The entry gives the places of the account's pieces; their paths are read from the tree, published once in
pieces of ``subtree_levels`` levels. Every file starts with a u32 big-endian length and a canonical JSON header
(``kind``, ``format`` 2, ``snapshot_id`` and the file's own fields); after it, all integers big-endian:

    entries/<prefix>.bin   "entries" × 33 bytes, sorted by lookup key
    tree/<j>.bin           subtree j (j in hex, ``height - subtree_levels`` bits): for each level l below
                           ``subtree_levels``, its 2^(subtree_levels - l) nodes, those of leaves j·2^s … onwards
    tree/top.bin           every node of the levels ``subtree_levels`` … height - 1
    node record            hash (32) ‖ one sum per asset, ``sums_width`` bytes each: 8 when every liability
                           total is below 2^64, else 16

A piece's shares are its own leaf record's sums; the leaf hash, which commits to them, must still lead to the
root. The manifest (``manifest.json``, canonical JSON) lists every file with its SHA-256; a customer's reader
checks each file it opens against it.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from custody.errors import ProofInvalid
from custody.por.proofs import PieceProof, Reading, SplitProof, level_offset
from custody.por.split import MAX_PIECES, UNUSED
from custody.por.tree import HASH, U64, Sibling, account_hash
from policies.canonical import canonical_bytes, parse_canonical
from policies.errors import CustodyError

SHARD_KIND, MANIFEST_KIND = "custody-por-shard", "custody-por-shards"
FORMAT = 2
MANIFEST = "manifest.json"
DOMAIN = b"custody-por-shard"
ENTRY = 16 + 1 + 4 * MAX_PIECES
SUBTREE_LEVELS = 13  # 2^14 records a subtree file: about 1 MiB with 4 assets


def shard_digest(acct_hash: bytes) -> bytes:
    return hashlib.sha512(DOMAIN + acct_hash).digest()


def default_prefix_digits(accounts: int) -> int:
    """Hex digits of the entry shards' names: at most about 4096 accounts a shard (4096 shards of about 80 KB
    at 10 million accounts)."""
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


def entry_rows(digests: np.ndarray, places: np.ndarray) -> np.ndarray:
    """(n, 33) uint8: each account's entry, from its digest and the places of its pieces."""
    clear = np.zeros((len(places), 1 + 4 * MAX_PIECES), dtype=np.uint8)
    clear[:, 0] = (places != UNUSED).sum(axis=1)
    clear[:, 1:] = places.astype(">u4").view(np.uint8).reshape(len(places), 4 * MAX_PIECES)
    return np.concatenate([digests[:, :16], clear ^ digests[:, 16:33]], axis=1)


def _file(header: dict[str, Any], body: bytes) -> bytes:
    raw = canonical_bytes({"kind": SHARD_KIND, "format": FORMAT, **header})
    return len(raw).to_bytes(4, "big") + raw + body


@dataclass(frozen=True)
class Exported:
    shards: int  # entry shards
    tree_files: int
    accounts: int
    bytes: int
    manifest: Path


def export(
    proofs_path: Path,
    out_dir: Path,
    *,
    prefix_digits: int | None = None,
    subtree_levels: int = SUBTREE_LEVELS,
    workers: int = 2,
    progress: Callable[[str], None] = lambda _: None,
) -> Exported:
    """Write the entry shards, the tree files and the manifest into ``out_dir`` (new or empty)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ProofInvalid(f"{out_dir} is not empty: the shards go into a new directory")
    (out_dir / "entries").mkdir(parents=True, exist_ok=True)
    (out_dir / "tree").mkdir(exist_ok=True)
    files: dict[str, str] = {}
    with Reading(proofs_path) as f:
        h = f.header
        if h.get("tree", 1) != 2:
            raise ProofInvalid("only a split tree (statement format 3) can be exported in shards")
        n, height, assets = h["accounts"], h["height"], f.assets
        digits = prefix_digits or default_prefix_digits(n)
        levels = min(subtree_levels, height)
        width = 8 if all(s < U64 for s in f.record(height, 0).sums) else 16
        common = {"snapshot_id": h["snapshot_id"], "assets": assets, "height": height, "sums_width": width}

        progress(f"hashing {n} accounts' lookup keys")
        places = np.frombuffer(f.read("places", 0, 16 * n), dtype="<u4").reshape(n, MAX_PIECES)
        entries = entry_rows(_all_digests(f.read("account_hashes", 0, 32 * n), workers), places)
        keys = entries[:, :8].copy().view(">u8").ravel()
        order = np.argsort(keys, kind="stable")
        entries, keys = entries[order], keys[order]
        shard_of = (keys >> np.uint64(64 - 4 * digits)).astype(np.int64)
        bounds = np.searchsorted(shard_of, np.arange((1 << (4 * digits)) + 1))
        for shard in range(1 << (4 * digits)):
            prefix = f"{shard:0{digits}x}"
            mine = entries[bounds[shard] : bounds[shard + 1]]
            body = _file({**common, "part": "entries", "prefix": prefix, "entries": len(mine)}, mine.tobytes())
            files[f"entries/{prefix}.bin"] = _write(out_dir / "entries" / f"{prefix}.bin", body)
        progress(f"  {len(bounds) - 1} entry shards written")

        size = HASH + 16 * len(assets)
        tree = np.memmap(
            proofs_path, dtype=np.uint8, mode="r", offset=f.sections["tree"][0], shape=(f.sections["tree"][1],)
        )

        low_halves = (HASH + 16 * np.arange(len(assets))[:, None] + np.arange(8, 16)[None, :]).ravel()
        columns = None if width == 16 else np.concatenate([np.arange(HASH), low_halves])

        def records(lv: int, a: int, b: int) -> bytes:
            """Nodes a … b-1 of level ``lv``, their sums cut to ``width`` bytes."""
            start = level_offset(height, lv, len(assets)) + a * size
            rows = tree[start : start + (b - a) * size].reshape(-1, size)
            return (rows if columns is None else rows[:, columns]).tobytes()

        subtrees = 1 << (height - levels)
        name_digits = _tree_digits(height, levels)

        def subtree(j: int) -> tuple[str, str]:
            body = b"".join(records(lv, j << (levels - lv), (j + 1) << (levels - lv)) for lv in range(levels))
            name = f"tree/{j:0{name_digits}x}.bin"
            header = {**common, "part": "subtree", "subtree": j, "subtree_levels": levels}
            return name, _write(out_dir / name, _file(header, body))

        with ThreadPoolExecutor(max(1, workers)) as pool:  # hashlib, numpy copies and writes release the GIL
            for done, (name, digest) in enumerate(pool.map(subtree, range(subtrees)), 1):
                files[name] = digest
                if done % 256 == 0 or done == subtrees:
                    progress(f"  {done} of {subtrees} subtree files written")
        top = b"".join(records(lv, 0, 1 << (height - lv)) for lv in range(levels, height))
        header = {**common, "part": "top", "subtree_levels": levels}
        files["tree/top.bin"] = _write(out_dir / "tree" / "top.bin", _file(header, top))
    manifest = out_dir / MANIFEST
    manifest.write_bytes(
        canonical_bytes(
            {
                "kind": MANIFEST_KIND,
                "format": FORMAT,
                "snapshot_id": h["snapshot_id"],
                "prefix_digits": digits,
                "subtree_levels": levels,
                "files": files,
            }
        )
    )
    written = sum((out_dir / name).stat().st_size for name in files) + manifest.stat().st_size
    return Exported(len(bounds) - 1, subtrees + 1, n, written, manifest)


def _write(path: Path, body: bytes) -> str:
    path.write_bytes(body)
    return hashlib.sha256(body).hexdigest()


# -- the customer's side ------------------------------------------------------------------------------------
class Published:
    """The published files, each read once and checked against the manifest's SHA-256 before it is used."""

    def __init__(self, manifest_raw: bytes, read: Callable[[str], bytes]) -> None:
        try:
            doc: Any = parse_canonical(manifest_raw)
        except (ValueError, CustodyError):
            doc = None
        if not isinstance(doc, dict) or doc.get("kind") != MANIFEST_KIND:
            raise ProofInvalid("not a manifest of proof shards")
        if doc.get("format") != FORMAT:
            raise ProofInvalid(
                f"the shards are of format {doc.get('format')}; this version reads format {FORMAT}: export them again"
            )
        self.digits: int = doc["prefix_digits"]
        self.subtree_levels: int = doc["subtree_levels"]
        self.files: dict[str, str] = doc["files"]
        self.read = read
        self._cache: dict[str, tuple[dict[str, Any], bytes]] = {}

    def file(self, name: str) -> tuple[dict[str, Any], bytes]:
        """A file's header and body, after checking its SHA-256."""
        if name not in self._cache:
            if name not in self.files:
                raise ProofInvalid(f"the manifest lists no {name}")
            raw = self.read(name)
            if hashlib.sha256(raw).hexdigest() != self.files[name]:
                raise ProofInvalid(f"the shard {name} is not the one the manifest lists: its SHA-256 differs")
            try:
                length = int.from_bytes(raw[:4], "big")
                header = json.loads(raw[4 : 4 + length])
            except ValueError:
                raise ProofInvalid(f"{name} is not a proof shard") from None
            self._cache[name] = (header, raw[4 + length :])
        return self._cache[name]


def shard_name(account_id: str, salt: bytes, digits: int) -> str:
    return "entries/" + shard_digest(account_hash(account_id, salt))[:16].hex()[:digits] + ".bin"


def proof_from_shards(published: Published, account_id: str, salt: bytes) -> SplitProof:
    """The customer's format 2 proof, rebuilt from the published files: their entry, then each piece's leaf and
    siblings. Verify it with ``custody por verify --proof``."""
    try:
        return _rebuild(published, account_id, salt)
    except (ValueError, KeyError, TypeError, IndexError):
        raise ProofInvalid("the shards are not well-formed proof shards") from None


def _rebuild(published: Published, account_id: str, salt: bytes) -> SplitProof:
    header, body = published.file(shard_name(account_id, salt, published.digits))
    entries = np.frombuffer(body, dtype=np.uint8, count=ENTRY * header["entries"]).reshape(-1, ENTRY)
    d = np.frombuffer(shard_digest(account_hash(account_id, salt))[:33], dtype=np.uint8)
    row = next((i for i in _candidates(entries[:, :16], d[:16]) if bytes(entries[i, :16]) == d[:16].tobytes()), None)
    if row is None:
        raise ProofInvalid(f"no entry for {account_id!r} with this proof key in the shard")
    clear = (entries[row, 16:] ^ d[16:33]).tobytes()
    places = [int.from_bytes(clear[1 + 4 * j : 5 + 4 * j], "big") for j in range(min(clear[0], MAX_PIECES))]
    height, width, assets = int(header["height"]), int(header["sums_width"]), len(header["assets"])
    levels, size = published.subtree_levels, HASH + width * len(header["assets"])
    digits = _tree_digits(height, levels)

    def record(level: int, node: int) -> Sibling:
        """Node ``node`` of level ``level``: in its subtree's file below ``levels``, in the top file above."""
        if level < levels:
            j = node >> (levels - level)
            body = published.file(f"tree/{j:0{digits}x}.bin")[1]
            at = sum(1 << (levels - k) for k in range(level)) + node - (j << (levels - level))
        else:
            body = published.file("tree/top.bin")[1]
            at = sum(1 << (height - k) for k in range(levels, level)) + node
        raw = body[at * size : (at + 1) * size]
        if len(raw) != size:
            raise ProofInvalid(f"the shards lack the node {node} of level {level}")
        sums = tuple(int.from_bytes(raw[HASH + width * a : HASH + width * (a + 1)], "big") for a in range(assets))
        return Sibling(raw[:HASH], sums)

    pieces = []
    for place in places:
        if place >= 1 << height:
            raise ProofInvalid(f"the entry names leaf {place}, outside a tree of height {height}")
        path = tuple(record(level, (place >> level) ^ 1) for level in range(height))
        pieces.append(PieceProof(place, record(0, place).sums, path))
    balances = tuple(sum(p.shares[a] for p in pieces) for a in range(assets))
    return SplitProof(bytes.fromhex(header["snapshot_id"]), account_id, salt, balances, tuple(pieces))


def _tree_digits(height: int, levels: int) -> int:
    """Hex digits of the subtree files' names."""
    return max(1, math.ceil((height - levels) / 4))


def _candidates(keys: np.ndarray, wanted: np.ndarray) -> range:
    """Entries are sorted by their first 8 bytes (ties, one in 2^64 per pair, in any order): binary search on
    those, then compare the whole key."""
    first = keys[:, :8].copy().view(">u8").ravel()
    value = np.frombuffer(wanted[:8].tobytes(), dtype=">u8")[0]
    return range(int(np.searchsorted(first, value, "left")), int(np.searchsorted(first, value, "right")))
