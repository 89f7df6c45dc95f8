"""The cold wallet as the signers know it: which chain, which Safe, which MultiSendCallOnly, which daemon key.

``custody cold create`` writes this document once the Safe exists and its owners and threshold have been
read back from the chain. Each operator pins it with ``signer cold pin`` after checking it in the ceremony
(their own owner address must be among the owners). From then on ``signer review`` refuses a batch for any
other chain, Safe or MultiSendCallOnly, or one not signed by this daemon key.

    {"kind": "custody-cold-wallet", "format": 1, "chain_id": 31337, "safe": "0x…", "owners": ["0x…", …],
     "threshold": 2, "multisend": "0x…", "daemon_key": "<Ed25519 public key, 64 hex>"}

Pinned copy: ``<state>/cold-wallet.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from policies.bundle import read_document
from policies.canonical import canonical_bytes
from policies.errors import CustodyError
from policies.loader import Reader
from signer.errors import BatchInvalid, StateError
from signer.policystate import pin_once

KIND = "custody-cold-wallet"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ColdWallet:
    chain_id: int
    safe: str
    owners: tuple[str, ...]
    threshold: int
    multisend: str
    daemon_key: str

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {
                "kind": KIND,
                "format": 1,
                "chain_id": self.chain_id,
                "safe": self.safe,
                "owners": list(self.owners),
                "threshold": self.threshold,
                "multisend": self.multisend,
                "daemon_key": self.daemon_key,
            }
        )


def parse_cold_wallet(raw: bytes) -> ColdWallet:
    doc = read_document(raw, KIND, {"chain_id", "safe", "owners", "threshold", "multisend", "daemon_key"}, BatchInvalid)
    r = Reader(human=False)
    try:
        owners = tuple(r.address(o, f"owners[{i}]") for i, o in enumerate(r.array(doc["owners"], "owners")))
        r.unique(list(owners), lambda o: o, "owners", "owner")
        wallet = ColdWallet(
            chain_id=r.count(doc["chain_id"], "chain_id", 1, 2**53),
            safe=r.address(doc["safe"], "safe"),
            owners=owners,
            threshold=r.count(doc["threshold"], "threshold", 1, max(1, len(owners))),
            multisend=r.address(doc["multisend"], "multisend"),
            daemon_key=r.text(doc["daemon_key"], "daemon_key", _HEX64, "Ed25519 public key"),
        )
    except CustodyError as exc:
        raise BatchInvalid(f"not a valid cold wallet file: {exc.message}") from None
    if not owners:
        raise BatchInvalid("not a valid cold wallet file: owners: at least one owner is needed")
    if wallet.to_bytes() != raw:
        raise BatchInvalid("the cold wallet file is not in canonical form")
    return wallet


def pin(state: Path, raw: bytes) -> ColdWallet:
    """Remember the cold wallet once; a different one later is refused (a new Safe needs a new state)."""
    wallet = parse_cold_wallet(raw)
    pin_once(state, "cold-wallet.json", raw, "cold wallet")
    return wallet


def pinned(state: Path) -> ColdWallet:
    path = state / "cold-wallet.json"
    if not path.exists():
        raise StateError(f"no cold wallet is pinned in {state}: run `signer cold pin COLD-WALLET.json` first")
    return parse_cold_wallet(path.read_bytes())
