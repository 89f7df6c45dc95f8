"""Acceptance of Bitcoin (issue 18): 100 BTC withdrawals, hot and cold mixed, on a real bitcoind -regtest.

The exchange backend requests them through the real API server; the policy's hot limit (0.5 BTC) routes 50 to
the hot wallet and 50 to the cold wallet. The hot wallet's worker pays its 50 in one batched transaction; the
cold 50 go out as one PSBT batch that two of the three operators review and sign with the real signer CLI, and
`custody batch import` combines, finalizes and broadcasts. After the confirmations every recipient holds exactly
its amount, every withdrawal has exactly one ``withdrawal.confirmed`` entry, and the audit log verifies."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
from embit.transaction import Transaction
from sqlalchemy import select

from custody.api.client import CustodyClient
from custody.chain.bitcoindev import FAUCET
from custody.clock import SystemClock
from custody.cold.btcexecution import BtcFollower
from custody.config import BitcoinSettings, render_config
from custody.hot.btcfollow import BtcHot
from custody.hot.btcpayer import BtcHotSettings
from custody.keys import create_daemon_keys, load_hot_bitcoin_accounts
from custody.ledger import audit
from custody.store.db import Store
from custody.store.models import AuditEntry, BtcBatch, BtcHotTransaction, BtcHotWallet, HotWallet, Withdrawal
from policies.loader import load_policy_toml
from signer.btcbatch import parse_btc_batch_file
from tests.cli_helpers import custody
from tests.conftest import add_client, apply_policy, running_server
from tests.integration.bitcoin_helpers import batch_call, btc_policy_text, faucet_holding, mine
from tests.integration.conftest import PASSPHRASE, operators, prepare_signer, sign_as

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # what `make demo` runs on
SAT = 10**8
CONFIRMATIONS = 2
HOT_LIMIT = Decimal("0.05")
# 50 at or below the hot limit (0.05 itself included: the limit is inclusive), 50 above it, interleaved; small,
# so that the session's faucet pays for them whatever earlier tests took from it
HOT = [Decimal(i) / 1000 for i in range(1, 51)]  # 0.001 .. 0.050: 1.275 BTC in all
COLD = [HOT_LIMIT + Decimal(i) / 1000 for i in range(1, 51)]  # 0.051 .. 0.100: 3.775 BTC in all
HOT_FUNDS, COLD_FUNDS = (Decimal(1), Decimal("0.5")), Decimal(4)
AMOUNTS = [a for pair in zip(HOT, COLD, strict=True) for a in pair]
LANES = 4


def test_100_withdrawals_hot_and_cold_mixed_each_paid_exactly_once(tmp_path, db_url, bitcoind):
    data = tmp_path / "data"
    data.mkdir()
    pw = tmp_path / "pass.txt"
    pw.write_text(PASSPHRASE + "\n")
    _, eth_hot = create_daemon_keys(data, PASSPHRASE, n=2**15)
    config = data / "custody.toml"
    settings = BitcoinSettings(bitcoind.url, bitcoind.user, bitcoind.password, confirmations=CONFIRMATIONS)
    config.write_text(render_config(data, db_url, bitcoin=settings))
    cfg = ("--config", config, "--passphrase-file", pw)
    store = Store(db_url)
    store.migrate()
    try:
        # one receiving address per withdrawal, so that what each address received is what one withdrawal paid
        name = f"mixed-{uuid.uuid4().hex[:8]}"
        bitcoind.node().call("createwallet", name)
        receivers = [str(a) for a in batch_call(bitcoind, name, "getnewaddress", [["", "bech32"]] * len(AMOUNTS))]
        now = int(time.time())
        policy = btc_policy_text(now, receivers, hot_limit=str(HOT_LIMIT), day_limit="100")
        apply_policy(store, load_policy_toml(policy), now)
        with store.transaction() as s:  # the hot wallet's address, which the Ethereum worker records first
            s.add(HotWallet(address=eth_hot, chain_id=31337, next_nonce=0, created_at=now))
        client = add_client(store)
        ops = operators(tmp_path, pw, 3)
        cards = [x for op in ops for x in ("--owner", op.card)]
        custody("cold", "create", "--chain", "bitcoin", "--network", "regtest", *cards, "--threshold", 2, *cfg)
        wallet_file = data / "btc-cold-wallet-regtest.json"
        for op in ops[:2]:
            prepare_signer(op, _Pinned(data, store), tmp_path, wallet_file)

        # funding: the hot wallet's account as the worker registers it, the cold wallet at a fresh address
        worker = BtcHot(
            store,
            bitcoind.node(),
            load_hot_bitcoin_accounts(data, PASSPHRASE),
            BtcHotSettings(CONFIRMATIONS, 600),
            SystemClock(),
        )
        worker.ready()
        with store.read() as s:
            hot_address = s.execute(select(BtcHotWallet.address)).scalar_one()
        cold_address = custody("cold", "address", "--network", "regtest", "--config", config).output.strip()
        sends = [*([hot_address, str(a)] for a in HOT_FUNDS), [cold_address, str(COLD_FUNDS)]]
        faucet_holding(bitcoind, sum(HOT_FUNDS) + COLD_FUNDS + 1)
        batch_call(bitcoind, FAUCET, "sendtoaddress", sends)
        mine(bitcoind, 1)
        assert worker.read_balance() == sum(HOT_FUNDS) * SAT

        # intake: 100 requests through the API from 4 connections at once, as the backend sends them
        with running_server(store, tmp_path) as srv:

            def requests(lane: int) -> list[tuple[int, dict]]:
                sent = []
                with CustodyClient(srv.url, client.name, client.key) as c:
                    for i in range(lane, len(AMOUNTS), LANES):
                        key = str(uuid.uuid4())
                        sent.append((i, c.create_withdrawal("BTC", str(AMOUNTS[i]), receivers[i], idempotency_key=key)))
                return sent

            with ThreadPoolExecutor(LANES) as pool:
                made = [w for _, w in sorted(x for lane in pool.map(requests, range(LANES)) for x in lane)]
        routes = [w["state"] for w in made]
        assert routes == ["queued_hot", "queued_cold"] * 50, Counter(routes)
        hot_ids = [w["id"] for w in made if w["state"] == "queued_hot"]
        cold_ids = [w["id"] for w in made if w["state"] == "queued_cold"]

        # hot: one pass of the worker pays all 50 in one transaction (50 payouts and the change)
        worker.step()
        with store.read() as s:
            [payment] = s.execute(select(BtcHotTransaction)).scalars().all()
        assert payment.state == "broadcast" and len(Transaction.from_string(payment.raw).vout) == 51
        assert bitcoind.node().call("getmempoolentry", payment.txid)

        # cold: one batch of the 50, reviewed and signed by two of the three operators on their signers
        out = custody("batch", "export", "--chain", "bitcoin", "--out", tmp_path / "out", *cfg).output
        batch_file = Path(out.split("file")[-1].strip())
        doc = parse_btc_batch_file(batch_file.read_bytes()).batch
        assert sorted(w.id for w in doc.withdrawals) == sorted(cold_ids)
        sigs = [tmp_path / f"{i}.sig.json" for i in range(2)]
        for op, sig in zip(ops[:2], sigs, strict=True):
            sign_as(op, batch_file, sig, pw)
        assert "signatures 2 of 2" in custody("batch", "import", *sigs, "--wait", "0", *cfg).output
        with store.read() as s:
            batch = s.execute(select(BtcBatch)).scalar_one()
        assert batch.state == "broadcast" and bitcoind.node().call("getmempoolentry", batch.txid)

        mine(bitcoind, CONFIRMATIONS)
        worker.step()
        BtcFollower(store, bitcoind.node(), CONFIRMATIONS, SystemClock()).step()

        with store.read() as s:
            rows = {w.id: w for w in s.execute(select(Withdrawal).where(Withdrawal.asset == "BTC")).scalars()}
            confirmed = Counter(
                e.subject
                for e in s.execute(select(AuditEntry).where(AuditEntry.kind == "withdrawal.confirmed")).scalars()
            )
        assert {w.state for w in rows.values()} == {"confirmed"} and len(rows) == 100
        assert {rows[i].tx_hash for i in hot_ids} == {payment.txid}
        assert {rows[i].tx_hash for i in cold_ids} == {batch.txid}
        assert confirmed == Counter(rows.keys()), "each withdrawal has exactly one withdrawal.confirmed entry"
        received = batch_call(bitcoind, name, "getreceivedbyaddress", [[a] for a in receivers])
        assert received == AMOUNTS
        # nothing else left either wallet: the hot one paid its 50 and a fee, the cold one its 50 and a fee
        with store.read() as s:
            hot_balance = s.execute(select(BtcHotWallet.balance)).scalar_one()
        assert hot_balance == (sum(HOT_FUNDS) - sum(HOT)) * SAT - int(payment.fee)
        checksum = json.loads(wallet_file.read_text())["descriptor"].rsplit("#", 1)[1]
        watch = bitcoind.node(f"custody-cold-regtest-{checksum}")
        cold_left = Decimal(str(watch.call("getbalances")["mine"]["trusted"]))
        assert cold_left * SAT == (COLD_FUNDS - sum(COLD)) * SAT - int(batch.fee)
        assert audit.verify_log(store).ok
    finally:
        store.dispose()


class _Pinned:
    """What ``prepare_signer`` reads of a daemon: its data directory and its store."""

    def __init__(self, data_dir: Path, store: Store) -> None:
        self.data_dir, self.store = data_dir, store
