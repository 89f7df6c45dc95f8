"""The Bitcoin cold wallet as the signers know it: a P2WSH sorted multisig descriptor over the owners' BIP-48
account keys, and the daemon key that signs its batches.

``custody cold create --chain bitcoin`` writes this document from the owners' cards; each operator pins it with
``signer cold pin`` after checking it in the ceremony (with ``--keystore``, their own account key must be one of
the owners). From then on ``signer review`` refuses a Bitcoin batch for any other network or descriptor, or one
not signed by this daemon key.

    {"kind": "custody-btc-cold-wallet", "format": 1, "network": "regtest", "threshold": 2,
     "owners": [{"name": "alice", "fingerprint": "<8 hex>", "path": "m/48h/1h/0h/2h", "xpub": "tpub…"}, …],
     "descriptor": "wsh(sortedmulti(2,[<fp>/48h/1h/0h/2h]tpub…/<0;1>/*,…))#<checksum>",
     "daemon_key": "<Ed25519 public key, 64 hex>"}

Nothing in it is taken on the host's word: the descriptor is rebuilt from the owners (in the file's order) and
the threshold, with its BIP-380 checksum, and must be identical; every xpub must be a BIP-48 account key written
for the network's family (xpub on mainnet, tpub otherwise) at the path m/48h/<coin>h/0h/2h; no key, fingerprint
or name twice; 1 <= threshold <= owners <= 20 (Bitcoin Core's limit for multi() in wsh()).

The scripts: at ``branch`` (0 receive, 1 change) and ``index``, each owner's key is ``xpub/branch/index``; the
witness script is ``OP_M <keys sorted by their bytes> OP_N OP_CHECKMULTISIG`` (sortedmulti, BIP-67 order) and
the output script ``OP_0 <SHA-256 of the witness script>``.

Pinned copy: ``<state>/btc-cold-wallet.json``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from embit.descriptor.checksum import checksum

from policies.canonical import canonical_bytes, parse_canonical
from policies.errors import CustodyError
from policies.loader import Reader
from signer.btckeys import BitcoinKey, account_path, check_network, child_pubkey, parse_xpub
from signer.errors import BtcDescriptorMismatch, BtcWalletInvalid, StateError
from signer.policystate import pin_once

KIND, FORMAT = "custody-btc-cold-wallet", 1
PINNED = "btc-cold-wallet.json"
MAX_OWNERS = 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT = re.compile(r"[0-9a-f]{8}")
OP_0, OP_CHECKMULTISIG = 0x00, 0xAE


@dataclass(frozen=True, slots=True)
class BtcOwner:
    name: str
    key: BitcoinKey

    def body(self) -> dict[str, str]:
        return {"name": self.name, "fingerprint": self.key.fingerprint, "path": self.key.path, "xpub": self.key.xpub}


@dataclass(frozen=True, slots=True)
class BtcColdWallet:
    network: str
    threshold: int
    owners: tuple[BtcOwner, ...]
    descriptor: str
    daemon_key: str

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {
                "kind": KIND,
                "format": FORMAT,
                "network": self.network,
                "threshold": self.threshold,
                "owners": [o.body() for o in self.owners],
                "descriptor": self.descriptor,
                "daemon_key": self.daemon_key,
            }
        )

    @property
    def checksum(self) -> str:
        return self.descriptor.rsplit("#", 1)[1]

    def account_keys(self) -> tuple[BitcoinKey, ...]:
        return tuple(o.key for o in self.owners)

    def witness_script(self, branch: int, index: int) -> bytes:
        return witness_script(self.network, self.threshold, self.account_keys(), branch, index)

    def script_pubkey(self, branch: int, index: int) -> bytes:
        return p2wsh(self.witness_script(branch, index))


def descriptor_text(network: str, threshold: int, owners: Sequence[BitcoinKey]) -> str:
    """The wallet's descriptor with its BIP-380 checksum, the keys in the order given:
    ``wsh(sortedmulti(M,[fp/48h/1h/0h/2h]tpub…/<0;1>/*,…))#xxxxxxxx``. Raises BtcWalletInvalid for keys that
    are not this network's BIP-48 accounts or a threshold out of range."""
    check_keys(network, threshold, owners)
    keys = ",".join(f"{k.origin()}{k.xpub}/<0;1>/*" for k in owners)
    body = f"wsh(sortedmulti({threshold},{keys}))"
    return f"{body}#{checksum(body)}"


def make_btc_cold_wallet(
    network: str, threshold: int, owners: Sequence[tuple[str, BitcoinKey]], daemon_key: str
) -> BtcColdWallet:
    """The wallet of these (name, account key) owners, in this order, with its descriptor; its ``to_bytes()`` is
    the file ``signer cold pin`` accepts (checked here by parsing it back)."""
    keys = [k for _, k in owners]
    wallet = BtcColdWallet(
        network,
        threshold,
        tuple(BtcOwner(n, k) for n, k in owners),
        descriptor_text(network, threshold, keys),
        daemon_key,
    )
    return parse_btc_cold_wallet(wallet.to_bytes())


def check_keys(network: str, threshold: int, owners: Sequence[BitcoinKey]) -> None:
    try:
        check_network(network)
        for i, key in enumerate(owners):
            if _FINGERPRINT.fullmatch(key.fingerprint) is None:
                raise BtcWalletInvalid(f"owners[{i}].fingerprint: must be 8 lowercase hex digits")
            if key.path != account_path(network):
                raise BtcWalletInvalid(
                    f"owners[{i}].path: {key.path[:40]!r} is not the {network} multisig account {account_path(network)}"
                )
            parse_xpub(key.xpub, network)
    except BtcWalletInvalid:
        raise
    except CustodyError as exc:
        raise BtcWalletInvalid(f"not a valid Bitcoin cold wallet: {exc.message}") from None
    if not 1 <= len(owners) <= MAX_OWNERS:
        raise BtcWalletInvalid(f"a Bitcoin cold wallet has 1 to {MAX_OWNERS} owners, not {len(owners)}")
    if not 1 <= threshold <= len(owners):
        raise BtcWalletInvalid(f"threshold {threshold} is not between 1 and the {len(owners)} owners")
    for what, values in (("xpub", [k.xpub for k in owners]), ("fingerprint", [k.fingerprint for k in owners])):
        if len(set(values)) != len(values):
            raise BtcWalletInvalid(f"an owner's {what} appears twice: each key counts once")


def witness_script(network: str, threshold: int, keys: Sequence[BitcoinKey], branch: int, index: int) -> bytes:
    """``OP_M <sorted keys> OP_N OP_CHECKMULTISIG`` at ``branch/index`` of every key (module docstring)."""
    pubkeys = sorted(derived_pubkey(network, k.xpub, branch, index) for k in keys)
    return (
        bytes([0x50 + threshold])
        + b"".join(bytes([33]) + pk for pk in pubkeys)
        + bytes([0x50 + len(pubkeys), OP_CHECKMULTISIG])
    )


def p2wsh(script: bytes) -> bytes:
    return bytes([OP_0, 32]) + hashlib.sha256(script).digest()


@cache
def _account(network: str, xpub: str) -> Any:
    return parse_xpub(xpub, network)


@cache
def derived_pubkey(network: str, xpub: str, branch: int, index: int) -> bytes:
    """``xpub/branch/index``'s compressed public key (cached: a review derives each key several times)."""
    return child_pubkey(_account(network, xpub), branch, index)


def parse_btc_cold_wallet(raw: bytes) -> BtcColdWallet:
    """The cold wallet file, every rule of the module docstring checked; BtcWalletInvalid or
    BtcDescriptorMismatch otherwise."""
    r = Reader(human=False)
    try:
        doc = parse_canonical(raw)
        r.table(doc, "", {"kind", "format", "network", "threshold", "owners", "descriptor", "daemon_key"})
        if doc["kind"] != KIND:
            raise BtcWalletInvalid(f"this is a {str(doc['kind'])[:40]!r} file, not a {KIND}")
        if doc["format"] != FORMAT:
            raise BtcWalletInvalid(f"unsupported {KIND} format {doc['format']!r}")
        network = check_network(r.text(doc["network"], "network"))
        owners = tuple(_owner(r, o, f"owners[{i}]") for i, o in enumerate(r.array(doc["owners"], "owners")))
        threshold = r.count(doc["threshold"], "threshold", 0, 2**53)
        descriptor = r.typed(doc["descriptor"], str, "descriptor")
        daemon_key = r.text(doc["daemon_key"], "daemon_key", _HEX64, "Ed25519 public key")
    except BtcWalletInvalid:
        raise
    except CustodyError as exc:
        raise BtcWalletInvalid(f"not a valid Bitcoin cold wallet file: {exc.message}") from None
    names = [o.name for o in owners]
    if len(set(names)) != len(names):
        raise BtcWalletInvalid("an owner's name appears twice")
    expected = descriptor_text(network, threshold, [o.key for o in owners])
    if descriptor != expected:
        raise BtcDescriptorMismatch(
            f"the file's descriptor is not the one rebuilt from its {len(owners)} owners and threshold {threshold} "
            f"(that would be {expected[:60]}…#{expected.rsplit('#', 1)[1]})"
        )
    wallet = BtcColdWallet(network, threshold, owners, descriptor, daemon_key)
    if wallet.to_bytes() != raw:
        raise BtcWalletInvalid("the Bitcoin cold wallet file is not in canonical form")
    return wallet


def _owner(r: Reader, value: Any, path: str) -> BtcOwner:
    o = r.table(value, path, {"name", "fingerprint", "path", "xpub"})
    return BtcOwner(
        name=r.label(o["name"], f"{path}.name"),
        key=BitcoinKey(
            fingerprint=r.text(o["fingerprint"], f"{path}.fingerprint", _FINGERPRINT, "fingerprint"),
            path=r.typed(o["path"], str, f"{path}.path"),
            xpub=r.typed(o["xpub"], str, f"{path}.xpub"),
        ),
    )


def is_btc_wallet_file(raw: bytes) -> bool:
    """Whether ``raw`` says it is a Bitcoin cold wallet file (to pick the parser; the parser judges the rest)."""
    try:
        doc = parse_canonical(raw)
    except CustodyError:
        return False
    return isinstance(doc, dict) and doc.get("kind") == KIND


def pin(state: Path, raw: bytes) -> BtcColdWallet:
    """Remember the Bitcoin cold wallet once; a different one later is refused (a new wallet needs a new state)."""
    wallet = parse_btc_cold_wallet(raw)
    pin_once(state, PINNED, raw, "Bitcoin cold wallet")
    return wallet


def pinned(state: Path) -> BtcColdWallet:
    path = state / PINNED
    if not path.exists():
        raise StateError(
            f"no Bitcoin cold wallet is pinned in {state}: run `signer cold pin BTC-COLD-WALLET.json` first"
        )
    return parse_btc_cold_wallet(path.read_bytes())


def pinned_or_none(state: Path) -> BtcColdWallet | None:
    return pinned(state) if (state / PINNED).exists() else None
