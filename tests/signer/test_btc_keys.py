"""The operator's Bitcoin account keys: BIP-48 derivation checked against a published BIP-32 vector and against a
second implementation (bip-utils), the card round trip, and old cards and keystores that predate Bitcoin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bip_utils import Bip32Secp256k1
from embit import bip32

from policies.canonical import canonical_bytes, parse_canonical
from signer.btckeys import account_key, parse_xpub
from signer.errors import BtcWalletInvalid, SignerError
from signer.keystore import (
    create_keystore,
    load_keystore,
    owner_card_bytes,
    parse_owner_card,
    seed_from_mnemonic,
    unlock,
)
from signer.sealed import MIN_SCRYPT_N as MIN_N
from tests.cli_helpers import signer

WORDS = "abandon " * 23 + "art"
PASS = "correct horse battery staple"
# BIP-32 test vector 1 (published in BIP-32): seed 000102…0f, chain m/0H
VECTOR_SEED = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
VECTOR_M0H = (
    "xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCdrfp1bgwQ9xv5ski8PX9rL2dZXvgGDnw"
)


def test_the_bip32_engine_gives_the_published_vector():
    assert bip32.HDKey.from_seed(VECTOR_SEED).derive("m/0h").to_public().to_base58() == VECTOR_M0H


@pytest.mark.parametrize(
    ("network", "path", "prefix"), [("mainnet", "m/48'/0'/0'/2'", "xpub"), ("regtest", "m/48'/1'/0'/2'", "tpub")]
)
def test_the_account_key_is_what_bip_utils_derives_from_the_same_seed(network: str, path: str, prefix: str):
    seed = seed_from_mnemonic(WORDS)
    key = account_key(seed, network)
    other = Bip32Secp256k1.FromSeed(seed)
    node = other.DerivePath(path)
    parsed = parse_xpub(key.xpub, network)
    assert key.xpub.startswith(prefix) and key.path == path.replace("'", "h")
    assert key.fingerprint == other.FingerPrint().ToHex()
    assert bytes(parsed.key.sec()) == node.PublicKey().RawCompressed().ToBytes()
    assert bytes(parsed.chain_code) == node.ChainCode().ToBytes()
    assert bytes(parsed.fingerprint) == other.DerivePath(path.rsplit("/", 1)[0]).FingerPrint().ToBytes()


def test_a_key_for_another_network_or_not_an_account_is_refused():
    seed = seed_from_mnemonic(WORDS)
    with pytest.raises(BtcWalletInvalid, match="not a regtest key"):
        parse_xpub(account_key(seed, "mainnet").xpub, "regtest")
    with pytest.raises(BtcWalletInvalid, match="not a mainnet key"):
        parse_xpub(account_key(seed, "testnet").xpub, "mainnet")
    with pytest.raises(BtcWalletInvalid, match="not a BIP-48 account"):
        parse_xpub(bip32.HDKey.from_seed(seed).to_public().to_base58(), "mainnet")
    with pytest.raises(BtcWalletInvalid, match="not a valid"):
        parse_xpub(account_key(seed, "mainnet").xpub[:-1] + "1", "mainnet")


def test_the_card_carries_both_keys_and_round_trips():
    data = create_keystore("alice", WORDS, PASS, n=MIN_N)
    card = load_keystore(data).card
    assert card.bitcoin_key("mainnet") == account_key(seed_from_mnemonic(WORDS), "mainnet")
    for network in ("testnet", "signet", "regtest"):
        assert card.bitcoin_key(network) == account_key(seed_from_mnemonic(WORDS), network)
    raw = owner_card_bytes(card)
    assert parse_owner_card(raw) == card
    assert unlock(load_keystore(data), PASS).card("alice") == card


def _old_keystore() -> bytes:
    """A keystore as written before Bitcoin: the card without the two Bitcoin keys, the same sealed seed."""
    doc = parse_canonical(create_keystore("bob", WORDS, PASS, n=MIN_N))
    del doc["card"]["bitcoin_xpub"], doc["card"]["bitcoin_tpub"]
    return canonical_bytes(doc)


def test_an_old_keystore_and_its_card_stay_readable():
    old = load_keystore(_old_keystore())
    assert old.card.bitcoin_key("regtest") is None
    unlock(old, PASS)  # its card still matches its seed
    card_raw = owner_card_bytes(old.card)
    assert set(json.loads(card_raw)) == {"kind", "format", "name", "fingerprint", "owner_address", "approval_key"}
    assert parse_owner_card(card_raw) == old.card


def test_a_card_with_one_bitcoin_key_or_a_swapped_one_is_refused():
    card = load_keystore(create_keystore("carol", WORDS, PASS, n=MIN_N)).card
    doc = json.loads(owner_card_bytes(card))
    half = dict(doc)
    del half["bitcoin_tpub"]
    with pytest.raises(SignerError, match="both or neither"):
        parse_owner_card(canonical_bytes(half))
    swapped = doc | {"bitcoin_xpub": doc["bitcoin_tpub"]}
    with pytest.raises(SignerError, match="not a mainnet key"):
        parse_owner_card(canonical_bytes(swapped))


def test_key_card_add_bitcoin_upgrades_an_old_keystore(tmp_path: Path):
    ks, passfile = tmp_path / "old.keystore", tmp_path / "pass"
    ks.write_bytes(_old_keystore())
    passfile.write_text(PASS + "\n")
    sealed_before = parse_canonical(ks.read_bytes())["sealed_seed"]
    shown = signer("key", "show", ks).output
    assert "--add-bitcoin" in shown
    plain = signer("key", "card", ks, "--out", tmp_path / "card.json")
    assert "--add-bitcoin" in plain.output and "bitcoin_xpub" not in (tmp_path / "card.json").read_text()
    signer(
        "key",
        "card",
        ks,
        "--out",
        tmp_path / "card.json",
        "--add-bitcoin",
        "--passphrase-file",
        passfile,
        "--state",
        tmp_path / "state",
    )
    card = parse_owner_card((tmp_path / "card.json").read_bytes())
    assert card.bitcoin_key("regtest") == account_key(seed_from_mnemonic(WORDS), "regtest")
    assert parse_canonical(ks.read_bytes())["sealed_seed"] == sealed_before
    unlock(load_keystore(ks.read_bytes()), PASS)
    shown = signer("key", "show", ks).output
    assert "path m/48h/1h/0h/2h" in shown and card.bitcoin_tpub in shown and card.fingerprint in shown
    assert "path m/48h/0h/0h/2h" in shown and card.bitcoin_xpub in shown


def test_add_bitcoin_with_a_wrong_passphrase_changes_nothing(tmp_path: Path):
    ks, passfile = tmp_path / "old.keystore", tmp_path / "pass"
    ks.write_bytes(_old_keystore())
    passfile.write_text("wrong\n")
    before = ks.read_bytes()
    r = signer(
        "key", "card", ks, "--out", tmp_path / "c.json", "--add-bitcoin", "--passphrase-file", passfile, ok=False
    )
    assert "error [wrong_passphrase]" in r.output and ks.read_bytes() == before
