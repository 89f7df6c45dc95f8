"""An operator's key: a BIP-39 seed, sealed at rest, and the public card derived from it.

From the one seed come:
- the Ethereum owner key, BIP-44 m/44'/60'/0'/0/0 (a Safe owner; signs SafeTx hashes);
- the Ed25519 approval key, SLIP-10 m/10117'/0'/0' (signs policy bundles);
- the fingerprint, the BIP-32 master key fingerprint, so operators can tell keys apart on paper;
- the Bitcoin multisig account keys, BIP-48 m/48'/0'/0'/2' (an xpub, mainnet) and m/48'/1'/0'/2' (a tpub, the
  test networks), ``signer.btckeys``.

Keystore file, canonical JSON:

    {"kind": "custody-signer-keystore", "format": 2,
     "card": {"name": ..., "fingerprint": "<8 hex>", "owner_address": "0x…", "approval_key": "<64 hex>",
              "bitcoin_xpub": "xpub…", "bitcoin_tpub": "tpub…"},
     "sealed_seed": <signer.sealed document, label "bip39-entropy">}

The two Bitcoin keys are computed when the key is created or restored, so ``signer key card`` needs no
passphrase. A keystore written before they existed has neither (its card, and its owner card, keep their bytes);
``signer key card --add-bitcoin`` unlocks it once and adds them.

The sealed secret is the mnemonic's entropy and the BIP-39 passphrase (canonical JSON
``{"entropy": "<hex>", "bip39_passphrase": "…"}``), not just the seed: the entropy is what a SLIP-39 backup
splits into shares, and the seed is derived from both on unlocking.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

from bip_utils import (
    Bip32Secp256k1,
    Bip32Slip10Ed25519,
    Bip39MnemonicDecoder,
    Bip39MnemonicEncoder,
    Bip39MnemonicGenerator,
    Bip39MnemonicValidator,
    Bip39SeedGenerator,
    Bip44,
    Bip44Changes,
    Bip44Coins,
)
from bip_utils.utils.mnemonic.mnemonic_ex import MnemonicChecksumError
from nacl.signing import SigningKey
from shamir_mnemonic import MnemonicError, combine_mnemonics, generate_mnemonics
from shamir_mnemonic.share import Share

from policies.canonical import canonical_bytes, parse_canonical
from policies.errors import CustodyError
from policies.loader import Reader
from signer.btckeys import BitcoinKey, account_key, account_path, account_private, parse_xpub
from signer.errors import KeystoreDamaged, MnemonicInvalid, SignerError
from signer.sealed import open_sealed, seal

APPROVAL_PATH = "m/10117'/0'/0'"
SEED_LABEL = "bip39-entropy"
FORMAT = 2
BITCOIN_FIELDS = ("bitcoin_xpub", "bitcoin_tpub")


@dataclass(frozen=True, slots=True)
class KeyCard:
    """The public half, safe to hand to the daemon and to other operators."""

    name: str
    fingerprint: str
    owner_address: str
    approval_key: str
    # BIP-48 account keys (``signer.btckeys``); both or neither (a card made before Bitcoin has neither)
    bitcoin_xpub: str | None = None
    bitcoin_tpub: str | None = None

    def to_dict(self) -> dict[str, str]:
        out = {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "owner_address": self.owner_address,
            "approval_key": self.approval_key,
        }
        if self.bitcoin_xpub is not None and self.bitcoin_tpub is not None:
            out |= {"bitcoin_xpub": self.bitcoin_xpub, "bitcoin_tpub": self.bitcoin_tpub}
        return out

    def bitcoin_key(self, network: str) -> BitcoinKey | None:
        """This owner's BIP-48 account key for ``network``, or None on a card made before Bitcoin."""
        xpub = self.bitcoin_xpub if network == "mainnet" else self.bitcoin_tpub
        if xpub is None:
            return None
        return BitcoinKey(self.fingerprint, account_path(network), xpub)


def owner_card_bytes(card: KeyCard) -> bytes:
    """The owner card file (``signer key card``): what the daemon and other operators get of a key."""
    return canonical_bytes({"kind": "custody-owner-card", "format": 1, **card.to_dict()})


def parse_owner_card(raw: bytes) -> KeyCard:
    """An owner card, old (no Bitcoin keys) or new (both); each Bitcoin key checked for its network family."""
    try:
        doc = parse_canonical(raw)
        Reader(human=False).table(
            doc, "", {"kind", "format", "name", "fingerprint", "owner_address", "approval_key"}, set(BITCOIN_FIELDS)
        )
    except CustodyError as exc:
        raise SignerError(f"not a valid custody-owner-card file: {exc.message}") from None
    if doc["kind"] != "custody-owner-card":
        raise SignerError(f"this is a {str(doc['kind'])[:40]!r} file, not a custody-owner-card")
    if doc["format"] != 1:
        raise SignerError(f"unsupported custody-owner-card format {doc['format']!r}")
    if ("bitcoin_xpub" in doc) != ("bitcoin_tpub" in doc):
        raise SignerError("not a valid owner card: it has one Bitcoin key without the other (both or neither)")
    r = Reader(human=False)
    try:
        card = KeyCard(
            name=r.text(doc["name"], "name"),
            fingerprint=r.text(doc["fingerprint"], "fingerprint", re.compile(r"[0-9a-f]{8}"), "fingerprint"),
            owner_address=r.address(doc["owner_address"], "owner_address"),
            approval_key=r.text(doc["approval_key"], "approval_key", re.compile(r"[0-9a-f]{64}"), "Ed25519 key"),
        )
        if "bitcoin_xpub" in doc:
            xpub, tpub = doc["bitcoin_xpub"], doc["bitcoin_tpub"]
            parse_xpub(xpub, "mainnet")
            parse_xpub(tpub, "testnet")
            card = dataclasses.replace(card, bitcoin_xpub=xpub, bitcoin_tpub=tpub)
    except CustodyError as exc:
        raise SignerError(f"not a valid owner card: {exc.message}") from None
    return card


@dataclass(frozen=True, slots=True)
class Keystore:
    card: KeyCard
    sealed_seed: bytes


class UnlockedKey:
    """A seed in memory, for as short a time as a ceremony step needs it."""

    def __init__(self, seed: bytes, entropy: bytes | None = None) -> None:
        self._seed = seed
        self._entropy = entropy

    def backup_shares(self, threshold: int, shares: int) -> list[str]:
        """SLIP-39 shares of the mnemonic's entropy; any ``threshold`` of them give the mnemonic back."""
        if self._entropy is None:
            raise SignerError("this key has no stored entropy to back up")
        return backup_shares(self._entropy, threshold, shares)

    def __repr__(self) -> str:  # never show key material, even in a traceback
        return "UnlockedKey(<secret>)"

    def approval_key(self) -> SigningKey:
        node = Bip32Slip10Ed25519.FromSeed(self._seed).DerivePath(APPROVAL_PATH)
        return SigningKey(node.PrivateKey().Raw().ToBytes())

    def owner_private_key(self) -> bytes:
        return bytes(_owner_node(self._seed).PrivateKey().Raw().ToBytes())

    def bitcoin_account(self, network: str) -> Any:
        """The BIP-48 multisig account's private HD key (embit) for ``network``."""
        return account_private(self._seed, network)

    def card(self, name: str, *, bitcoin: bool = True) -> KeyCard:
        """The public card; ``bitcoin=False`` gives the card of a keystore made before Bitcoin (to compare)."""
        return KeyCard(
            name=name,
            fingerprint=Bip32Secp256k1.FromSeed(self._seed).FingerPrint().ToHex(),
            owner_address=_owner_node(self._seed).PublicKey().ToAddress(),
            approval_key=self.approval_key().verify_key.encode().hex(),
            bitcoin_xpub=account_key(self._seed, "mainnet").xpub if bitcoin else None,
            bitcoin_tpub=account_key(self._seed, "testnet").xpub if bitcoin else None,
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
    return bytes(Bip39SeedGenerator(check_mnemonic(mnemonic)).Generate(bip39_passphrase))


def check_mnemonic(mnemonic: str) -> str:
    """The mnemonic with its spacing normalised, if it is a valid English BIP-39 mnemonic."""
    words = " ".join(mnemonic.lower().split())
    try:
        Bip39MnemonicValidator().Validate(words)
    except MnemonicChecksumError:
        raise MnemonicInvalid("the mnemonic's checksum is wrong: a word is missing, extra or mistyped") from None
    except ValueError as exc:
        raise MnemonicInvalid(f"not a BIP-39 mnemonic: {_safe_reason(exc)}") from None
    return words


def mnemonic_entropy(mnemonic: str) -> bytes:
    return bytes(Bip39MnemonicDecoder().Decode(check_mnemonic(mnemonic)))


def mnemonic_from_entropy(entropy: bytes) -> str:
    return str(Bip39MnemonicEncoder().Encode(entropy))


def backup_shares(entropy: bytes, threshold: int, shares: int) -> list[str]:
    if not 1 <= threshold <= shares <= 16:
        raise SignerError("a backup needs 1 <= threshold <= shares <= 16")
    if threshold == 1 and shares > 1:
        raise SignerError("a threshold of 1 with several shares makes copies, not shares; use --threshold 2 or more")
    (group,) = generate_mnemonics(1, [(threshold, shares)], entropy)
    return list(group)


def recover_entropy(shares: list[str]) -> bytes:
    """The entropy from exactly a threshold of SLIP-39 shares; one clear line when they do not combine, naming
    shares by their place in the input and never quoting a share word."""
    normalised = [" ".join(s.lower().split()) for s in shares]
    if not normalised:
        raise MnemonicInvalid("no SLIP-39 shares were given: type or paste them one per line")
    _check_share_set(normalised)
    try:
        return bytes(combine_mnemonics(normalised))
    except MnemonicError as exc:
        raise MnemonicInvalid(f"the SLIP-39 shares do not combine: {_share_reason(exc)}") from None


def _check_share_set(shares: list[str]) -> None:
    """For a single-group backup (what ``signer key backup`` makes), say exactly what is wrong with the set:
    a share given twice, too many or not enough shares, with the numbers. The library only says "wrong
    number of mnemonics", and it drops a repeated share silently, so two copies of one share read as "not
    enough"."""
    parsed: list[Share] = []
    for place, mnemonic in enumerate(shares, 1):
        try:
            parsed.append(Share.from_mnemonic(mnemonic))
        except MnemonicError as exc:
            raise MnemonicInvalid(f"share {place} (of those given) is not valid: {_share_reason(exc)}") from None
    if len({share.common_parameters() for share in parsed}) != 1:
        raise MnemonicInvalid("the SLIP-39 shares do not combine: the shares come from different backups")
    if parsed[0].group_count != 1:
        return  # a multi-group backup: the library's own checks, worded by _share_reason
    seen: dict[int, int] = {}
    for place, share in enumerate(parsed, 1):
        if share.index in seen:
            raise MnemonicInvalid(
                f"share {place} and share {seen[share.index]} (of those given) are the same share; give each share once"
            )
        seen[share.index] = place
    needed, given = parsed[0].member_threshold, len(parsed)
    if given > needed:
        raise MnemonicInvalid(
            f"too many shares: {given} were given, but this backup takes exactly {needed}; give any {needed} of them"
        )
    if given < needed:
        raise MnemonicInvalid(
            f"not enough shares: {given} {'was' if given == 1 else 'were'} given, but this backup needs {needed}"
        )


def _share_reason(exc: Exception) -> str:
    text = str(exc).lower()
    if "checksum" in text:
        return "a share has a wrong checksum (a word is mistyped)"
    if "insufficient" in text or "threshold" in text or "wrong number" in text:
        return "the number of shares does not match the backup's thresholds"
    if "not in" in text or "invalid mnemonic word" in text or "word" in text:
        return "a word is not in the SLIP-39 list"
    if "identifier" in text or "same" in text:
        return "the shares come from different backups"
    return "they are not valid shares of one backup"


def _safe_reason(exc: Exception) -> str:
    # bip-utils names the offending word; a word is part of the secret, so never repeat it.
    text = str(exc).lower()
    if "language" in text or "not found" in text:
        return "a word is not in the English BIP-39 list"
    if "count" in text:
        return "wrong number of words (12, 15, 18, 21 or 24)"
    return "it is not valid"


def create_keystore(
    name: str, mnemonic: str, passphrase: str, *, bip39_passphrase: str = "", n: int | None = None
) -> bytes:
    card = UnlockedKey(seed_from_mnemonic(mnemonic, bip39_passphrase)).card(name)
    secret = canonical_bytes({"entropy": mnemonic_entropy(mnemonic).hex(), "bip39_passphrase": bip39_passphrase})
    sealed = seal(secret, passphrase, SEED_LABEL, n=n)
    return canonical_bytes(
        {
            "kind": "custody-signer-keystore",
            "format": FORMAT,
            "card": card.to_dict(),
            "sealed_seed": parse_canonical(sealed),
        }
    )


def load_keystore(data: bytes) -> Keystore:
    try:
        doc = parse_canonical(data)
        if (
            doc["kind"] != "custody-signer-keystore"
            or doc["format"] != FORMAT
            or set(doc) != {"kind", "format", "card", "sealed_seed"}
        ):
            raise KeystoreDamaged("not a signer keystore")
        card = KeyCard(**doc["card"])
        sealed = canonical_bytes(doc["sealed_seed"])
    except (CustodyError, KeyError, TypeError, AttributeError):
        raise KeystoreDamaged("the file is not a signer keystore, or it is damaged") from None
    return Keystore(card, sealed)


def unlock(keystore: Keystore, passphrase: str) -> UnlockedKey:
    plain = open_sealed(keystore.sealed_seed, passphrase, SEED_LABEL)
    try:
        secret = parse_canonical(plain)
        entropy = bytes.fromhex(secret["entropy"])
        key = UnlockedKey(seed_from_mnemonic(mnemonic_from_entropy(entropy), secret["bip39_passphrase"]), entropy)
    except (CustodyError, KeyError, TypeError, ValueError):
        raise KeystoreDamaged("the keystore's sealed secret is damaged") from None
    if key.card(keystore.card.name, bitcoin=keystore.card.bitcoin_xpub is not None) != keystore.card:
        raise KeystoreDamaged("the keystore's public card does not match its sealed seed")
    return key


def with_bitcoin_keys(data: bytes, passphrase: str) -> bytes:
    """The keystore ``data`` with the Bitcoin keys added to its card (unlocking it to derive them); the sealed
    seed is kept byte for byte. A keystore that has them already comes back unchanged."""
    keystore = load_keystore(data)
    card = unlock(keystore, passphrase).card(keystore.card.name)
    return canonical_bytes(
        {
            "kind": "custody-signer-keystore",
            "format": FORMAT,
            "card": card.to_dict(),
            "sealed_seed": parse_canonical(keystore.sealed_seed),
        }
    )
