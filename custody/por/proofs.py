"""Per-account proofs: the indexed proofs file every proof is cut from, and the one-account proof formats.

The indexed file (``proofs.bin``, private to the exchange: it holds every account's salt and balances), format 3:

    bytes 0 … 4095     header: canonical JSON, padded with spaces
                       {"kind": "custody-por-proofs", "format": 3, "tree": 1 | 2, "snapshot_id", "assets",
                        "height", "accounts", "leaves", "index_bits", "sums_width": 8 | 16,
                        "sections": {"tree": [offset, length], "salts": …, "ids": …, "offsets": …, "index": …,
                                     "places": …, "account_hashes": …, "entries": … (tree 2 only)}}
    tree               every level, leaves first; level l holds 2^(height-l) records of hash (32 bytes) ‖ one
                       big-endian sum per asset, of ``sums_width`` bytes: 8 when every liability total is below
                       2^64 (as in the published shards), else 16
    salts              32 bytes per account, in file order
    ids                the account ids, UTF-8, joined; ``offsets`` (u64 little-endian, accounts + 1 of them)
                       says where each starts
    index              one u64 little-endian per account, sorted: the first 8 bytes of SHA-256(account id) as
                       an integer, its low ``index_bits`` bits replaced by the account's number. A lookup is a
                       binary search on the memory-mapped section, then the candidate is confirmed (a collision
                       of the remaining bits ruled out) by its salt and account hash: the ids are never read
    places             tree 2: per account, 4 × u32 little-endian, the leaf index of each of its pieces
                       (0xFFFFFFFF past its number of pieces)
    account_hashes     tree 2: per account, SHA-256(id ‖ salt), so that the export need not hash them again
    entries            tree 2: every account's published entry (``shards``: lookup key ‖ masked places, 33 bytes),
                       sorted by lookup key, so that the export need neither hash nor sort them

Format 2 files (no ``sums_width``: 16; no ``entries``) and format 1 files (no index, no places; tree
format 1, read by scanning the ids) are still read.

A one-account proof (``custody por proof ACCOUNT_ID``), canonical JSON, what a customer checks. Format 2, for
the split tree (statement format 3):

    {"kind": "custody-por-proof", "format": 2, "snapshot_id": "<64 hex>", "account_id": "…",
     "salt": "<64 hex>", "balances": {"ETH": "<base units>", …},
     "pieces": [{"index": 5, "shares": {"ETH": "…", …}, "path": [{"hash": "<64 hex>", "sums": {…}}, …]}, …]}
                                                      (pieces in piece order; siblings, leaf level first)

Format 1, for the one-leaf-per-account tree (statement format 2):

    {"kind": "custody-por-proof", "format": 1, "snapshot_id": "<64 hex>", "account_id": "…", "index": 5,
     "salt": "<64 hex>", "balances": {"ETH": "<base units>", …},
     "path": [{"hash": "<64 hex>", "sums": {"ETH": "<base units>", …}}, …]}      (siblings, leaf level first)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from custody.errors import ProofInvalid
from custody.por.split import MAX_PIECES, UNUSED, SplitLeaves
from custody.por.tree import HASH, U64, U128, Accounts, Sibling, first_u64, height_for, record_size
from policies.bundle import read_document
from policies.canonical import canonical_bytes, parse_canonical
from policies.errors import CustodyError
from policies.loader import Reader
from policies.units import parse_base_units

HEADER = 4096
PROOF_KIND = "custody-por-proof"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def level_offset(height: int, level: int, assets: int, width: int = 16) -> int:
    """Where level ``level`` starts inside the tree section: all lower levels come before it."""
    return record_size(assets, width) * ((1 << (height + 1)) - (1 << (height + 1 - level)))


def index_entries(keys: np.ndarray) -> np.ndarray:
    """The sorted index section: each key's low ``index_bits`` (``height_for`` the accounts: enough to number them)
    carry the account number, so one sort of a uint64 array (not an argsort) orders keys and numbers together."""
    bits = height_for(len(keys))
    packed = (keys >> np.uint64(bits) << np.uint64(bits)) | np.arange(len(keys), dtype=np.uint64)
    packed.sort()
    return packed


def _pwrite(fd: int, data: bytes | memoryview, at: int) -> None:
    """All of ``data`` at ``at``: one pwrite writes at most about 2 GiB on Linux (the salts of 67 million
    accounts), and returns how much it wrote."""
    view = memoryview(data).cast("B")
    while view:
        done = os.pwrite(fd, view, at)
        view, at = view[done:], at + done


ENTRY = 16 + 1 + 4 * MAX_PIECES  # a published entry (custody.por.shards): lookup key ‖ masked pieces and places


def entry_rows(digests: np.ndarray, places: np.ndarray) -> np.ndarray:
    """(n, ENTRY) uint8: each account's published entry, from its entry digest and the places of its pieces."""
    clear = np.zeros((len(places), 1 + 4 * MAX_PIECES), dtype=np.uint8)
    clear[:, 0] = (places != UNUSED).sum(axis=1)
    clear[:, 1:] = places.astype(">u4").view(np.uint8).reshape(len(places), 4 * MAX_PIECES)
    return np.concatenate([digests[:, :16], clear ^ digests[:, 16:ENTRY]], axis=1)


def sorted_entries(digests: np.ndarray, places: np.ndarray, chunk: int = 1 << 20) -> Iterator[np.ndarray]:
    """Every account's entry, sorted by lookup key (ties, one in 2^64 per pair, in any order), ``chunk`` rows at a
    time: only the sort keys and the order are ever whole in memory."""
    order = np.argsort(first_u64(digests))
    for start in range(0, len(order), chunk):
        at = order[start : start + chunk]
        yield entry_rows(digests[at], places[at])


class ProofsFile:
    """Writes the indexed file; the tree builder hands it each level as it is made (``write_level``).
    ``keys`` are the accounts' index keys (``tree.Hashing``); ``split`` the pieces of a format 2 tree and
    ``entry_digests`` their entry digests. With ``defer``, only the header is written at first: the other
    sections are written by ``write_sections``, which the snapshot runs while the tree builder's workers work."""

    def __init__(
        self,
        path: Path,
        acc: Accounts,
        assets: list[str],
        height: int,
        keys: np.ndarray,
        split: SplitLeaves | None = None,
        entry_digests: np.ndarray | None = None,
        sums_width: int = 16,
        *,
        defer: bool = False,
    ) -> None:
        self.path, self.height, self.assets, self.sums_width = path, height, assets, sums_width
        bits = height_for(len(keys))  # as index_entries numbers them
        places = np.ascontiguousarray(split.places if split is not None else np.zeros(0), dtype="<u4")
        tree_len = level_offset(height, height + 1, len(assets), sums_width)
        sections: dict[str, list[int]] = {}
        at = HEADER
        for name, length in (
            ("tree", tree_len),
            ("salts", len(acc.salts)),
            ("ids", len(acc.ids)),
            ("offsets", 8 * (acc.count + 1)),
            ("index", 8 * acc.count),
            *((("places", places.nbytes), ("account_hashes", places.nbytes * 2)) if split is not None else ()),
            *((("entries", ENTRY * acc.count),) if entry_digests is not None else ()),
        ):
            sections[name] = [at, length]
            at += length
        self.sections = sections
        header = canonical_bytes(
            {
                "kind": "custody-por-proofs",
                "format": 3,
                "tree": 1 if split is None else 2,
                "sums_width": sums_width,
                "snapshot_id": acc.snapshot_id.hex(),
                "assets": assets,
                "height": height,
                "accounts": acc.count,
                "leaves": acc.count if split is None else split.leaves,
                "index_bits": bits,
                "sections": sections,
            }
        )
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.fd, at)
        _pwrite(self.fd, header.ljust(HEADER), 0)
        self._pending: tuple[Any, ...] | None = (acc, keys, places, split, entry_digests)
        if not defer:
            self.write_sections()

    def write_sections(self) -> None:
        """Every section but the tree: salts, ids, the sorted index, and for a split tree the places, the
        account hashes and the sorted published entries."""
        assert self._pending is not None
        acc, keys, places, split, digests = self._pending
        self._pending = None
        sections = self.sections
        _pwrite(self.fd, acc.salts, sections["salts"][0])
        _pwrite(self.fd, acc.ids, sections["ids"][0])
        _pwrite(self.fd, acc.offsets.astype("<u8").tobytes(), sections["offsets"][0])
        _pwrite(self.fd, np.ascontiguousarray(index_entries(keys), dtype="<u8").data, sections["index"][0])
        if split is not None:  # buffers written as they are: no copy of 10 million accounts' worth
            _pwrite(self.fd, places.data, sections["places"][0])
            _pwrite(self.fd, np.ascontiguousarray(split.account_hashes).data, sections["account_hashes"][0])
        if digests is not None:
            at = sections["entries"][0]
            for rows in sorted_entries(digests, places):
                _pwrite(self.fd, rows.data, at)
                at += rows.nbytes

    def write_level(self, level: int, start: int, records: bytes) -> None:
        at = self.sections["tree"][0] + level_offset(self.height, level, len(self.assets), self.sums_width)
        _pwrite(self.fd, records, at + start * record_size(len(self.assets), self.sums_width))

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


class Reading:
    """An open proofs file: its header, and records, salts and ids read by position (os.pread)."""

    def __init__(self, path: Path) -> None:
        self.file = path
        self.fd = os.open(path, os.O_RDONLY)
        try:
            self._read_header()
        except (ValueError, KeyError, TypeError, AttributeError):
            os.close(self.fd)
            raise ProofInvalid(f"{path} is not a proofs file this version can read") from None
        except ProofInvalid:
            os.close(self.fd)
            raise

    def _read_header(self) -> None:
        h: dict[str, Any] = json.loads(os.pread(self.fd, HEADER, 0))
        self.header = h
        if h.get("kind") != "custody-por-proofs":
            raise ValueError
        fmt = h.get("format")
        width = h.get("sums_width") if fmt == 3 else 16  # format 3 names it; formats 1 and 2 are 16
        if fmt not in (1, 2, 3) or width not in (8, 16) or (fmt != 3 and "sums_width" in h):
            raise ProofInvalid(f"{self.file} is a proofs file of format {fmt}, which this version cannot read")
        self.assets: list[str] = list(h["assets"])
        self.height: int = int(h["height"])
        self.sections: dict[str, list[int]] = dict(h["sections"])
        if os.fstat(self.fd).st_size < max(at + length for at, length in self.sections.values()):
            raise ProofInvalid(f"{self.file} is cut short: it ends before its last section does")
        self.width: int = width
        self.size = record_size(len(self.assets), self.width)
        self.snapshot_id = bytes.fromhex(h["snapshot_id"])

    def __enter__(self) -> Reading:
        return self

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)

    def read(self, section: str, at: int, length: int) -> bytes:
        """``length`` bytes (one pread reads at most about 2 GiB); a file cut short is refused."""
        start, parts = self.sections[section][0] + at, []
        while length > 0:
            part = os.pread(self.fd, length, start)
            if not part:
                raise ProofInvalid(f"{self.file} is cut short: its {section} section ends early")
            parts.append(part)
            start, length = start + len(part), length - len(part)
        return b"".join(parts)

    def record(self, level: int, i: int) -> Sibling:
        at = level_offset(self.height, level, len(self.assets), self.width) + i * self.size
        raw, w = self.read("tree", at, self.size), self.width
        sums = tuple(int.from_bytes(raw[HASH + w * a : HASH + w * (a + 1)], "big") for a in range(len(self.assets)))
        return Sibling(raw[:HASH], sums)

    def path(self, index: int) -> tuple[Sibling, ...]:
        return tuple(self.record(level, (index >> level) ^ 1) for level in range(self.height))

    def account_id(self, i: int) -> bytes:
        start, stop = np.frombuffer(self.read("offsets", 8 * i, 16), dtype="<u8").tolist()
        return self.read("ids", start, stop - start)

    def is_account(self, i: int, wanted: bytes) -> bool:
        """Whether account ``i`` has the id ``wanted``: by its account hash where the file has them (64 bytes
        read), else by its id."""
        if "account_hashes" in self.sections:
            salted = hashlib.sha256(wanted + self.read("salts", 32 * i, 32)).digest()
            return salted == self.read("account_hashes", 32 * i, 32)
        return self.account_id(i) == wanted

    def lookup(self, account_id: str) -> int:
        """The account's number, by the index: a binary search on the memory-mapped section."""
        wanted = account_id.encode()
        if self.header["format"] == 1:
            return _scan(self, wanted)
        count: int = self.header["accounts"]
        bits: int = self.header["index_bits"]
        index = np.memmap(self.file, dtype="<u8", mode="r", offset=self.sections["index"][0], shape=(count,))
        key = int.from_bytes(hashlib.sha256(wanted).digest()[:8], "big") >> bits << bits
        lo = int(np.searchsorted(index, np.uint64(key), side="left"))
        hi = int(np.searchsorted(index, np.uint64(key | ((1 << bits) - 1)), side="right"))
        for packed in index[lo:hi].tolist():
            i = int(packed) & ((1 << bits) - 1)
            if self.is_account(i, wanted):
                return i
        raise ProofInvalid(f"no account {account_id!r} in this snapshot")


def _scan(f: Reading, wanted: bytes) -> int:
    """Format 1 files have no index: find the id in the whole ids section."""
    ids = f.read("ids", 0, f.sections["ids"][1])
    offsets = np.frombuffer(f.read("offsets", 0, f.sections["offsets"][1]), dtype="<u8")
    at = ids.find(wanted)
    while at != -1:
        i = int(np.searchsorted(offsets, at, side="right")) - 1
        if int(offsets[i]) == at and int(offsets[i + 1]) == at + len(wanted):
            return i
        at = ids.find(wanted, at + 1)
    raise ProofInvalid(f"no account {wanted.decode()!r} in this snapshot")


@dataclass(frozen=True)
class AccountProof:
    snapshot_id: bytes
    account_id: str
    index: int
    salt: bytes
    balances: tuple[int, ...]
    path: tuple[Sibling, ...]

    def to_bytes(self, assets: list[str]) -> bytes:
        return canonical_bytes(
            {
                "kind": PROOF_KIND,
                "format": 1,
                "snapshot_id": self.snapshot_id.hex(),
                "account_id": self.account_id,
                "index": self.index,
                "salt": self.salt.hex(),
                "balances": dict(zip(assets, map(str, self.balances), strict=True)),
                "path": [
                    {"hash": s.hash.hex(), "sums": dict(zip(assets, map(str, s.sums), strict=True))} for s in self.path
                ],
            }
        )


@dataclass(frozen=True)
class PieceProof:
    index: int
    shares: tuple[int, ...]
    path: tuple[Sibling, ...]


@dataclass(frozen=True)
class SplitProof:
    """Format 2: the account's pieces, each with its own path; ``balances`` is what the customer compares
    with their account, and the verifier requires the shares to add up to exactly that."""

    snapshot_id: bytes
    account_id: str
    salt: bytes
    balances: tuple[int, ...]
    pieces: tuple[PieceProof, ...]

    def to_bytes(self, assets: list[str]) -> bytes:
        def sums(values: tuple[int, ...]) -> dict[str, str]:
            return dict(zip(assets, map(str, values), strict=True))

        return canonical_bytes(
            {
                "kind": PROOF_KIND,
                "format": 2,
                "snapshot_id": self.snapshot_id.hex(),
                "account_id": self.account_id,
                "salt": self.salt.hex(),
                "balances": sums(self.balances),
                "pieces": [
                    {
                        "index": p.index,
                        "shares": sums(p.shares),
                        "path": [{"hash": s.hash.hex(), "sums": sums(s.sums)} for s in p.path],
                    }
                    for p in self.pieces
                ],
            }
        )


def extract(path: Path, account_id: str) -> tuple[AccountProof | SplitProof, list[str]]:
    """Cut one account's proof out of the indexed file: its number from the index, then its salt, its
    pieces' places and every sibling, each read by position."""
    with Reading(path) as f:
        i = f.lookup(account_id)
        salt = f.read("salts", 32 * i, 32)
        if f.header.get("tree", 1) == 1:
            leaf = f.record(0, i)
            return AccountProof(f.snapshot_id, account_id, i, salt, leaf.sums, f.path(i)), f.assets
        places = [p for p in np.frombuffer(f.read("places", 16 * i, 16), dtype="<u4").tolist() if p != UNUSED]
        pieces = tuple(PieceProof(p, f.record(0, p).sums, f.path(p)) for p in places[:MAX_PIECES])
        balances = tuple(sum(column) for column in zip(*(p.shares for p in pieces), strict=True))
        return SplitProof(f.snapshot_id, account_id, salt, balances, pieces), f.assets


def proof_format(raw: bytes) -> int:
    """The format a proof file says it has (1 when it cannot be read: the strict parser then says why)."""
    try:
        doc = parse_canonical(raw)
    except CustodyError:
        return 1
    fmt = doc.get("format") if isinstance(doc, dict) else None
    return fmt if fmt in (1, 2) else 1


def parse_proof(raw: bytes, assets: list[str]) -> AccountProof | SplitProof:
    """Strictly: unknown fields, missing assets or numbers written another way are refused."""
    proof: AccountProof | SplitProof
    fmt = proof_format(raw)
    common = {"snapshot_id", "account_id", "salt", "balances"}
    fields = common | ({"index", "path"} if fmt == 1 else {"pieces"})
    doc: dict[str, Any] = read_document(raw, PROOF_KIND, fields, ProofInvalid, fmt)
    r = Reader(human=False)
    try:
        snapshot_id = bytes.fromhex(r.text(doc["snapshot_id"], "snapshot_id", _HEX64, "snapshot id"))
        account_id = r.text(doc["account_id"], "account_id")
        salt = bytes.fromhex(r.text(doc["salt"], "salt", _HEX64, "salt"))
        balances = _sums(r, doc["balances"], "balances", assets, U64)
        if fmt == 1:
            index = r.count(doc["index"], "index", 0, 2**53)
            proof = AccountProof(snapshot_id, account_id, index, salt, balances, _path(r, doc["path"], "path", assets))
        else:
            pieces = []
            for j, item in enumerate(r.array(doc["pieces"], "pieces")):
                where = f"pieces[{j}]"
                r.table(item, where, {"index", "shares", "path"})
                pieces.append(
                    PieceProof(
                        r.count(item["index"], f"{where}.index", 0, 2**53),
                        _sums(r, item["shares"], f"{where}.shares", assets, U64),
                        _path(r, item["path"], f"{where}.path", assets),
                    )
                )
            proof = SplitProof(snapshot_id, account_id, salt, balances, tuple(pieces))
    except CustodyError as exc:
        raise ProofInvalid(f"not a valid proof file: {exc.message}") from None
    if proof.to_bytes(assets) != raw:
        raise ProofInvalid("the proof file is not in canonical form")
    return proof


_SIBLING = frozenset({"hash", "sums"})


def _path(r: Reader, value: Any, where: str, assets: list[str]) -> tuple[Sibling, ...]:
    """Siblings, checked as strictly as the rest with the Reader's messages, but without its per-character
    loops on the common, well-formed case: a proof of a 10-million-account tree has about 75 of them."""
    out = []
    for i, item in enumerate(r.array(value, where)):
        if not isinstance(item, dict) or item.keys() != _SIBLING:
            r.table(item, f"{where}[{i}]", set(_SIBLING))
        digest = item["hash"]
        if type(digest) is not str or _HEX64.fullmatch(digest) is None:
            r.text(digest, f"{where}[{i}].hash", _HEX64, "hash")
        out.append(Sibling(bytes.fromhex(digest), _sums(r, item["sums"], f"{where}[{i}].sums", assets)))
    return tuple(out)


def _sums(r: Reader, value: Any, path: str, assets: list[str], bound: int = U128) -> tuple[int, ...]:
    """Per-asset amounts below ``bound``: 2^64 for a balance or share (a leaf hashes it in 8 bytes), 2^128 for
    a sibling's sums."""
    if not isinstance(value, dict) or value.keys() != set(assets):
        r.table(value, path, set(assets))
    try:
        amounts = tuple(parse_base_units(value[a]) for a in assets)
    except CustodyError as exc:
        raise ProofInvalid(f"{path}: {exc.message}") from None
    if any(a >= bound for a in amounts):
        raise ProofInvalid(f"{path}: an amount is not below 2^{bound.bit_length() - 1}")
    return amounts
