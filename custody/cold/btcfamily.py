"""Which transaction of a Bitcoin batch's family settles its withdrawals, exactly once.

A family is a batch and the fee bumps of it (and of those, ``custody.cold.btcbump``). Each bump spends every coin
of the transaction it replaces, so at most one transaction of a family is ever mined, and that one settles the
withdrawals:

- a bump is sent (``on_sent``): the withdrawals follow it (batch and ``tx_hash``), the batch it replaces is
  ``replaced``;
- another transaction of the family is mined instead (``settle_conflict``, when the follower finds the live one
  conflicted): the withdrawals follow that one and are confirmed with its txid; the others are ``replaced``;
- the transaction a bump replaces is mined before the bump is sent (``void_if_settled`` at import and at the
  follower's pass, ``void_bumps_of`` when it confirms): the bump is ``cancelled`` and never sent.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.chain.bitcoin import BitcoinNode, open_wallet
from custody.cold.btcbatches import BtcState, unlock
from custody.errors import BitcoinNodeError
from custody.ledger import audit
from custody.ledger.states import State
from custody.ledger.transitions import move
from custody.store.db import Store
from custody.store.models import BtcBatch, BtcBatchInput, Withdrawal

log = logging.getLogger("custody.bitcoin")
RPC_NOT_IN_WALLET = -5
UNSENDABLE = (BtcState.EXPORTED, BtcState.SIGNED)  # a bump not sent yet: it can still be called off


def ancestors(s: Session, batch: BtcBatch) -> list[BtcBatch]:
    """The batches ``batch`` replaces, nearest first, that had a final transaction (a released batch's
    replacement has none before it)."""
    found: list[BtcBatch] = []
    current = batch
    while current.replaces is not None and len(found) < 100:
        parent = s.get(BtcBatch, current.replaces)
        if parent is None:
            break
        if parent.final_tx is not None:
            found.append(parent)
        current = parent
    return found


def descendants(s: Session, batch_id: str) -> list[BtcBatch]:
    found: list[BtcBatch] = []
    frontier = [batch_id]
    while frontier and len(found) < 100:
        children = list(s.execute(select(BtcBatch).where(BtcBatch.replaces.in_(frontier))).scalars())
        found += children
        frontier = [c.id for c in children]
    return found


def on_sent(s: Session, sent: BtcBatch, now: int) -> None:
    """``sent`` (a bump) is in the mempool in place of the batches it replaces: its withdrawals follow it."""
    for old in ancestors(s, sent):
        if old.state != BtcState.BROADCAST:
            continue
        moved = _repoint(s, old.id, sent)
        old.state, old.updated_at = BtcState.REPLACED, now
        audit.append(
            s,
            now,
            "batch.replaced",
            old.id,
            {"chain": "bitcoin", "txid": old.txid, "by": sent.id, "by_txid": sent.txid, "withdrawals": moved},
        )


def _repoint(s: Session, from_batch: str, to: BtcBatch) -> list[str]:
    rows = s.execute(
        select(Withdrawal)
        .where(Withdrawal.batch_id == from_batch, Withdrawal.state == State.BROADCAST)
        .with_for_update()
    ).scalars()
    moved = []
    for w in rows:
        w.batch_id, w.tx_hash = to.id, to.txid
        moved.append(w.id)
    return moved


def void_if_settled(store: Store, node: BitcoinNode, batch_id: str, now: int) -> str | None:
    """Cancel ``batch_id``, a bump not sent yet, if a transaction it replaces is mined; the reason, or None."""
    with store.read() as s:
        batch = s.get_one(BtcBatch, batch_id)
        if batch.state not in UNSENDABLE or batch.replaces is None:
            return None
        older = [(b.id, b.txid, b.state, b.wallet) for b in ancestors(s, batch)]
    for old_id, txid, state, wallet in older:
        if state == BtcState.CONFIRMED or _depth(open_wallet(node, wallet), txid) > 0:
            reason = f"batch {old_id}, which it replaces, was mined first (transaction {txid})"
            with store.transaction() as s:
                row = s.get_one(BtcBatch, batch_id, with_for_update=True)
                if row.state in UNSENDABLE:
                    _call_off(s, node, row, now, reason)
            return reason
    return None


def void_bumps_of(s: Session, node: BitcoinNode, confirmed: BtcBatch, now: int) -> None:
    """``confirmed`` is mined deep enough: its bumps not yet sent can never be."""
    for bump_row in descendants(s, confirmed.id):
        if bump_row.state in UNSENDABLE:
            reason = f"batch {confirmed.id}, which it replaces, was mined first (transaction {confirmed.txid})"
            _call_off(s, node, bump_row, now, reason)


def _call_off(s: Session, node: BitcoinNode, row: BtcBatch, now: int, reason: str) -> None:
    audit.append(s, now, "batch.cancelled", row.id, {"chain": "bitcoin", "from": row.state, "reason": reason})
    log.info("batch %s cancelled: %s", row.id, reason)
    row.state, row.updated_at = BtcState.CANCELLED, now
    inputs = list(s.execute(select(BtcBatchInput).where(BtcBatchInput.batch_id == row.id)).scalars())
    with contextlib.suppress(BitcoinNodeError):  # spent coins cannot be unlocked; sync_locks repairs the rest
        unlock(open_wallet(node, row.wallet), inputs)


def settle_conflict(store: Store, node: BitcoinNode, batch_id: str, confirmations: int, now: int) -> bool:
    """``batch_id`` is broadcast but conflicts with a mined transaction: if that is another of its family, deep
    enough, its withdrawals are confirmed with that transaction; True then."""
    with store.read() as s:
        batch = s.get_one(BtcBatch, batch_id)
        family = [*ancestors(s, batch), *descendants(s, batch_id)]
        candidates = [(b.id, b.txid) for b in family if b.final_tx is not None]
        wallet = batch.wallet
    watch = open_wallet(node, wallet)
    for other_id, txid in candidates:
        tx = _transaction(watch, txid)
        depth = int(tx.get("confirmations", 0))
        if depth < confirmations:
            continue
        with store.transaction() as s:
            live = s.get_one(BtcBatch, batch_id, with_for_update=True)
            winner = s.get_one(BtcBatch, other_id, with_for_update=True)
            if live.state != BtcState.BROADCAST:
                return False
            height = int(tx.get("blockheight", 0))
            moved = []
            for w in s.execute(
                select(Withdrawal)
                .where(Withdrawal.batch_id == batch_id, Withdrawal.state == State.BROADCAST)
                .order_by(Withdrawal.seq)
                .with_for_update()
            ).scalars():
                w.batch_id, w.tx_hash = winner.id, winner.txid
                move(s, w, State.CONFIRMED, now, by="batch-execute", batch=winner.id, tx_hash=winner.txid, block=height)
                moved.append(w.id)
            winner.state, winner.block_hash, winner.block_height = BtcState.CONFIRMED, str(tx.get("blockhash")), height
            winner.updated_at = now
            audit.append(
                s, now, "batch.confirmed", winner.id, {"chain": "bitcoin", "txid": winner.txid, "block": height}
            )
            others = [s.get_one(BtcBatch, b.id) for b in family if b.id not in (other_id, batch_id)]
            for loser in (live, *others):
                if loser.state in UNSENDABLE:
                    _call_off(s, node, loser, now, f"batch {winner.id} of its family was mined ({winner.txid})")
                elif loser.state == BtcState.BROADCAST:
                    loser.state, loser.updated_at = BtcState.REPLACED, now
                    data = {"chain": "bitcoin", "txid": loser.txid, "by": winner.id, "by_txid": winner.txid}
                    audit.append(s, now, "batch.replaced", loser.id, {**data, "withdrawals": moved})
            log.warning("batch %s: transaction %s of its family was mined instead of %s", batch_id, txid, live.txid)
        return True
    return False


def _transaction(watch: BitcoinNode, txid: str) -> dict[str, Any]:
    try:
        return dict(watch.call("gettransaction", txid))
    except BitcoinNodeError as exc:
        if exc.node_code != RPC_NOT_IN_WALLET:
            raise
        return {"confirmations": 0}


def _depth(watch: BitcoinNode, txid: str) -> int:
    return int(_transaction(watch, txid).get("confirmations", 0))
