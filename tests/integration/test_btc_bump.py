"""Fee bumps of stuck Bitcoin cold batches on a real bitcoind -regtest: a broadcast batch left unmined is reported
stuck, `custody batch bump` exports its replacement (same withdrawals, every coin of the stuck transaction, a higher
fee within the policy's caps), the owners sign it with the real signer, the import sends it in place of the stuck
one, and whichever of the two is mined settles the withdrawals exactly once."""

from __future__ import annotations

import json
import logging
from collections import Counter
from decimal import Decimal

import pytest
from embit.psbt import PSBT
from sqlalchemy import select

from custody.clock import SystemClock
from custody.cold import btcexecution
from custody.errors import BitcoinNodeError
from custody.ledger import audit
from custody.ledger.policy import PolicyCache
from custody.ops.balances import read_balances
from custody.store.models import AuditEntry, BtcBatch, ChainBalance, Withdrawal
from signer.btcbatch import parse_btc_batch_file
from tests.cli_helpers import custody
from tests.integration.test_btc_cold import (
    CONFIRMATIONS,
    BtcDaemon,
    btc,  # noqa: F401  (the fixture)
    export,
    fund,
    mine,
    queue,
    sign,
    states,
    watch_wallet,
)

# PostgreSQL only (the production database): see tests/integration/test_btc_cold.py
pytestmark = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
SAT = 10**8


def follower(d: BtcDaemon, bitcoind, stuck_after: int = 3600) -> btcexecution.BtcFollower:
    return btcexecution.BtcFollower(d.store, bitcoind.node(), CONFIRMATIONS, SystemClock(), stuck_after=stuck_after)


def broadcast_batch(d: BtcDaemon, bitcoind, tmp_path, amounts: list[tuple[str, str]]) -> tuple[list[str], BtcBatch]:
    """Queued, exported, signed by op0 and op1, imported: broadcast and left in the mempool (nothing mined)."""
    ids = queue(d, tmp_path, amounts)
    batch_file = export(d, tmp_path / "out")
    sigs = [tmp_path / f"sig{i}.json" for i in range(2)]
    for op, out in zip(d.ops[:2], sigs, strict=True):
        sign(op, batch_file, out, d.passphrase_file)
    custody("batch", "import", *sigs, "--wait", "0", *d.cfg)
    assert states(d, ids) == ["broadcast"] * len(ids)
    with d.store.read() as s:
        batch = s.execute(select(BtcBatch)).scalar_one()
    assert bitcoind.node().call("getmempoolentry", batch.txid)
    return ids, batch


def bump(d: BtcDaemon, batch_id: str, out, *extra: object, ok: bool = True):
    return custody("batch", "bump", batch_id, "--out", out, *extra, *d.cfg, ok=ok)


def sign_bump(d: BtcDaemon, tmp_path, bump_file) -> list:
    """The new ceremony: the same two owners, whose signers signed the stuck transaction, accept its bump."""
    sigs = [tmp_path / f"bump-sig{i}.json" for i in range(2)]
    for op, out in zip(d.ops[:2], sigs, strict=True):
        sign(op, bump_file, out, d.passphrase_file)
    return sigs


def in_mempool(bitcoind, txid: str) -> bool:
    try:
        bitcoind.node().call("getmempoolentry", txid)
    except BitcoinNodeError:
        return False
    return True


def confirmed_events(d: BtcDaemon, ids: list[str]) -> Counter:
    with d.store.read() as s:
        rows = s.execute(
            select(AuditEntry.subject).where(AuditEntry.kind == "withdrawal.confirmed", AuditEntry.subject.in_(ids))
        )
        return Counter(rows.scalars())



def above(d, batch_id: str, more: int) -> int:
    """A bump rate ``more`` sat/vB over the stuck batch's own: the node's estimate, and so the stuck rate, depends
    on what the session's shared regtest node has seen before (the hot wallet's tests raise it)."""
    with d.store.read() as s:
        data = s.execute(
            select(AuditEntry.data).where(AuditEntry.kind == "batch.exported", AuditEntry.subject == batch_id)
        ).scalar_one()
    return int(json.loads(data)["fee_rate"]) + more

def test_a_stuck_batch_is_bumped_and_the_replacement_settles_it(btc, bitcoind, tmp_path, caplog):  # noqa: F811  (the fixture)
    d = btc
    fund(d, bitcoind)
    amounts = [("0.5", d.receivers[0]), ("0.25", d.receivers[1])]
    ids, stuck = broadcast_batch(d, bitcoind, tmp_path, amounts)

    # reported stuck once: one log line, one audit entry, in `custody status`
    caplog.set_level(logging.WARNING, logger="custody.bitcoin")
    follow = follower(d, bitcoind, stuck_after=0)
    follow.step()
    follow.step()
    assert sum("not mined" in r.getMessage() for r in caplog.records) == 1
    with d.store.read() as s:
        noted = s.execute(select(AuditEntry).where(AuditEntry.kind == "batch.stuck")).scalars().all()
    assert [e.subject for e in noted] == [stuck.id]
    status = json.loads(custody("status", "--json", "--config", d.config).output)
    assert status["bitcoin"]["stuck"] == [stuck.id]
    [sent] = status["bitcoin"]["batches_sent"]
    assert sent["state"] == "broadcast" and sent["confirmations"] == 0 and sent["txid"] == stuck.txid
    assert f"STUCK: `custody batch bump {stuck.id}`" in custody("status", "--config", d.config).output

    # the policy's cap (max_fee_rate = 50) and BIP-125's floor are refused with what they are
    over = bump(d, stuck.id, tmp_path / "bump", "--fee-rate", 60, ok=False)
    assert over.exit_code != 0 and "max_fee_rate of 50 sat/vB" in over.output
    under = bump(d, stuck.id, tmp_path / "bump", "--fee-rate", 5, ok=False)
    assert under.exit_code != 0 and "BIP-125" in under.output
    assert not list((tmp_path / "bump").glob("*.json"))

    rate = above(d, stuck.id, 10)
    out = bump(d, stuck.id, tmp_path / "bump", "--fee-rate", rate).output
    bump_file = next((tmp_path / "bump").glob("btc-batch-*.json"))
    doc = parse_btc_batch_file(bump_file.read_bytes()).batch
    original = parse_btc_batch_file(stuck.raw).batch
    assert doc.replaces == stuck.id and doc.withdrawals == original.withdrawals
    old_in = {(v.txid, v.vout) for v in PSBT.from_string(original.psbt).tx.vin}
    assert old_in <= {(v.txid, v.vout) for v in PSBT.from_string(doc.psbt).tx.vin}
    with d.store.read() as s:
        row = s.get_one(BtcBatch, doc.id)
    assert row.fee > stuck.fee and f"{rate} sat/vB" in out
    again = bump(d, stuck.id, tmp_path / "bump2", ok=False)  # one bump at a time
    assert again.exit_code != 0 and doc.id in again.output

    # waiting for the owners, by name
    status = json.loads(custody("status", "--json", "--config", d.config).output)
    [waiting] = status["bitcoin"]["batches_waiting"]
    assert waiting["id"] == doc.id and waiting["replaces"] == stuck.id
    assert [m["name"] for m in waiting["missing"]] == ["op0", "op1", "op2"]
    assert status["bitcoin"]["batches_sent"][0]["bumped_by"] == doc.id

    sigs = sign_bump(d, tmp_path, bump_file)  # the real signer accepts the fee bump
    custody("batch", "import", sigs[0], "--wait", "0", *d.cfg)
    status = json.loads(custody("status", "--json", "--config", d.config).output)
    [waiting] = status["bitcoin"]["batches_waiting"]
    assert [m["name"] for m in waiting["signed_by"]] == ["op0"]
    assert [m["name"] for m in waiting["missing"]] == ["op1", "op2"]
    custody("batch", "import", sigs[1], "--wait", "0", *d.cfg)

    # the replacement is in the mempool in place of the stuck transaction; the withdrawals follow it
    assert in_mempool(bitcoind, row.txid) and not in_mempool(bitcoind, stuck.txid)
    with d.store.read() as s:
        assert s.get_one(BtcBatch, stuck.id).state == "replaced"
        assert s.get_one(BtcBatch, doc.id).state == "broadcast"
        rows = s.execute(select(Withdrawal).where(Withdrawal.id.in_(ids))).scalars().all()
        assert {(w.batch_id, w.tx_hash) for w in rows} == {(doc.id, row.txid)}

    mine(bitcoind, CONFIRMATIONS)
    custody("batch", "follow", "--config", d.config)
    assert states(d, ids) == ["confirmed"] * 2
    assert confirmed_events(d, ids) == Counter({i: 1 for i in ids})
    received = {a: Decimal(d.receiver.call("getreceivedbyaddress", a)) for a in d.receivers[:2]}
    assert received == {a: Decimal(x) for x, a in amounts}
    with d.store.read() as s:
        assert s.get_one(BtcBatch, stuck.id).state == "replaced"
        assert s.get_one(BtcBatch, doc.id).state == "confirmed"
        kinds = [e.kind for e in s.execute(select(AuditEntry).where(AuditEntry.subject == stuck.id)).scalars()]
    assert "batch.replaced" in kinds
    assert audit.verify_log(d.store).ok

    # the cold balance the follower recorded is the watch-only wallet's, and GET /v1/balances shows it
    watch = watch_wallet(d, bitcoind)
    trusted = Decimal(str(watch.call("getbalances")["mine"]["trusted"]))
    follower(d, bitcoind).step()
    with d.store.read() as s:
        reading = s.get_one(ChainBalance, (watch.wallet, "BTC"))
    assert reading.amount == int(trusted * SAT)
    [position] = [p for p in read_balances(d.store, PolicyCache()) if p.asset == "BTC"]
    assert position.cold == int(trusted * SAT)
    status = json.loads(custody("status", "--json", "--config", d.config).output)
    assert Decimal(status["bitcoin"]["wallets"][0]["balance"]) == trusted
    assert status["bitcoin"]["batches_sent"] == [] and status["bitcoin"]["stuck"] == []


def test_the_original_mined_before_its_bump_is_imported(btc, bitcoind, tmp_path):  # noqa: F811  (the fixture)
    """The bump was exported and signed, then the stuck transaction got mined after all: the bump is cancelled,
    never sent, and the withdrawals are confirmed once, with the original's txid."""
    d = btc
    fund(d, bitcoind)
    amounts = [("0.75", d.receivers[2])]
    ids, stuck = broadcast_batch(d, bitcoind, tmp_path, amounts)
    bump(d, stuck.id, tmp_path / "bump")  # the default rate: the old one plus the incremental relay fee
    bump_file = next((tmp_path / "bump").glob("btc-batch-*.json"))
    doc = parse_btc_batch_file(bump_file.read_bytes()).batch
    with d.store.read() as s:
        bump_txid = s.get_one(BtcBatch, doc.id).txid
    sigs = sign_bump(d, tmp_path, bump_file)

    mine(bitcoind, CONFIRMATIONS)  # the original is mined; nobody followed it yet
    refused = custody("batch", "import", *sigs, "--wait", "0", *d.cfg, ok=False)
    assert refused.exit_code != 0 and "cancelled" in refused.output and stuck.id in refused.output
    with d.store.read() as s:
        assert s.get_one(BtcBatch, doc.id).state == "cancelled" and s.get_one(BtcBatch, doc.id).final_tx is None
    again = custody("batch", "import", *sigs, "--wait", "0", *d.cfg, ok=False)  # and stays so
    assert again.exit_code != 0 and "cancelled" in again.output

    custody("batch", "follow", "--config", d.config)
    assert states(d, ids) == ["confirmed"]
    assert confirmed_events(d, ids) == Counter({ids[0]: 1})
    with d.store.read() as s:
        assert s.execute(select(Withdrawal.tx_hash).where(Withdrawal.id == ids[0])).scalar_one() == stuck.txid
        assert s.get_one(BtcBatch, stuck.id).state == "confirmed"
    with pytest.raises(BitcoinNodeError):
        bitcoind.node().call("getrawtransaction", bump_txid)
    assert Decimal(d.receiver.call("getreceivedbyaddress", d.receivers[2])) == Decimal("0.75")
    assert audit.verify_log(d.store).ok


def test_the_original_confirmed_cancels_an_unsigned_bump(btc, bitcoind, tmp_path):  # noqa: F811  (the fixture)
    """The follower sees the stuck transaction confirmed while its bump waits for signatures: the bump is
    cancelled at once (its signatures are then refused), and a confirmed batch cannot be bumped."""
    d = btc
    fund(d, bitcoind)
    ids, stuck = broadcast_batch(d, bitcoind, tmp_path, [("0.1", d.receivers[0])])
    bump(d, stuck.id, tmp_path / "bump", "--fee-rate", above(d, stuck.id, 5))
    bump_file = next((tmp_path / "bump").glob("btc-batch-*.json"))
    doc = parse_btc_batch_file(bump_file.read_bytes()).batch
    mine(bitcoind, CONFIRMATIONS)
    follower(d, bitcoind).step()
    assert states(d, ids) == ["confirmed"]
    with d.store.read() as s:
        assert s.get_one(BtcBatch, doc.id).state == "cancelled"
        reasons = [
            json.loads(e.data)["reason"]
            for e in s.execute(
                select(AuditEntry).where(AuditEntry.kind == "batch.cancelled", AuditEntry.subject == doc.id)
            ).scalars()
        ]
    assert len(reasons) == 1 and "mined first" in reasons[0]
    refused = bump(d, stuck.id, tmp_path / "bump2", ok=False)
    assert refused.exit_code != 0 and "confirmed" in refused.output


def test_the_original_mined_after_its_bump_was_sent(btc, bitcoind, tmp_path):  # noqa: F811  (the fixture)
    """The bump is in the node's mempool, but a miner who never saw it mines the stuck transaction: the follower
    finds the bump conflicted and settles the withdrawals once, with the original's txid; the bump is replaced."""
    d = btc
    fund(d, bitcoind)
    amounts = [("0.3", d.receivers[0]), ("0.2", d.receivers[1])]
    ids, stuck = broadcast_batch(d, bitcoind, tmp_path, amounts)
    bump(d, stuck.id, tmp_path / "bump", "--fee-rate", above(d, stuck.id, 15))
    bump_file = next((tmp_path / "bump").glob("btc-batch-*.json"))
    doc = parse_btc_batch_file(bump_file.read_bytes()).batch
    custody("batch", "import", *sign_bump(d, tmp_path, bump_file), "--wait", "0", *d.cfg)
    with d.store.read() as s:
        bump_txid = s.get_one(BtcBatch, doc.id).txid
        assert s.get_one(BtcBatch, stuck.id).state == "replaced"
    assert in_mempool(bitcoind, bump_txid) and not in_mempool(bitcoind, stuck.txid)

    # a block with the original transaction (the chain does not care what this node's mempool holds)
    address = str(d.receiver.call("getnewaddress", "", "bech32"))
    bitcoind.node().call("generateblock", address, [stuck.final_tx])
    mine(bitcoind, CONFIRMATIONS - 1)
    assert not in_mempool(bitcoind, bump_txid)
    follower(d, bitcoind).step()
    assert states(d, ids) == ["confirmed"] * 2
    assert confirmed_events(d, ids) == Counter({i: 1 for i in ids})
    with d.store.read() as s:
        rows = s.execute(select(Withdrawal).where(Withdrawal.id.in_(ids))).scalars().all()
        assert {(w.batch_id, w.tx_hash) for w in rows} == {(stuck.id, stuck.txid)}
        assert s.get_one(BtcBatch, stuck.id).state == "confirmed"
        assert s.get_one(BtcBatch, doc.id).state == "replaced"
    received = {a: Decimal(d.receiver.call("getreceivedbyaddress", a)) for a in d.receivers[:2]}
    assert received == {a: Decimal(x) for x, a in amounts}
    follower(d, bitcoind).step()  # nothing more happens
    assert confirmed_events(d, ids) == Counter({i: 1 for i in ids})
    assert audit.verify_log(d.store).ok
