"""The Bitcoin cold wallet file: the descriptor and its checksum against BIP-380's vector and Bitcoin Core, the
scripts against Core's own derivation, every refusal of the parser, and `signer cold pin` / `cold show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from embit.networks import NETWORKS
from embit.script import Script

from policies.canonical import canonical_bytes
from signer.btckeys import BitcoinKey, account_key
from signer.btcwallet import descriptor_text, parse_btc_cold_wallet
from signer.errors import BtcDescriptorMismatch, BtcWalletInvalid
from signer.keystore import create_keystore, mnemonic_from_entropy
from signer.sealed import MIN_SCRYPT_N
from tests.cli_helpers import signer
from tests.signer.btcfixtures import wallet_bytes

DAEMON = "fd1724385aa0c75b64fb78cd602fa1d991fdebf76b13c58ed702eac835e9f618"
SEEDS = [bytes([0x50 + i]) * 64 for i in range(3)]
KEYS = [account_key(s, "regtest") for s in SEEDS]
MAIN_KEYS = [account_key(s, "mainnet") for s in SEEDS]


def test_the_checksum_is_bip_380s():
    """BIP-380's valid example ``raw(deadbeef)#89f8spxm``, through the same function the descriptor uses."""
    from embit.descriptor.checksum import checksum

    assert checksum("raw(deadbeef)") == "89f8spxm"
    text = descriptor_text("regtest", 2, KEYS)
    body, check = text.split("#")
    assert check == checksum(body) and body.startswith("wsh(sortedmulti(2,[")
    assert body.count("/<0;1>/*") == 3 and all(f"[{k.fingerprint}/48h/1h/0h/2h]{k.xpub}" in body for k in KEYS)


def test_descriptor_checksum_and_addresses_are_bitcoin_cores(bitcoind: Any):
    node = bitcoind.node()
    wallet = parse_btc_cold_wallet(wallet_bytes(KEYS, 2, DAEMON))
    info = node.call("getdescriptorinfo", wallet.descriptor)
    assert info["checksum"] == wallet.checksum and info["issolvable"] is True
    for branch in (0, 1):
        single = descriptor_text("regtest", 2, KEYS).split("#")[0].replace("/<0;1>/*", f"/{branch}/*")
        single = node.call("getdescriptorinfo", single)["descriptor"]
        core = node.call("deriveaddresses", single, [0, 4])
        mine = [Script(wallet.script_pubkey(branch, i)).address(NETWORKS["regtest"]) for i in range(5)]
        assert core == mine


def _doc(**changes: Any) -> bytes:
    doc = json.loads(wallet_bytes(KEYS, 2, DAEMON))
    doc.update(changes)
    return canonical_bytes(doc)


def test_the_file_round_trips():
    raw = wallet_bytes(KEYS, 2, DAEMON)
    wallet = parse_btc_cold_wallet(raw)
    assert wallet.to_bytes() == raw and wallet.account_keys() == tuple(KEYS) and wallet.threshold == 2


def test_a_descriptor_other_than_the_rebuilt_one_is_refused():
    one = descriptor_text("regtest", 1, KEYS)
    with pytest.raises(BtcDescriptorMismatch):
        parse_btc_cold_wallet(_doc(descriptor=one))
    reordered = descriptor_text("regtest", 2, [KEYS[1], KEYS[0], KEYS[2]])
    with pytest.raises(BtcDescriptorMismatch):
        parse_btc_cold_wallet(_doc(descriptor=reordered))
    honest = descriptor_text("regtest", 2, KEYS)
    with pytest.raises(BtcDescriptorMismatch):
        parse_btc_cold_wallet(_doc(descriptor=honest[:-1] + ("q" if honest[-1] != "q" else "p")))


@pytest.mark.parametrize(
    ("keys", "threshold", "network", "match"),
    [
        ([BitcoinKey(k.fingerprint, KEYS[0].path, k.xpub) for k in MAIN_KEYS], 2, "regtest", "not a regtest key"),
        ([BitcoinKey(k.fingerprint, MAIN_KEYS[0].path, k.xpub) for k in KEYS], 2, "mainnet", "not a mainnet key"),
        (MAIN_KEYS, 2, "regtest", "path"),
        ([KEYS[0], KEYS[0], KEYS[1]], 2, "regtest", "appears twice"),
        (KEYS, 0, "regtest", "threshold 0"),
        (KEYS, 4, "regtest", "threshold 4"),
        ([BitcoinKey(KEYS[0].fingerprint, "m/48h/1h/0h/1h", KEYS[0].xpub), *KEYS[1:]], 2, "regtest", "path"),
        ([BitcoinKey(KEYS[1].fingerprint, KEYS[0].path, KEYS[0].xpub), *KEYS[1:]], 2, "regtest", "fingerprint"),
    ],
)
def test_keys_for_another_network_or_path_duplicates_and_thresholds_are_refused(keys, threshold, network, match):
    doc = json.loads(wallet_bytes(KEYS, 2, DAEMON))
    doc["owners"] = [
        {"name": f"op{i}", "fingerprint": k.fingerprint, "path": k.path, "xpub": k.xpub} for i, k in enumerate(keys)
    ]
    doc.update(network=network, threshold=threshold, descriptor="x")
    with pytest.raises(BtcWalletInvalid, match=match):
        parse_btc_cold_wallet(canonical_bytes(doc))


def test_unknown_missing_or_non_canonical_fields_are_refused():
    doc = json.loads(wallet_bytes(KEYS, 2, DAEMON))
    for broken in ({**doc, "extra": 1}, {k: v for k, v in doc.items() if k != "daemon_key"}):
        with pytest.raises(BtcWalletInvalid):
            parse_btc_cold_wallet(canonical_bytes(broken))
    with pytest.raises(BtcWalletInvalid):
        parse_btc_cold_wallet(json.dumps(doc, indent=1).encode())
    with pytest.raises(BtcWalletInvalid, match="name appears twice"):
        parse_btc_cold_wallet(wallet_bytes(KEYS, 2, DAEMON, names=["a", "a", "b"]))


def _keystore(tmp: Path, i: int) -> Path:
    path = tmp / f"k{i}.keystore"
    words = mnemonic_from_entropy(bytes([0x30 + i]) * 32)
    path.write_bytes(create_keystore(f"op{i}", words, "pw", n=MIN_SCRYPT_N))
    return path


def test_cold_pin_with_keystore_then_show(tmp_path: Path):
    from signer.keystore import load_keystore

    stores = [_keystore(tmp_path, i) for i in range(3)]
    keys = [load_keystore(s.read_bytes()).card.bitcoin_key("regtest") for s in stores]
    raw = wallet_bytes([k for k in keys if k is not None], 2, DAEMON)
    wallet = parse_btc_cold_wallet(raw)
    (tmp_path / "w.json").write_bytes(raw)
    state = tmp_path / "state"
    out = signer("cold", "pin", tmp_path / "w.json", "--yes", "--keystore", stores[1], "--state", state).output
    assert wallet.descriptor in out and "2 of 3" in out
    shown = signer("cold", "show", "--state", state).output
    assert wallet.descriptor in shown and f"checksum      {wallet.checksum}" in shown
    # the same file again is fine; a key that is not an owner is refused before pinning anything
    signer("cold", "pin", tmp_path / "w.json", "--yes", "--state", state)
    outsider = _keystore(tmp_path, 7)
    r = signer(
        "cold", "pin", tmp_path / "w.json", "--yes", "--keystore", outsider, "--state", tmp_path / "s2", ok=False
    )
    assert "is not an owner of this wallet" in r.output and not (tmp_path / "s2" / "btc-cold-wallet.json").exists()


def test_make_btc_cold_wallet_writes_the_file_the_parser_reads():
    from signer.btcwallet import make_btc_cold_wallet

    wallet = make_btc_cold_wallet("regtest", 2, [(f"op{i}", k) for i, k in enumerate(KEYS)], DAEMON)
    assert wallet.to_bytes() == wallet_bytes(KEYS, 2, DAEMON)
