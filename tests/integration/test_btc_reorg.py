"""A reorg deeper than the confirmation depth, on the real regtest node (``invalidateblock``): a Bitcoin payment
already confirmed, and no longer followed, is taken out of the chain. The watch over confirmed payments notices,
records it, shows it to the operators, counts it as unpaid in the hot position, and the same signed bytes are
mined again: each withdrawal paid exactly once."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from decimal import Decimal

import pytest
from sqlalchemy import select

from custody.clock import FixedClock
from custody.cold.btcexecution import BtcFollower
from custody.ledger.policy import PolicyCache
from custody.ledger.positions import hot_position
from custody.ops import status
from custody.store.models import AuditEntry, BtcBatch, BtcColdWallet, BtcHotWallet
from tests.integration.bitcoin_helpers import mine
from tests.integration.test_btc_hot import (  # noqa: F401  (hot: the fixture)
    CONFIRMATIONS,
    SAT,
    Hot,
    confirmed_once,
    fund,
    hot,
    queue,
    received,
    states,
    versions,
)

pytestmark = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


def kinds(d: Hot, subject: str) -> Counter[str]:
    with d.store.read() as s:
        return Counter(e.kind for e in s.execute(select(AuditEntry).where(AuditEntry.subject == subject)).scalars())


def position(d: Hot):
    with d.store.read() as s:
        return hot_position(s, PolicyCache().get(s).policy.assets["BTC"])


def test_a_deep_reorg_of_a_confirmed_hot_payment_is_watched_and_mined_again_once(hot, bitcoind, tmp_path):  # noqa: F811
    d = hot
    fund(d, bitcoind, ["3"])
    [wid] = queue(d, tmp_path, [("0.5", d.receivers[0])])
    before = received(d)
    worker = d.worker()
    worker.step()
    [tx] = versions(d)
    first, _ = mine(bitcoind, CONFIRMATIONS)
    worker.step()
    assert states(d, [wid]) == ["confirmed"] and versions(d)[0].block_hash == first
    paid = position(d)
    assert paid.reserved == 0 and paid.balance == 3 * SAT - SAT // 2 - int(tx.fee)

    node = bitcoind.node()
    node.call("invalidateblock", first)  # both blocks: deeper than the confirmations the payment settled at
    node.call("syncwithvalidationinterfacequeue")
    try:
        worker.step()
        [row] = versions(d)
        assert (row.state, row.block_hash, row.block_height) == ("orphaned", None, None)
        assert states(d, [wid]) == ["confirmed"]  # settled stays settled: nothing queues or signs it again
        assert kinds(d, tx.payment)["btchot.rollback_detected"] == 1
        shown = "\n".join(status.render(status.gather(d.store)))
        assert f"BITCOIN ROLLBACK: hot payment {tx.payment}" in shown, shown
        assert [r["txid"] for r in status.bitcoin_rollbacks(d.store)] == [tx.txid]
        # the reading (now at a lower height) shows the coins unspent; the withdrawal reserves them again
        unpaid = position(d)
        assert (unpaid.balance, unpaid.reserved) == (3 * SAT, SAT // 2)
        assert node.call("getrawtransaction", tx.txid) == tx.raw  # the same bytes, back in the mempool
        worker.step()
        assert kinds(d, tx.payment)["btchot.rollback_detected"] == 1  # recorded once
        # a longer chain without the old blocks (mined elsewhere: the same template would rebuild them)
        again = mine(bitcoind, CONFIRMATIONS, str(d.receiver.call("getnewaddress", "", "bech32")))
        worker.step()
    finally:
        node.call("reconsiderblock", first)
    [row] = versions(d)
    assert (row.state, row.txid, row.block_hash) == ("confirmed", tx.txid, again[0])
    assert kinds(d, tx.payment)["btchot.remined"] == 1
    assert states(d, [wid]) == ["confirmed"]
    confirmed_once(d, [wid])
    assert received(d)[d.receivers[0]] - before[d.receivers[0]] == Decimal("0.5")
    assert position(d).reserved == 0 and status.bitcoin_rollbacks(d.store) == []
    with d.store.read() as s:
        assert s.execute(select(BtcHotWallet.balance)).scalar_one() == paid.balance


def test_a_deep_reorg_of_a_confirmed_cold_batch_is_watched_and_mined_again_once(store, bitcoind):
    """The cold side's watch (``BtcFollower.watch_settled``) on a batch as the follower leaves it once confirmed:
    its final transaction (here one of a node wallet that plays the cold wallet's watch-only one: the watch only
    looks at the chain, the ceremony before it is test_btc_cold's) mined, deep enough, recorded."""
    name = f"cold-{uuid.uuid4().hex[:8]}"
    wallet = bitcoind.funded_wallet(name)
    to = str(bitcoind.faucet().call("getnewaddress", "", "bech32"))
    txid = str(wallet.call("sendtoaddress", to, Decimal("0.25")))
    raw = str(wallet.call("gettransaction", txid)["hex"])
    first, _ = mine(bitcoind, CONFIRMATIONS)
    height = int(wallet.call("gettransaction", txid)["blockheight"])
    now = int(time.time())
    with store.transaction() as s:
        s.add(
            BtcColdWallet(
                wallet=name,
                network="regtest",
                descriptor="wsh(...)#x",
                threshold=2,
                owners="[]",
                raw=b"",
                created_at=now,
            )
        )
        s.flush()
        s.add(
            BtcBatch(
                id=str(uuid.uuid4()),
                wallet=name,
                asset="BTC",
                state="confirmed",
                txid=txid,
                psbt="",
                raw=b"",
                fee=1000,
                policy_version=1,
                withdrawals=1,
                created_at=now,
                expires_at=now + 3600,
                updated_at=now,
                final_tx=raw,
                block_hash=first,
                block_height=height,
            )
        )
    follower = BtcFollower(store, bitcoind.node(), CONFIRMATIONS, FixedClock(now))
    assert not follower.watch_settled(now)  # in its block: nothing to do

    def batch() -> BtcBatch:
        with store.read() as s:
            return s.execute(select(BtcBatch)).scalar_one()

    node = bitcoind.node()
    node.call("invalidateblock", first)
    node.call("syncwithvalidationinterfacequeue")
    try:
        assert follower.watch_settled(now)
        assert (batch().state, batch().block_hash) == ("orphaned", None)
        with store.read() as s:
            audited = [e.kind for e in s.execute(select(AuditEntry).where(AuditEntry.subject == batch().id)).scalars()]
        assert audited == ["batch.rollback_detected"]
        [shown] = status.bitcoin_rollbacks(store)
        assert (shown["wallet"], shown["txid"]) == ("cold", txid)
        assert node.call("getrawtransaction", txid) == raw  # the same bytes, back in the mempool
        again = mine(bitcoind, CONFIRMATIONS, to)
        assert follower.watch_settled(now)
        assert not follower.watch_settled(now)  # settled again, in its new block
    finally:
        node.call("reconsiderblock", first)
    assert (batch().state, batch().txid, batch().block_hash) == ("confirmed", txid, again[0])
    with store.read() as s:
        audited = [e.kind for e in s.execute(select(AuditEntry).where(AuditEntry.subject == batch().id)).scalars()]
    assert audited == ["batch.rollback_detected", "batch.remined"]
    assert status.bitcoin_rollbacks(store) == []
