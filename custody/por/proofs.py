"""Per-account proofs: the indexed proofs file every proof is cut from, and the one-account proof format.

The indexed file (``proofs.bin``, private to the exchange: it holds every account's salt and balances):

    bytes 0 … 4095     header: canonical JSON, padded with spaces
                       {"kind": "custody-por-proofs", "format": 1, "snapshot_id", "assets", "height",
                        "accounts", "sections": {"tree": [offset, length], "salts": …, "ids": …, "offsets": …}}
    tree               every level, leaves first; level l holds 2^(height-l) records of hash (32 bytes) ‖ one
                       u128 big-endian sum per asset
    salts              32 bytes per account, in leaf order
    ids                the account ids, UTF-8, joined; ``offsets`` (u64 little-endian, accounts + 1 of them)
                       says where each starts

A one-account proof (``custody por proof ACCOUNT_ID``), canonical JSON, what a customer checks:

    {"kind": "custody-por-proof", "format": 1, "snapshot_id": "<64 hex>", "account_id": "…", "index": 5,
     "salt": "<64 hex>", "balances": {"ETH": "<base units>", …},
     "path": [{"hash": "<64 hex>", "sums": {"ETH": "<base units>", …}}, …]}      (siblings, leaf level first)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from custody.errors import ProofInvalid
from custody.por.tree import HASH, Accounts, Sibling, record_size
from policies.bundle import read_document
from policies.canonical import canonical_bytes
from policies.errors import CustodyError
from policies.loader import Reader
from policies.units import parse_base_units

HEADER = 4096
PROOF_KIND = "custody-por-proof"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def level_offset(height: int, level: int, assets: int) -> int:
    """Where level ``level`` starts inside the tree section: all lower levels come before it."""
    return record_size(assets) * ((1 << (height + 1)) - (1 << (height + 1 - level)))


class ProofsFile:
    """Writes the indexed file; the tree builder hands it each level as it is made (``write_level``)."""

    def __init__(self, path: Path, acc: Accounts, assets: list[str], height: int) -> None:
        self.path, self.height, self.assets = path, height, assets
        tree_len = level_offset(height, height + 1, len(assets))
        sections: dict[str, list[int]] = {}
        at = HEADER
        for name, length in (
            ("tree", tree_len),
            ("salts", len(acc.salts)),
            ("ids", len(acc.ids)),
            ("offsets", 8 * (acc.count + 1)),
        ):
            sections[name] = [at, length]
            at += length
        self.sections = sections
        header = canonical_bytes(
            {
                "kind": "custody-por-proofs",
                "format": 1,
                "snapshot_id": acc.snapshot_id.hex(),
                "assets": assets,
                "height": height,
                "accounts": acc.count,
                "sections": sections,
            }
        )
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.fd, at)
        os.pwrite(self.fd, header.ljust(HEADER), 0)
        os.pwrite(self.fd, acc.salts, sections["salts"][0])
        os.pwrite(self.fd, acc.ids, sections["ids"][0])
        os.pwrite(self.fd, acc.offsets.astype("<u8").tobytes(), sections["offsets"][0])

    def write_level(self, level: int, start: int, records: bytes) -> None:
        at = self.sections["tree"][0] + level_offset(self.height, level, len(self.assets))
        os.pwrite(self.fd, records, at + start * record_size(len(self.assets)))

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


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


def extract(path: Path, account_id: str) -> tuple[AccountProof, list[str]]:
    """Cut one account's proof out of the indexed file."""
    with open(path, "rb") as f:
        header = json.loads(f.read(HEADER))
        assets, height, sections = header["assets"], header["height"], header["sections"]
        ids_at, ids_len = sections["ids"]
        f.seek(ids_at)
        ids = f.read(ids_len)
        f.seek(sections["offsets"][0])
        offsets = np.frombuffer(f.read(sections["offsets"][1]), dtype="<u8")
        wanted = account_id.encode()
        index = _find(ids, offsets, wanted)
        f.seek(sections["salts"][0] + 32 * index)
        salt = f.read(32)
        size = record_size(len(assets))

        def record(level: int, i: int) -> tuple[bytes, tuple[int, ...]]:
            f.seek(sections["tree"][0] + level_offset(height, level, len(assets)) + i * size)
            raw = f.read(size)
            sums = tuple(int.from_bytes(raw[HASH + 16 * a : HASH + 16 * a + 16], "big") for a in range(len(assets)))
            return raw[:HASH], sums

        balances = record(0, index)[1]
        siblings = tuple(Sibling(*record(level, (index >> level) ^ 1)) for level in range(height))
    snapshot = bytes.fromhex(header["snapshot_id"])
    return AccountProof(snapshot, account_id, index, salt, balances, siblings), assets


def _find(ids: bytes, offsets: np.ndarray, wanted: bytes) -> int:
    at = ids.find(wanted)
    while at != -1:
        i = int(np.searchsorted(offsets, at, side="right")) - 1
        if int(offsets[i]) == at and int(offsets[i + 1]) == at + len(wanted):
            return i
        at = ids.find(wanted, at + 1)
    raise ProofInvalid(f"no account {wanted.decode()!r} in this snapshot")


def parse_proof(raw: bytes, assets: list[str]) -> AccountProof:
    """Strictly: unknown fields, missing assets or numbers written another way are refused."""
    fields = {"snapshot_id", "account_id", "index", "salt", "balances", "path"}
    doc: dict[str, Any] = read_document(raw, PROOF_KIND, fields, ProofInvalid)
    r = Reader(human=False)
    try:
        proof = AccountProof(
            snapshot_id=bytes.fromhex(r.text(doc["snapshot_id"], "snapshot_id", _HEX64, "snapshot id")),
            account_id=r.text(doc["account_id"], "account_id"),
            index=r.count(doc["index"], "index", 0, 2**53),
            salt=bytes.fromhex(r.text(doc["salt"], "salt", _HEX64, "salt")),
            balances=_sums(r, doc["balances"], "balances", assets),
            path=tuple(
                Sibling(
                    bytes.fromhex(r.text(item["hash"], f"path[{i}].hash", _HEX64, "hash")),
                    _sums(r, item["sums"], f"path[{i}].sums", assets),
                )
                for i, item in enumerate(r.array(doc["path"], "path"))
                if r.table(item, f"path[{i}]", {"hash", "sums"})
            ),
        )
    except CustodyError as exc:
        raise ProofInvalid(f"not a valid proof file: {exc.message}") from None
    if proof.to_bytes(assets) != raw:
        raise ProofInvalid("the proof file is not in canonical form")
    return proof


def _sums(r: Reader, value: Any, path: str, assets: list[str]) -> tuple[int, ...]:
    table = r.table(value, path, set(assets))
    try:
        return tuple(parse_base_units(table[a]) for a in assets)
    except CustodyError as exc:
        raise ProofInvalid(f"{path}: {exc.message}") from None
