"""Secrets at rest: scrypt (memory-hard) derives a key from the passphrase, ChaCha20-Poly1305 seals.

Wire form, canonical JSON:

    {"kind": "custody-sealed", "format": 1, "label": "<what this is>",
     "kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1, "salt": "<32 hex bytes>"},
     "cipher": {"name": "chacha20-poly1305", "nonce": "<12 hex bytes>"}, "ciphertext": "<hex>"}

Everything but the ciphertext is bound as associated data, so the label and the KDF parameters cannot be
swapped or weakened without the opening failing. Opening refuses parameters below the minimum.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from policies.canonical import canonical_bytes, parse_canonical
from policies.errors import CustodyError
from signer.errors import KeystoreDamaged, WrongPassphrase

SCRYPT_N = 2**17  # 128 MiB with r = 8: what every new secret is sealed with (read at each call)
MIN_SCRYPT_N = 2**15


def seal(secret: bytes, passphrase: str, label: str, *, n: int | None = None) -> bytes:
    n = SCRYPT_N if n is None else n
    if not passphrase:
        raise WrongPassphrase("the passphrase must not be empty")
    header: dict[str, Any] = {
        "kind": "custody-sealed",
        "format": 1,
        "label": label,
        "kdf": {"name": "scrypt", "n": n, "r": 8, "p": 1, "salt": os.urandom(32).hex()},
        "cipher": {"name": "chacha20-poly1305", "nonce": os.urandom(12).hex()},
    }
    key = _derive(passphrase, header["kdf"])
    ciphertext = ChaCha20Poly1305(key).encrypt(
        bytes.fromhex(header["cipher"]["nonce"]), secret, canonical_bytes(header)
    )
    return canonical_bytes({**header, "ciphertext": ciphertext.hex()})


def open_sealed(data: bytes, passphrase: str, label: str) -> bytes:
    """Return the secret; ``label`` must match what was sealed, so one file cannot stand in for another."""
    try:
        doc = parse_canonical(data)
        header = {k: doc[k] for k in ("kind", "format", "label", "kdf", "cipher")}
        if set(doc) != {*header, "ciphertext"} or doc["kind"] != "custody-sealed" or doc["format"] != 1:
            raise KeystoreDamaged("not a sealed custody secret")
        kdf, cipher = doc["kdf"], doc["cipher"]
        if kdf.get("name") != "scrypt" or cipher.get("name") != "chacha20-poly1305":
            raise KeystoreDamaged("unknown KDF or cipher")
        nonce, ciphertext = bytes.fromhex(cipher["nonce"]), bytes.fromhex(doc["ciphertext"])
    except (CustodyError, KeyError, TypeError, ValueError, AttributeError):
        raise KeystoreDamaged("the file is not a sealed custody secret, or it is damaged") from None
    if doc["label"] != label:
        raise KeystoreDamaged(f"this file holds a {str(doc['label'])[:40]!r}, not a {label!r}")
    if not isinstance(kdf.get("n"), int) or kdf["n"] < MIN_SCRYPT_N or (kdf.get("r"), kdf.get("p")) != (8, 1):
        raise KeystoreDamaged("the KDF parameters are weaker than this version accepts")
    key = _derive(passphrase, kdf)
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, canonical_bytes(header))
    except InvalidTag:
        raise WrongPassphrase("wrong passphrase, or the file was altered") from None


def _derive(passphrase: str, kdf: dict[str, Any]) -> bytes:
    try:
        scrypt = Scrypt(salt=bytes.fromhex(kdf["salt"]), length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"])
        return scrypt.derive(passphrase.encode("utf-8"))
    except (KeyError, TypeError, ValueError):
        raise KeystoreDamaged("the KDF parameters are damaged") from None
