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

import functools
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from custody.errors import ProofInvalid
from custody.por.digests import digest_rows
from custody.por.proofs import ENTRY, PieceProof, Reading, SplitProof, level_offset, sorted_entries
from custody.por.split import MAX_PIECES
from custody.por.tree import HASH, U64, Sibling, account_hash, first_u64, forked
from policies.canonical import canonical_bytes, parse_canonical
from policies.errors import CustodyError

SHARD_KIND, MANIFEST_KIND = "custody-por-shard", "custody-por-shards"
FORMAT = 2
MANIFEST = "manifest.json"
DOMAIN = b"custody-por-shard"
SUBTREE_LEVELS = 13  # 2^14 records a subtree file: about 1 MiB with 4 assets


def shard_digest(acct_hash: bytes) -> bytes:
    return hashlib.sha512(DOMAIN + acct_hash).digest()


def default_prefix_digits(accounts: int) -> int:
    """Hex digits of the entry shards' names: at most about 4096 accounts a shard (4096 shards of about 80 KB
    at 10 million accounts)."""
    return 1 if accounts <= 4096 * 16 else min(6, math.ceil(math.log(accounts / 4096, 16)))


def entry_digests(acct_hashes: np.ndarray) -> np.ndarray:
    """(n, ENTRY) uint8: the part of each account's shard digest its entry is made of, lookup key (16) and mask
    (17), from the (n, 32) account hashes."""
    rows = np.empty((len(acct_hashes), len(DOMAIN) + HASH), dtype=np.uint8)
    rows[:, : len(DOMAIN)] = np.frombuffer(DOMAIN, dtype=np.uint8)
    rows[:, len(DOMAIN) :] = acct_hashes
    return digest_rows(rows, "sha512")[:, :ENTRY]


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

        progress(f"reading {n} accounts' entries")
        entries = _entries(f, n)
        keys = first_u64(entries)
        job = _Export(
            out_dir, proofs_path, f.sections["tree"][0], f.width, height, len(assets), levels, width, digits, common,
            entries, keys,
        )  # fmt: skip
        progress(f"writing {1 << (4 * digits)} entry shards and {(1 << (height - levels)) + 1} tree files")
        del entries, keys
    shards, subtrees = 1 << (4 * digits), 1 << (height - levels)
    tasks = [("entry_shard", a, min(a + 256, shards)) for a in range(0, shards, 256)]
    tasks += [("subtree", a, min(a + 64, subtrees)) for a in range(0, subtrees, 64)]
    with forked([functools.partial(job.files, *task) for task in tasks], workers) as each_task:  # independent files
        for done in each_task:
            files.update(done)
            if len(files) % 1024 < len(done):
                progress(f"  {len(files)} of {shards + subtrees + 1} files written")
    files.update(job.files("top", 0, 1))
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
    return Exported(shards, subtrees + 1, n, written, manifest)


def _entries(f: Reading, n: int) -> np.ndarray:
    """(n, ENTRY): every account's entry, sorted, as the snapshot stored them (older files: made here)."""
    if "entries" in f.sections:
        return np.frombuffer(f.read("entries", 0, ENTRY * n), dtype=np.uint8).reshape(n, ENTRY)
    digests = entry_digests(np.frombuffer(f.read("account_hashes", 0, HASH * n), dtype=np.uint8).reshape(n, HASH))
    places = np.frombuffer(f.read("places", 0, 16 * n), dtype="<u4").reshape(n, MAX_PIECES)
    return np.concatenate([*sorted_entries(digests, places)])


@dataclass
class _Export:
    """What the export's workers need (inherited by forking): the sorted entries, and where the tree lies in the
    proofs file. Each file is built in one buffer and written with its SHA-256 taken for the manifest."""

    out_dir: Path
    proofs_path: Path
    tree_at: int
    file_width: int  # of the sums in the proofs file's records
    height: int
    assets: int
    levels: int
    width: int
    digits: int
    common: dict[str, Any]
    entries: np.ndarray  # (n, ENTRY), sorted by lookup key
    keys: np.ndarray  # their first 8 bytes, as uint64

    def files(self, part: str, start: int, stop: int) -> list[tuple[str, str]]:
        """Files ``start`` … ``stop``-1 of one part (entry shards, subtree files, or the top): names and SHA-256."""
        return [getattr(self, part)(i) for i in range(start, stop)]

    def entry_shard(self, shard: int) -> tuple[str, str]:
        prefix = f"{shard:0{self.digits}x}"
        shift = 64 - 4 * self.digits
        start = int(np.searchsorted(self.keys, np.uint64(shard << shift)))
        last = shard + 1 == 1 << (4 * self.digits)
        stop = len(self.keys) if last else int(np.searchsorted(self.keys, np.uint64((shard + 1) << shift)))
        mine = self.entries[start:stop]
        header = {**self.common, "part": "entries", "prefix": prefix, "entries": len(mine)}
        name = f"entries/{prefix}.bin"
        return name, _write(self.out_dir / name, _file(header, mine.tobytes()))

    def subtree(self, j: int) -> tuple[str, str]:
        name = f"tree/{j:0{_tree_digits(self.height, self.levels)}x}.bin"
        header = {**self.common, "part": "subtree", "subtree": j, "subtree_levels": self.levels}
        parts = [(lv, j << (self.levels - lv), (j + 1) << (self.levels - lv)) for lv in range(self.levels)]
        return name, _write(self.out_dir / name, self._body(header, parts))

    def top(self, _: int) -> tuple[str, str]:
        header = {**self.common, "part": "top", "subtree_levels": self.levels}
        parts = [(lv, 0, 1 << (self.height - lv)) for lv in range(self.levels, self.height)]
        return "tree/top.bin", _write(self.out_dir / "tree" / "top.bin", self._body(header, parts))

    def _body(self, header: dict[str, Any], parts: list[tuple[int, int, int]]) -> memoryview:
        """A tree file: its header, then nodes (level, first, stop) of each part, their sums cut to ``width``
        bytes, in one buffer (strided copies, no index arrays)."""
        head = _file(header, b"")
        size, out_size = HASH + self.file_width * self.assets, HASH + self.width * self.assets
        out = np.empty(len(head) + out_size * sum(b - a for _, a, b in parts), dtype=np.uint8)
        out[: len(head)] = np.frombuffer(head, dtype=np.uint8)
        at = len(head)
        with open(self.proofs_path, "rb") as f:
            for lv, a, b in parts:
                f.seek(self.tree_at + level_offset(self.height, lv, self.assets, self.file_width) + a * size)
                rows = np.frombuffer(f.read((b - a) * size), dtype=np.uint8).reshape(b - a, size)
                dst = out[at : at + out_size * (b - a)].reshape(b - a, out_size)
                dst[:, :HASH] = rows[:, :HASH]
                sums = rows[:, HASH:].reshape(b - a, self.assets, self.file_width)[:, :, self.file_width - self.width :]
                dst[:, HASH:].reshape(b - a, self.assets, self.width)[:] = sums
                at += out_size * (b - a)
        return out.data


def _write(path: Path, body: bytes | memoryview) -> str:
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
    first, value = first_u64(keys), first_u64(wanted[None, :])[0]
    return range(int(np.searchsorted(first, value, "left")), int(np.searchsorted(first, value, "right")))
