"""The Bitcoin part of a statement (format 4) without a node: the worked example of docs/proof-of-reserves.md
recomputed from the page, a format 4 statement round-tripping through the strict parser with its signed reserve
PSBT verified offline, and the claims a parser must refuse."""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path

import pytest

from custody.errors import ProofInvalid
from custody.por import btcverify
from policies.model import AssetRule
from signer.btckeys import account_private
from signer.errors import StatementAssetContract, StatementInvalid
from signer.porbtc import Coin, ReserveWallet, commitment_txid, reserve_psbt, to_text, unsigned_tx
from signer.porbtcsign import sign_reserve
from signer.porstatement import ReservePsbt, Statement, check_assets, parse_statement
from tests.custody.test_por_inputs import statement as eth_statement
from tests.redteam.test_btc_reserve_attacks import COINS, NETWORK, PINNED, SEEDS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "proof-of-reserves.md").read_text()


def test_the_worked_example_of_the_commitment_is_recomputed_from_the_page():
    section = DOC[DOC.index("### Worked example: the commitment") :]
    text = re.search(r"SHA-256 of the text\s+`([^`]+)`", section)[1]
    statement_hash = hashlib.sha256(text.encode()).digest()
    assert statement_hash.hex() in section
    preimage = re.search(r"the 83 bytes of\s+`([^`]+)`", section)[1]
    assert preimage.encode() == b"Proof-of-Reserves: " + statement_hash.hex().encode() and len(preimage) == 83
    shown = re.search(r"commitment txid = ([0-9a-f]{64})", section)[1]
    assert shown == commitment_txid(statement_hash) == hashlib.sha256(preimage.encode()).hexdigest()
    coin_txid = hashlib.sha256(b"coin").hexdigest()
    assert f"`{coin_txid}:1`" in section
    wallet = ReserveWallet("cold", PINNED.descriptor, (Coin(coin_txid, 1, 150_000_000, b"", 0, 0, 0),))
    block = section[section.index("```\n02000000") + 4 :]
    tx_hex = "".join(line.split("  ")[0].replace(" ", "") for line in block[: block.index("```")].splitlines())
    assert tx_hex == bytes(unsigned_tx(statement_hash, wallet).serialize()).hex()


def bitcoin_statement() -> Statement:
    """A format 4 statement: the Ethereum test statement plus BTC held by the red-team tests' cold wallet."""
    claims = copy.deepcopy(eth_statement().claims)
    wallet = ReserveWallet("cold", PINNED.descriptor, COINS)
    claims["assets"].append({"symbol": "BTC", "decimals": 8, "chain_decimals": 8, "contract": None})
    claims["liabilities"]["totals"]["BTC"] = str(6 * 10**8)
    claims["liabilities"].update(leaves=6, height=3)
    claims["reserves"]["BTC"] = str(wallet.balance)
    claims["coverage"]["BTC"] = "1.0416"
    claims["bitcoin"] = {
        "asset": "BTC",
        "network": NETWORK,
        "block": {"height": 200, "hash": "11" * 32},
        "wallets": [wallet.body()],
    }
    unsigned = Statement(claims)
    psbt = reserve_psbt(unsigned.hash, wallet)
    for seed in SEEDS[1:]:  # the same PSBT gains each owner's signatures
        sign_reserve(psbt, wallet, account_private(seed, NETWORK), PINNED)
    return Statement(claims, bip127=(ReservePsbt(wallet.descriptor, to_text(psbt)),))


def test_a_format_4_statement_round_trips_and_its_reserve_proof_verifies_offline():
    st = bitcoin_statement()
    again = parse_statement(st.to_bytes())
    assert again == st and again.format == 4 and again.bitcoin_asset == "BTC"
    lines = btcverify.check_control(again)
    assert "its 2 coins (6.25 BTC) are signed by a threshold of the descriptor's keys" in lines[0]
    # the Ethereum statement is still format 3, with no bip127 in its control
    eth = copy.deepcopy(eth_statement().claims)
    eth["liabilities"].update(leaves=6, height=3)
    assert b"bip127" not in Statement(eth).to_bytes() and Statement(eth).format == 3


def test_a_reserve_proof_without_the_owners_signatures_does_not_verify():
    st = bitcoin_statement()
    bare = reserve_psbt(st.hash, ReserveWallet("cold", PINNED.descriptor, COINS))
    unsigned = Statement(st.claims, bip127=(ReservePsbt(st.bip127[0].wallet, to_text(bare)),))
    with pytest.raises(ProofInvalid, match="missing signature: coin"):
        btcverify.check_control(unsigned)


def _rehashed(st: Statement, change) -> bytes:
    claims = copy.deepcopy(st.claims)
    change(claims)
    return Statement(claims, bip127=st.bip127).to_bytes()


def _twice(wallet: dict) -> None:
    wallet["utxos"].append(wallet["utxos"][0])
    wallet["balance"] = str(sum(int(u["amount"]) for u in wallet["utxos"]))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda c: c["bitcoin"]["wallets"][0].update(balance="1"), "is not the sum of its coins"),
        (lambda c: _twice(c["bitcoin"]["wallets"][0]), "twice"),
        (lambda c: c["bitcoin"]["wallets"][0]["utxos"][0].update(path="0/7"), "not the descriptor's at 0/7"),
        (lambda c: c["bitcoin"]["wallets"][0]["utxos"][0].update(height=201), "after the snapshot block"),
        (lambda c: c["bitcoin"]["wallets"][0].update(kind="hot"), "a hot wallet is wpkh()"),
        (lambda c: c["bitcoin"].update(network="mainnet"), "not mainnet keys"),
        (lambda c: c["bitcoin"].update(asset="DOGE"), "one of the statement's assets"),
        (lambda c: c["reserves"].update(BTC="1"), "not the wallets' sum"),
        (lambda c: c["assets"][1].update(chain_decimals=18, decimals=8), "8 decimals on chain"),
        (lambda c: c["wallets"][0]["balances"].update(BTC="1"), "unknown key"),
        (lambda c: c["bitcoin"]["wallets"][0].update(descriptor=PINNED.descriptor[:-1] + "x"), "checksum"),
    ],
)
def test_the_parser_refuses_bitcoin_claims_that_do_not_hold(change, fragment):
    with pytest.raises(StatementInvalid, match=fragment):
        parse_statement(_rehashed(bitcoin_statement(), change))


def _rule(symbol: str, decimals: int, **kw: object) -> AssetRule:
    return AssetRule(symbol, True, decimals, 1, 0, **kw)  # type: ignore[arg-type]


def test_the_policy_decides_which_asset_is_on_bitcoin():
    """A statement counts the policy's bitcoin asset from the Bitcoin wallets only: an Ethereum balance counted
    as BTC (the host's old trick of a format 3 statement) or BTC of another network is refused."""
    rules = {"ETH": _rule("ETH", 18), "BTC": _rule("BTC", 8, chain="bitcoin", network=NETWORK)}
    check_assets(bitcoin_statement(), rules, decimals=True)
    testnet = {**rules, "BTC": _rule("BTC", 8, chain="bitcoin", network="testnet")}
    with pytest.raises(StatementAssetContract, match="on Bitcoin regtest; the policy's BTC is on bitcoin testnet"):
        check_assets(bitcoin_statement(), testnet, decimals=True)
    eth_only = copy.deepcopy(bitcoin_statement().claims)
    del eth_only["bitcoin"]
    eth_only["wallets"][0]["balances"]["BTC"] = eth_only["reserves"]["BTC"]
    with pytest.raises(StatementAssetContract, match="counts BTC on Ethereum; the policy's BTC is on bitcoin"):
        check_assets(Statement(eth_only), rules, decimals=True)
