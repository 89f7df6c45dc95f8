"""An operator's key: a BIP-39 seed, sealed at rest, and the public card derived from it.

From the one seed come:
- the Ethereum owner key, BIP-44 m/44'/60'/0'/0/0 (a Safe owner; signs SafeTx hashes);
- the Ed25519 approval key, SLIP-10 m/10117'/0'/0' (signs policy bundles);
- the fingerprint, the BIP-32 master key fingerprint, so operators can tell keys apart on paper.

Keystore file, canonical JSON:

    {"kind": "custody-signer-keystore", "format": 1,
     "card": {"name": ..., "fingerprint": "<8 hex>", "owner_address": "0x…", "approval_key": "<64 hex>"},
     "sealed_seed": <signer.sealed document, label "bip39-seed">}
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from bip_utils import (
    Bip32Secp256k1,
    Bip32Slip10Ed25519,
    Bip39MnemonicGenerator,
    Bip39MnemonicValidator,
    Bip39SeedGenerator,
    Bip44,
    Bip44Changes,
    Bip44Coins,
)
from bip_utils.utils.mnemonic.mnemonic_ex import MnemonicChecksumError
from nacl.signing import SigningKey

from policies.canonical import canonical_bytes, parse_canonical
from policies.errors import CustodyError
from signer.errors import KeystoreDamaged, MnemonicInvalid
from signer.sealed import SCRYPT_N, open_sealed, seal

APPROVAL_PATH = "m/10117'/0'/0'"
SEED_LABEL = "bip39-seed"


@dataclass(frozen=True, slots=True)
class KeyCard:
    """The public half, safe to hand to the daemon and to other operators."""

    name: str
    fingerprint: str
    owner_address: str
    approval_key: str

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "owner_address": self.owner_address,
            "approval_key": self.approval_key,
        }


@dataclass(frozen=True, slots=True)
class Keystore:
    card: KeyCard
    sealed_seed: bytes


class UnlockedKey:
    """A seed in memory, for as short a time as a ceremony step needs it."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed

    def __repr__(self) -> str:  # never show key material, even in a traceback
        return "UnlockedKey(<secret>)"

    def approval_key(self) -> SigningKey:
        node = Bip32Slip10Ed25519.FromSeed(self._seed).DerivePath(APPROVAL_PATH)
        return SigningKey(node.PrivateKey().Raw().ToBytes())

    def owner_private_key(self) -> bytes:
        return bytes(_owner_node(self._seed).PrivateKey().Raw().ToBytes())

    def card(self, name: str) -> KeyCard:
        return KeyCard(
            name=name,
            fingerprint=Bip32Secp256k1.FromSeed(self._seed).FingerPrint().ToHex(),
            owner_address=_owner_node(self._seed).PublicKey().ToAddress(),
            approval_key=self.approval_key().verify_key.encode().hex(),
        )


def _owner_node(seed: bytes) -> Any:
    return (
        Bip44.FromSeed(seed, Bip44Coins.ETHEREUM)
        .Purpose()
        .Coin()
        .Account(0)
        .Change(Bip44Changes.CHAIN_EXT)
        .AddressIndex(0)
    )


def new_mnemonic(extra_entropy: bytes = b"") -> str:
    """24 words from the OS's randomness, mixed with anything the operator adds (dice rolls).

    Mixing by hashing means added entropy can only help: the result is at least as unpredictable as
    the OS's 32 bytes alone.
    """
    entropy = hashlib.sha256(os.urandom(32) + extra_entropy).digest()
    return str(Bip39MnemonicGenerator().FromEntropy(entropy))


def seed_from_mnemonic(mnemonic: str, bip39_passphrase: str = "") -> bytes:
    words = " ".join(mnemonic.split())
    try:
        Bip39MnemonicValidator().Validate(words)
    except MnemonicChecksumError:
        raise MnemonicInvalid("the mnemonic's checksum is wrong: a word is missing, extra or mistyped") from None
    except ValueError as exc:
        raise MnemonicInvalid(f"not a BIP-39 mnemonic: {_safe_reason(exc)}") from None
    return bytes(Bip39SeedGenerator(words).Generate(bip39_passphrase))


def _safe_reason(exc: Exception) -> str:
    # bip-utils names the offending word; a word is part of the secret, so never repeat it.
    text = str(exc).lower()
    if "language" in text or "not found" in text:
        return "a word is not in the English BIP-39 list"
    if "count" in text:
        return "wrong number of words (12, 15, 18, 21 or 24)"
    return "it is not valid"


def create_keystore(name: str, seed: bytes, passphrase: str, *, n: int = SCRYPT_N) -> bytes:
    card = UnlockedKey(seed).card(name)
    sealed = seal(seed, passphrase, SEED_LABEL, n=n)
    return canonical_bytes(
        {
            "kind": "custody-signer-keystore",
            "format": 1,
            "card": card.to_dict(),
            "sealed_seed": parse_canonical(sealed),
        }
    )


def load_keystore(data: bytes) -> Keystore:
    try:
        doc = parse_canonical(data)
        if (
            doc["kind"] != "custody-signer-keystore"
            or doc["format"] != 1
            or set(doc) != {"kind", "format", "card", "sealed_seed"}
        ):
            raise KeystoreDamaged("not a signer keystore")
        card = KeyCard(**doc["card"])
        sealed = canonical_bytes(doc["sealed_seed"])
    except (CustodyError, KeyError, TypeError, AttributeError):
        raise KeystoreDamaged("the file is not a signer keystore, or it is damaged") from None
    return Keystore(card, sealed)


def unlock(keystore: Keystore, passphrase: str) -> UnlockedKey:
    key = UnlockedKey(open_sealed(keystore.sealed_seed, passphrase, SEED_LABEL))
    if key.card(keystore.card.name) != keystore.card:
        raise KeystoreDamaged("the keystore's public card does not match its sealed seed")
    return key
