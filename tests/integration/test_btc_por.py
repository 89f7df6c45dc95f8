"""Proof of reserves with Bitcoin on a real bitcoind -regtest: a funded 2-of-3 cold descriptor wallet and the hot
BIP-84 wallet, a snapshot of their coins at one Bitcoin block (format 4), two owners signing the cold wallet's
BIP-127 reserve PSBT offline with the real signer CLI, attach, and `custody por verify --btc-rpc` against the node;
then a coin spent after the snapshot (still verifies, as of its block) and claims that do not hold (refused)."""

from __future__ import annotations

import copy
import json
import time
from decimal import Decimal

import pytest
from embit.networks import NETWORKS

from custody.config import BitcoinSettings, render_config
from custody.errors import ProofInvalid
from custody.hot import btcwallet as hot_wallet
from custody.keys import load_hot_bitcoin_accounts
from custody.por import btcverify
from signer.porbtc import commitment_txid, parse_psbt, to_text
from signer.porstatement import Statement, parse_statement
from tests.cli_helpers import custody, signer
from tests.integration.bitcoin_helpers import mine
from tests.integration.conftest import PASSPHRASE
from tests.integration.test_btc_cold import CONFIRMATIONS, fund
from tests.integration.test_btc_cold import btc as btc  # the cold wallet fixture, with its operators

SAT = 10**8
LIABILITIES = "account_id,BTC,ETH\nalice,8,0\nbob,3.25,0\ncarol,0.00000001,0\n"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_snapshot_sign_offline_attach_and_verify_bitcoin_reserves(btc, bitcoind, chain, tmp_path, db_url):
    d = btc
    settings = BitcoinSettings(bitcoind.url, bitcoind.user, bitcoind.password, confirmations=CONFIRMATIONS)
    d.config.write_text(render_config(d.data_dir, db_url, rpc_url=chain.anvil.url, bitcoin=settings))
    node = bitcoind.node()
    accounts = load_hot_bitcoin_accounts(d.data_dir, PASSPHRASE)
    acct = hot_wallet.account(node, "regtest", accounts)
    hot_wallet.ensure(d.store, node, acct, int(time.time()))
    fund(d, bitcoind)  # 10 BTC to the cold wallet
    cold_address = custody("cold", "address", "--network", "regtest", "--config", d.config).output.strip()
    bitcoind.faucet().call("sendtoaddress", cold_address, Decimal("2.5"))
    hot_txid = str(bitcoind.faucet().call("sendtoaddress", acct.address(0, 0), Decimal("1.5")))
    mine(bitcoind, 1)

    csv = tmp_path / "balances.csv"
    csv.write_text(LIABILITIES)
    snap = tmp_path / "snap"
    out = custody("por", "snapshot", "--liabilities", csv, "--out", snap, "--config", d.config, *d.cfg[2:]).output
    assert "signer por sign-bitcoin" in out
    statement_file = snap / "statement.json"
    st = parse_statement(statement_file.read_bytes())
    b = st.claims["bitcoin"]
    assert st.format == 4 and b["asset"] == "BTC" and b["network"] == "regtest"
    assert b["block"] == {"height": node.call("getblockcount"), "hash": node.call("getbestblockhash")}
    kinds = {w["kind"]: w for w in b["wallets"]}
    assert kinds["cold"]["balance"] == str(1250 * SAT // 100) and len(kinds["cold"]["utxos"]) == 2
    assert kinds["hot"]["balance"] == str(150 * SAT // 100)
    assert kinds["hot"]["utxos"][0]["outpoint"].startswith(hot_txid)
    assert st.claims["reserves"]["BTC"] == str(14 * SAT) and st.claims["coverage"]["BTC"] == "1.2444"
    assert "ETH" in st.claims["wallets"][0]["balances"] and "BTC" not in st.claims["wallets"][0]["balances"]
    rpc = ("--rpc", chain.anvil.url, "--btc-rpc", f"http://{bitcoind.user}:{bitcoind.password}@{bitcoind.url[7:]}")

    # before the owners sign, the verifier fails closed on the cold wallet's proof
    result = custody("por", "verify", statement_file, *rpc, ok=False)
    assert result.exit_code == 1 and "missing signature: coin" in result.output and "cold" in result.output
    assert bitcoind.password not in result.output

    # the host hands an owner a spend in disguise (input 0 one of the wallet's own coins, ready to sign): the
    # real signer CLI refuses it with its code and writes nothing
    disguised = parse_psbt((snap / "btc-cold-reserve.psbt").read_bytes())
    first, coin1 = disguised.inputs[0], disguised.inputs[1]
    first.txid, first.vout, first.witness_utxo = coin1.txid, coin1.vout, coin1.witness_utxo
    (tmp_path / "disguised.psbt").write_text(to_text(disguised))
    op = d.ops[1]
    refused = signer(
        "por", "sign-bitcoin", statement_file, tmp_path / "disguised.psbt", "--keystore", op.keystore,
        "--out", tmp_path / "x.psbt", "--yes", "--passphrase-file", d.passphrase_file, "--state", op.state, ok=False,
    ).output  # fmt: skip
    assert "[btc_reserve_spend]" in refused and not (tmp_path / "x.psbt").exists()

    sigs = [tmp_path / f"op{i}.psbt" for i in (0, 2)]
    for op, path in zip((d.ops[0], d.ops[2]), sigs, strict=True):
        shown = signer(
            "por", "sign-bitcoin", statement_file, snap / "btc-cold-reserve.psbt", "--keystore", op.keystore,
            "--out", path, "--yes", "--passphrase-file", d.passphrase_file, "--state", op.state,
        ).output  # fmt: skip
        assert f"input 0 commits to statement hash {st.hash.hex()}" in shown and "2 coins, 12.5 BTC" in shown
    out = custody("por", "attach", statement_file, *sigs).output
    assert out.count("attached 2 signatures for the Bitcoin wallet") == 2

    verified = custody("por", "verify", statement_file, *rpc).output
    height = b["block"]["height"]
    assert f"ok  Bitcoin block {height} has the statement's hash" in verified
    assert f"cold Bitcoin wallet …#{kinds['cold']['descriptor'][-8:]}: 2 coins of 12.5 BTC existed unspent" in verified
    assert "its BIP-127 reserve PSBT commits to this statement and its 2 coins" in verified
    assert "NOT CHECKED" not in verified
    offline = custody("por", "verify", statement_file, "--no-rpc").output
    assert "NOT CHECKED  the Bitcoin coins' existence" in offline
    half = custody("por", "verify", statement_file, *rpc[:2], ok=False)
    assert half.exit_code == 1 and "--btc-rpc URL" in half.output

    # the hot coin is spent after the snapshot: the statement still holds, as the figures of its block
    coin = kinds["hot"]["utxos"][0]
    txid, vout = coin["outpoint"].split(":")
    branch, index = (int(x) for x in coin["path"].split("/"))
    wif = accounts[1].child(branch, index).wif(NETWORKS["regtest"])
    to = str(d.receiver.call("getnewaddress", "", "bech32"))
    raw = node.call("createrawtransaction", [{"txid": txid, "vout": int(vout)}], [{to: Decimal("1.4999")}])
    prev = [{"txid": txid, "vout": int(vout), "scriptPubKey": coin["script"], "amount": Decimal("1.5")}]
    signed = node.call("signrawtransactionwithkey", raw, [wif], prev)
    assert signed["complete"]
    node.call("sendrawtransaction", signed["hex"])
    mine(bitcoind, 1)
    again = custody("por", "verify", statement_file, *rpc).output
    assert f"hot Bitcoin wallet …#{kinds['hot']['descriptor'][-8:]}: 1 coins of 1.5 BTC existed unspent at block " \
        f"{height}; 1 spent since, in blocks after it" in again  # fmt: skip

    # claims the node contradicts: the same coins at the newer block (the hot coin was spent by then), a coin
    # with another amount, a block that is not the chain's
    later = copy.deepcopy(st.claims)
    later["bitcoin"]["block"] = {"height": height + 1, "hash": node.call("getblockhash", height + 1)}
    with pytest.raises(ProofInvalid, match=f"coin {txid}:{vout} was already spent at Bitcoin block {height + 1}"):
        btcverify.check_chain(Statement(later), node)
    altered = copy.deepcopy(st.claims)
    cold = next(w for w in altered["bitcoin"]["wallets"] if w["kind"] == "cold")
    cold_coin = cold["utxos"][0]
    cold_coin["amount"], cold["balance"] = str(int(cold_coin["amount"]) + 1), str(int(cold["balance"]) + 1)
    with pytest.raises(ProofInvalid, match=f"coin {cold_coin['outpoint']} holds .* the statement says"):
        btcverify.check_chain(Statement(altered), node)
    forked = copy.deepcopy(st.claims)
    forked["bitcoin"]["block"]["hash"] = "00" * 32
    with pytest.raises(ProofInvalid, match=f"Bitcoin block {height} on this node is not the statement's"):
        btcverify.check_chain(Statement(forked), node)

    # the node, a second implementation, reads the PSBT as BIP-127's: input 0 is the commitment (the txid as
    # bitcoind displays it), one output of the coins' total to OP_TRUE
    cold_psbt = json.loads(statement_file.read_text())["control"]["bip127"][0]["psbt"]
    decoded = node.call("decodepsbt", cold_psbt)["tx"]
    assert (decoded["vin"][0]["txid"], decoded["vin"][0]["vout"]) == (commitment_txid(st.hash), 0)
    assert [(o["value"], o["scriptPubKey"]["hex"]) for o in decoded["vout"]] == [(Decimal("12.5"), "51")]
