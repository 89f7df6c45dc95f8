"""The cold wallet as the signers know it: which chain, which Safe, which MultiSendCallOnly, which daemon key.

``custody cold create`` writes this document once the Safe exists and its owners and threshold have been
read back from the chain. Each operator pins it with ``signer cold pin`` after checking it in the ceremony
(their own owner address must be among the owners). From then on ``signer review`` refuses a batch for any
other chain, Safe or MultiSendCallOnly, or one not signed by this daemon key.

    {"kind": "custody-cold-wallet", "format": 2, "chain_id": 31337, "safe": "0x…", "owners": ["0x…", …],
     "threshold": 2, "salt_nonce": "<uint256, decimal>", "multisend": "0x…",
     "daemon_key": "<Ed25519 public key, 64 hex>"}

Nothing in it is taken on the host's word: the parser refuses the file unless ``multisend`` is the canonical
MultiSendCallOnly and ``safe`` is the address the canonical factory gives a Safe set up with exactly these
owners (in this order), this threshold and salt nonce, the canonical fallback handler, no modules and no
guard (``signer.safecontracts``). The owners and threshold pinned are therefore facts, derived offline.

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
from policies.units import parse_base_units
from signer.errors import BatchInvalid, ColdWalletNotCanonical, StateError
from signer.policystate import pin_once
from signer.safecontracts import MULTISEND_CALL_ONLY, safe_address

KIND, FORMAT = "custody-cold-wallet", 2
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ColdWallet:
    chain_id: int
    safe: str
    owners: tuple[str, ...]
    threshold: int
    multisend: str
    daemon_key: str
    salt_nonce: int = 0

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {
                "kind": KIND,
                "format": FORMAT,
                "chain_id": self.chain_id,
                "safe": self.safe,
                "owners": list(self.owners),
                "threshold": self.threshold,
                "salt_nonce": str(self.salt_nonce),
                "multisend": self.multisend,
                "daemon_key": self.daemon_key,
            }
        )


def parse_cold_wallet(raw: bytes) -> ColdWallet:
    fields = {"chain_id", "safe", "owners", "threshold", "salt_nonce", "multisend", "daemon_key"}
    doc = read_document(raw, KIND, fields, BatchInvalid, FORMAT)
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
            salt_nonce=parse_base_units(doc["salt_nonce"]),
        )
    except CustodyError as exc:
        raise BatchInvalid(f"not a valid cold wallet file: {exc.message}") from None
    if not owners:
        raise BatchInvalid("not a valid cold wallet file: owners: at least one owner is needed")
    if wallet.salt_nonce >= 2**256:
        raise BatchInvalid("not a valid cold wallet file: salt_nonce does not fit in a uint256")
    if wallet.to_bytes() != raw:
        raise BatchInvalid("the cold wallet file is not in canonical form")
    check_canonical(wallet)
    return wallet


def check_canonical(wallet: ColdWallet) -> None:
    """Refuse a cold wallet that is not exactly what the canonical Safe 1.4.1 factory makes for its owners."""
    if wallet.multisend != MULTISEND_CALL_ONLY:
        raise ColdWalletNotCanonical(
            f"the cold wallet names {wallet.multisend} as MultiSendCallOnly; the only one this signer accepts is "
            f"the canonical Safe 1.4.1 MultiSendCallOnly {MULTISEND_CALL_ONLY}"
        )
    derived = safe_address(wallet.owners, wallet.threshold, wallet.salt_nonce)
    if derived != wallet.safe:
        raise ColdWalletNotCanonical(
            f"{wallet.safe} is not the Safe the canonical Safe 1.4.1 factory makes for these {len(wallet.owners)} "
            f"owners, threshold {wallet.threshold} and salt nonce {wallet.salt_nonce} (that would be {derived}); "
            "its owners, threshold, fallback handler, modules or guard are not what the file says"
        )


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
