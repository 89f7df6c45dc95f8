"""The daemon's own secrets in its data directory, each sealed with the operator's passphrase:

identity.sealed   Ed25519 key that signs batch files and webhooks (public half in identity.pub)
hot-seed.sealed   BIP-39 seed of the hot wallet (Ethereum: BIP-44 m/44'/60'/0'/0/0; Bitcoin: BIP-84 m/84'/coin'/0')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from embit import bip32
from eth_account import Account
from eth_account.signers.local import LocalAccount
from nacl.signing import SigningKey

from signer.keystore import UnlockedKey, new_mnemonic, seed_from_mnemonic
from signer.sealed import open_sealed, seal

IDENTITY_LABEL, HOT_SEED_LABEL = "daemon-identity", "hot-seed"
HARDENED = 0x80000000


def create_daemon_keys(data_dir: Path, passphrase: str, *, n: int | None = None) -> tuple[str, str]:
    """Write both sealed secrets; return the identity's public key in hex and the hot wallet's address."""
    identity = SigningKey.generate()
    seed = seed_from_mnemonic(new_mnemonic())  # the hot seed is never shown or backed up as words
    _write_secret(data_dir / "identity.sealed", seal(bytes(identity), passphrase, IDENTITY_LABEL, n=n))
    _write_secret(data_dir / "hot-seed.sealed", seal(seed, passphrase, HOT_SEED_LABEL, n=n))
    public = identity.verify_key.encode().hex()
    (data_dir / "identity.pub").write_text(public + "\n")
    return public, UnlockedKey(seed).card("hot").owner_address


def load_identity(data_dir: Path, passphrase: str) -> SigningKey:
    return SigningKey(open_sealed((data_dir / "identity.sealed").read_bytes(), passphrase, IDENTITY_LABEL))


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_hot_account(data_dir: Path, passphrase: str) -> LocalAccount:
    """The hot wallet's key, derived (BIP-44 m/44'/60'/0'/0/0) from the sealed seed, in memory only."""
    seed = open_sealed((data_dir / "hot-seed.sealed").read_bytes(), passphrase, HOT_SEED_LABEL)
    account: LocalAccount = Account.from_key(UnlockedKey(seed).owner_private_key())
    return account


class BtcHotAccount:
    """The hot wallet's BIP-84 (P2WPKH) account key ``m/84'/coin'/0'`` (coin 0' on mainnet, 1' on the test
    networks), derived from the sealed hot seed, in memory only; its repr shows no key material."""

    def __init__(self, root: Any, coin: int) -> None:
        self.fingerprint = bytes(root.my_fingerprint).hex()
        self.coin = coin
        self._account = root.derive([84 + HARDENED, coin + HARDENED, HARDENED])

    def __repr__(self) -> str:
        return f"BtcHotAccount({self.fingerprint}/84h/{self.coin}h/0h)"

    @property
    def path(self) -> str:
        return f"84h/{self.coin}h/0h"

    def xpub(self, version: bytes) -> str:
        return str(self._account.to_public().to_base58(version=version))

    def child(self, branch: int, index: int) -> Any:
        """The private key (embit ``PrivateKey``) of ``branch``/``index``, for signing one input."""
        return self._account.derive([branch, index]).key


def load_hot_bitcoin_accounts(data_dir: Path, passphrase: str) -> dict[int, BtcHotAccount]:
    """The hot wallet's Bitcoin accounts by coin type (0: mainnet, 1: the test networks), from the sealed seed."""
    seed = open_sealed((data_dir / "hot-seed.sealed").read_bytes(), passphrase, HOT_SEED_LABEL)
    root = bip32.HDKey.from_seed(seed)
    return {coin: BtcHotAccount(root, coin) for coin in (0, 1)}
