"""Sealed secrets, keystores and the published BIP-39 / BIP-44 vectors."""

from __future__ import annotations

import json

import pytest

from policies.canonical import canonical_bytes
from signer.errors import KeystoreDamaged, MnemonicInvalid, WrongPassphrase
from signer.keystore import create_keystore, load_keystore, seed_from_mnemonic, unlock
from signer.sealed import open_sealed, seal

ABANDON = "abandon " * 11 + "about"


def test_bip39_and_bip44_published_vectors():
    # BIP-39 reference vectors (Trezor), passphrase "TREZOR"
    assert seed_from_mnemonic(ABANDON, "TREZOR").hex() == (
        "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04"
    )
    # the well-known first Ethereum account of the "abandon … about" mnemonic
    card = load_keystore(create_keystore("v", ABANDON, "pw", n=2**15)).card
    assert card.owner_address == "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"


@pytest.mark.parametrize(
    ("words", "why"),
    [
        ("abandon " * 12, "checksum"),
        ("abandon " * 11 + "zebraa", "not in the English"),
        ("abandon " * 5, "number of words"),
    ],
)
def test_bad_mnemonics_get_one_clear_reason_without_echoing_words(words, why):
    with pytest.raises(MnemonicInvalid) as info:
        seed_from_mnemonic(words)
    assert why in info.value.message and "zebraa" not in info.value.message


def test_sealing_round_trips_and_refuses_wrong_passphrase_label_or_damage():
    data = seal(b"secret bytes", "pw", "thing", n=2**15)
    assert b"secret" not in data
    assert open_sealed(data, "pw", "thing") == b"secret bytes"
    with pytest.raises(WrongPassphrase):
        open_sealed(data, "PW", "thing")
    with pytest.raises(KeystoreDamaged, match="not a 'other'"):
        open_sealed(data, "pw", "other")
    doc = json.loads(data)
    doc["label"] = "other"  # relabelling is caught by the associated data even with the right label asked
    with pytest.raises(WrongPassphrase):
        open_sealed(canonical_bytes(doc), "pw", "other")
    doc = json.loads(data)
    doc["kdf"]["n"] = 2**10
    with pytest.raises(KeystoreDamaged, match="weaker"):
        open_sealed(canonical_bytes(doc), "pw", "thing")
    with pytest.raises(KeystoreDamaged):
        open_sealed(data[:-10], "pw", "thing")


def test_keystore_unlock_and_damage():
    ks = load_keystore(create_keystore("alice", ABANDON, "pw", n=2**15))
    key = unlock(ks, "pw")
    assert "abandon" not in repr(key) and key.card("alice") == ks.card
    with pytest.raises(WrongPassphrase):
        unlock(ks, "nope")
    with pytest.raises(KeystoreDamaged):
        load_keystore(b'{"kind":"something-else"}')
