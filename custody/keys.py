"""The daemon's own secrets in its data directory, each sealed with the operator's passphrase:

identity.sealed   Ed25519 key that signs batch files and webhooks (public half in identity.pub)
hot-seed.sealed   BIP-39 seed of the hot wallet (BIP-44 m/44'/60'/0'/0/0)
"""

from __future__ import annotations

import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from nacl.signing import SigningKey

from signer.keystore import UnlockedKey, new_mnemonic, seed_from_mnemonic
from signer.sealed import SCRYPT_N, open_sealed, seal

IDENTITY_LABEL, HOT_SEED_LABEL = "daemon-identity", "hot-seed"


def create_daemon_keys(data_dir: Path, passphrase: str, *, n: int = SCRYPT_N) -> tuple[str, str]:
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
