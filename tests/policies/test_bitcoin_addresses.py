"""Bitcoin destinations: the published BIP-173/BIP-350 vectors, the project's narrower set of payable
addresses, and the canonical form every comparison relies on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from embit import bech32

from policies.addresses import NETWORKS, bitcoin_script, destination
from policies.errors import AddressError, AddressWrongChain

VECTORS = json.loads((Path(__file__).parent / "bitcoin_address_vectors.json").read_text())
ETH = "0x52908400098527886E0F7030069857D2E4169EE7"
P2WPKH = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
PROGRAM = bytes.fromhex("751e76e8199196d454941c45d1b3a323f1433bd6")


def _ids(vector: dict[str, Any]) -> str:
    return str(vector["address"][:24])


@pytest.mark.parametrize("vector", [v for v in VECTORS["valid"] if "accept" in v], ids=_ids)
def test_a_published_payable_address_gives_its_script_on_its_networks(vector):
    canonical = vector.get("canonical", vector["address"])
    for network in vector["accept"]:
        assert destination("bitcoin", network, vector["address"]) == canonical
        assert bitcoin_script(network, canonical).hex() == vector["script"]
    for network in set(NETWORKS) - set(vector["accept"]):
        with pytest.raises(AddressWrongChain, match=f"not a {network} one"):
            destination("bitcoin", network, vector["address"])


@pytest.mark.parametrize("vector", [v for v in VECTORS["valid"] if "refuse" in v], ids=_ids)
def test_a_valid_but_unspendable_address_is_refused(vector):
    """BIP-350 accepts v2-v16 and v1 of other lengths for the future; coins sent there today are lost."""
    for network in NETWORKS:
        with pytest.raises(AddressError) as caught:
            destination("bitcoin", network, vector["address"])
        if network == "mainnet":
            assert vector["refuse"] in caught.value.message
            assert caught.value.code == "invalid_address"


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=_ids)
def test_a_published_invalid_address_is_refused(vector):
    for network in NETWORKS:
        with pytest.raises(AddressError) as caught:
            destination("bitcoin", network, vector["address"])
        assert caught.value.code == "invalid_address", vector["reason"]


def test_uppercase_is_accepted_and_made_lowercase_mixed_case_is_not():
    assert destination("bitcoin", "mainnet", P2WPKH.upper()) == P2WPKH
    with pytest.raises(AddressError, match="mixes upper and lower case"):
        destination("bitcoin", "mainnet", "bc1qW508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")


def test_bitcoin_script_wants_the_canonical_form():
    with pytest.raises(AddressError, match="canonical"):
        bitcoin_script("mainnet", P2WPKH.upper())


@pytest.mark.parametrize(
    ("network", "hrp"), [("mainnet", "bc"), ("testnet", "tb"), ("signet", "tb"), ("regtest", "bcrt")]
)
def test_each_network_has_its_prefix(network, hrp):
    address = bech32.encode(hrp, 0, list(PROGRAM))
    assert destination("bitcoin", network, address) == address
    assert bitcoin_script(network, address) == b"\x00\x14" + PROGRAM
    taproot = bech32.encode(hrp, 1, list(PROGRAM + PROGRAM[:12]))
    assert bitcoin_script(network, destination("bitcoin", network, taproot)) == b"\x51\x20" + PROGRAM + PROGRAM[:12]


def test_a_wrong_network_is_named():
    regtest = bech32.encode("bcrt", 0, list(PROGRAM))
    with pytest.raises(AddressWrongChain, match="is a regtest address, not a mainnet one"):
        destination("bitcoin", "mainnet", regtest)
    with pytest.raises(AddressWrongChain, match="is a mainnet address, not a regtest one"):
        destination("bitcoin", "regtest", P2WPKH)
    with pytest.raises(AddressWrongChain, match="is a testnet or signet address, not a mainnet one"):
        destination("bitcoin", "mainnet", "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy")
    with pytest.raises(AddressWrongChain, match="is a mainnet address, not a regtest one"):
        destination("bitcoin", "regtest", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2")
    with pytest.raises(AddressWrongChain, match="is a testnet, signet or regtest address, not a mainnet one"):
        destination("bitcoin", "mainnet", "mnrVtF8DWjMu839VW3rBfgYaAfKk8983Xf")


def test_bech32_on_taproot_is_refused():
    """A v1 program with the old checksum: BIP-350 makes it invalid, and old wallets produce it."""
    words = [1, *bech32.convertbits(list(PROGRAM + PROGRAM[:12]), 8, 5)]
    old = bech32.bech32_encode(bech32.Encoding.BECH32, "bcrt", words)
    with pytest.raises(AddressError, match="not bech32m"):
        destination("bitcoin", "regtest", old)


def test_the_other_chain_is_named():
    with pytest.raises(AddressWrongChain, match="is an Ethereum address"):
        destination("bitcoin", "regtest", ETH)
    with pytest.raises(AddressWrongChain, match="is a Bitcoin address"):
        destination("ethereum", None, P2WPKH)
    assert destination("ethereum", None, ETH) == ETH


@pytest.mark.parametrize("text", [None, 5, b"bc1q", "", " " + P2WPKH, P2WPKH + "\n", "x" * 500, "bc1q\u00e9"])
def test_anything_else_is_not_an_address(text):
    with pytest.raises(AddressError) as caught:
        destination("bitcoin", "mainnet", text)
    assert caught.value.code == "invalid_address"
    assert len(caught.value.message) < 200


def test_unknown_chain_or_network_is_refused():
    with pytest.raises(AddressError, match="unknown chain"):
        destination("litecoin", None, P2WPKH)
    with pytest.raises(AddressError, match="unknown Bitcoin network"):
        destination("bitcoin", "main", P2WPKH)
    with pytest.raises(AddressError, match="no network"):
        destination("ethereum", "mainnet", ETH)
