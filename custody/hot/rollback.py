"""The rollback watch over what the hot wallet's sender settled: a settled transaction is not forgotten.

Step 4 of every transaction (after sign, broadcast and follow, ``custody.hot.sender``):

    watch:    for ``settled_watch_blocks`` blocks after its confirmation its block must stay canonical, and the
              chain's nonce for the wallet must never fall below the highest settled one. If either fails (a
              rollback deeper than the confirmation depth), the service freezes itself (``freeze.ROLLBACK``),
              records ``chain.rollback_detected``, and marks those transactions ``orphaned``: what they settled
              stays settled (their withdrawals stay ``confirmed``), nothing is queued or signed again. An orphan
              found mined again (the network re-included it) is ``mined`` again; the others are held until a
              quorum lifts the freeze, which is the decision to send their same stored bytes again (each can be
              mined at most once, at its own nonce).

Confirmation depth guards against ordinary reorgs; this watch is for the rare deep one, where paying again
automatically could pay twice, so it stops everything and leaves the decision to people.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.chain.ethereum import SENT, Receipt
from custody.errors import BroadcastRefused
from custody.hot.following import deep_enough
from custody.hot.sender import Sender, subject, versions
from custody.ledger import audit, freeze
from custody.ledger.states import TxState
from custody.store.models import HotTransaction

log = logging.getLogger("custody.hotwallet")


@dataclass
class _Watched:
    """What the last watch pass compared, so an unchanged chain is not asked again: a head with the same hash
    is the same chain, all the way down."""

    settled: tuple[tuple[int, str], int] | None = None  # the head and the highest settled nonce checked
    orphans: tuple[tuple[int, str], bool] | None = None  # the head and freeze under which orphans were looked at


@dataclass(frozen=True)
class _Settled:
    id: int
    nonce: int
    mined_block: int
    mined_block_hash: str | None


class RollbackWatch:
    """Watches the transactions one sender settled, and moves their orphans forward."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.store, self.node, self.clock = sender.store, sender.node, sender.clock
        self.address, self.settings = sender.address, sender.settings
        self._watched = _Watched()

    def __repr__(self) -> str:
        return f"RollbackWatch({self.address})"

    def watch(self) -> bool:
        """Check that what was settled still holds on chain, and move orphans (settled transactions whose block
        left the chain) forward. True if it found or did something."""
        head = self.node.head()
        with self.store.read() as s:  # the database first: what it says was settled, the chain then confirmed
            frozen = freeze.active(s) is not None
            orphans = list(
                s.execute(
                    select(HotTransaction)
                    .where(HotTransaction.wallet == self.address, HotTransaction.state == TxState.ORPHANED)
                    .order_by(HotTransaction.nonce)
                ).scalars()
            )
            top = s.execute(
                select(HotTransaction.nonce)
                .where(HotTransaction.wallet == self.address, HotTransaction.state == TxState.MINED)
                .order_by(HotTransaction.nonce.desc())
                .limit(1)
            ).scalar_one_or_none()
            recent: list[_Settled] = []
            if top is not None and (head, top) != self._watched.settled:
                since = head[0] - (self.settings.confirmations - 1) - self.settings.settled_watch_blocks
                recent = self._recent_settled(s, since)
        busy = False
        if top is not None and (head, top) != self._watched.settled:
            busy = self._check_settled(head, top, recent)
            self._watched.settled = None if busy else (head, top)
        if orphans and (head, frozen) != self._watched.orphans:  # a receipt appears only with a new block
            busy = self._orphans(orphans, head[0], frozen) or busy
            self._watched.orphans = (head, frozen)
        return busy

    def _recent_settled(self, s: Session, since_block: int, chunk: int = 500) -> list[_Settled]:
        """Settled versions mined at or after ``since_block``: the newest nonces (a later nonce is never in an
        earlier block), read newest first along the (wallet, nonce) index until one is older."""
        out: list[_Settled] = []
        below: int | None = None
        columns = (HotTransaction.id, HotTransaction.nonce, HotTransaction.mined_block, HotTransaction.mined_block_hash)
        while True:
            query = select(*columns).where(HotTransaction.wallet == self.address, HotTransaction.state == TxState.MINED)
            if below is not None:
                query = query.where(HotTransaction.nonce < below)
            rows = s.execute(query.order_by(HotTransaction.nonce.desc()).limit(chunk)).all()
            for row_id, nonce, block, block_hash in rows:
                if block is None:
                    continue
                if block < since_block:
                    return out
                out.append(_Settled(row_id, nonce, block, block_hash))
            if len(rows) < chunk:
                return out
            below = rows[-1][1]

    def _check_settled(self, head: tuple[int, str], top: int, recent: list[_Settled]) -> bool:
        """Compare what was settled with the chain now; on any contradiction, freeze (``_rolled_back``)."""
        # at the head the watch compares against, not "latest": a node answering from another height must not
        # look like a rollback
        count = self.node.transaction_count(self.address, head[0])
        why: dict[int, str] = {}  # row id -> what contradicts it
        if count <= top:
            with self.store.read() as s:
                gone = s.execute(
                    select(HotTransaction.id, HotTransaction.nonce).where(
                        HotTransaction.wallet == self.address,
                        HotTransaction.state == TxState.MINED,
                        HotTransaction.nonce >= count,
                        HotTransaction.nonce <= top,
                    )
                ).all()
            for row_id, nonce in gone:
                why[row_id] = (
                    f"the chain's nonce for the hot wallet is {count}, but nonce {nonce} was settled "
                    f"(nonces up to {top} were)"
                )
        canonical: dict[int, str | None] = {}
        for row in recent:
            if row.mined_block_hash is None:
                continue
            if row.mined_block not in canonical:
                canonical[row.mined_block] = self.node.block_hash(row.mined_block)
            now_there = canonical[row.mined_block]
            if now_there != row.mined_block_hash:
                what = f"now {now_there}" if now_there else f"the chain now ends at block {head[0]}"
                why.setdefault(
                    row.id, f"block {row.mined_block} ({row.mined_block_hash}) is no longer canonical ({what})"
                )
        if not why:
            return False
        self._rolled_back(why, head[0], count)
        return True

    def _rolled_back(self, why: dict[int, str], head: int, count: int) -> None:
        """Settled transactions contradicted by the chain: freeze, record ``chain.rollback_detected``, and mark
        them orphaned. What they settled stays as it is; nothing is queued or signed again."""
        with self.store.read() as s:
            rows = list(s.execute(select(HotTransaction).where(HotTransaction.id.in_(why))).scalars())
        where = {}
        for row in rows:  # where each one is now, for the operators (mined again elsewhere, or nowhere)
            receipt = self.sender.canonical_receipt(row.tx_hash)
            where[row.id] = "not on chain" if receipt is None else f"in block {receipt.block_number} now"
        now = self.clock.now()
        with self.store.transaction() as s:
            locked = list(
                s.execute(
                    select(HotTransaction)
                    .where(HotTransaction.id.in_(why))
                    .order_by(HotTransaction.nonce)
                    .with_for_update()
                ).scalars()
            )
            seen = {r.id: (r.mined_block, r.mined_block_hash) for r in rows}
            fresh = [
                r for r in locked if r.state == TxState.MINED and (r.mined_block, r.mined_block_hash) == seen.get(r.id)
            ]
            if not fresh:
                return  # another replica recorded it first
            entries = [
                {
                    "tx_hash": r.tx_hash,
                    "nonce": r.nonce,
                    "withdrawal": r.withdrawal_id,
                    "batch": r.batch_id,
                    "was_in_block": r.mined_block,
                    "was_block_hash": r.mined_block_hash,
                    "why": why[r.id],
                    "now": where.get(r.id, "not on chain"),
                }
                for r in fresh
            ]
            nonces = [r.nonce for r in fresh]
            span = str(nonces[0]) if len(nonces) == 1 else f"{nonces[0]}..{nonces[-1]}"
            reason = (
                f"chain rollback detected: {len(fresh)} settled hot-wallet transaction(s) (nonce {span}) left the "
                f"chain after {self.settings.confirmations} confirmation(s): {why[fresh[0].id]}. Their withdrawals "
                "stay confirmed; nothing is sent or signed again until a quorum lifts this freeze, which sends the "
                "same signed transactions again"
            )
            held, _ = freeze.freeze(s, now, reason, freeze.ROLLBACK, own=True)
            for r in fresh:
                r.state, r.mined_block, r.mined_block_hash = TxState.ORPHANED, None, None
            audit.append(
                s,
                now,
                "chain.rollback_detected",
                held.id,
                {"freeze": held.id, "head": head, "chain_nonce": count, "reason": reason, "transactions": entries},
            )
        log.error("%s (freeze %s)", reason, held.id)

    def _orphans(self, orphans: list[HotTransaction], head: int, frozen: bool) -> bool:
        """Each orphan: if a version at its nonce is mined again deep enough, it is settled there again (the
        network re-included it); otherwise, once no freeze is in force, its same bytes are sent again. True if
        one of them moved."""
        moved = False
        for orphan in orphans:
            with self.store.read() as s:
                candidates = versions(s, orphan)
            landed = None
            for version in candidates:
                receipt = self.sender.canonical_receipt(version.tx_hash)
                if receipt is not None:
                    landed = (version, receipt)
                    break
            if landed is not None:
                if deep_enough(landed[1].block_number, head, self.settings.confirmations):
                    self._remined(orphan, *landed)
                    moved = True
                continue
            if frozen or self.node.knows(orphan.tx_hash):
                continue
            try:
                outcome = self.node.send_raw(bytes.fromhex(orphan.raw))
            except BroadcastRefused as exc:
                self.sender.tell(orphan, "orphaned nonce %s: the node refuses it: %s", orphan.nonce, exc)
                continue
            if outcome == SENT:
                with self.store.transaction() as s:
                    audit.append(
                        s,
                        self.clock.now(),
                        "hottx.rebroadcast",
                        subject(orphan),
                        {
                            "tx_hash": orphan.tx_hash,
                            "nonce": orphan.nonce,
                            "attempt": orphan.attempt,
                            "why": "orphaned by a chain rollback; sent again since no freeze is in force",
                        },
                    )
                moved = True
        return moved

    def _remined(self, orphan: HotTransaction, version: HotTransaction, receipt: Receipt) -> None:
        """A version at an orphan's nonce is on chain again, deep enough: settled there again. What it settled
        stays settled (its settler points it at this version); if the version now reverted, the payment did not
        happen after all: freeze."""
        now = self.clock.now()
        with self.store.transaction() as s:
            rows = versions(s, orphan, lock=True)
            if not any(r.state == TxState.ORPHANED for r in rows):
                return
            for r in rows:
                r.state = TxState.MINED if r.id == version.id else TxState.REPLACED
            mined = next(r for r in rows if r.id == version.id)
            mined.mined_block, mined.mined_block_hash = receipt.block_number, receipt.block_hash
            data = {
                "tx_hash": version.tx_hash,
                "nonce": version.nonce,
                "block": receipt.block_number,
                "success": receipt.success,
            }
            audit.append(s, now, "hottx.remined", subject(version), data)
            settler = self.sender.settlers.of(mined)
            if settler is not None:
                settler.remined(s, mined)
            if not receipt.success:
                reason = (
                    f"chain rollback detected: the transaction at nonce {version.nonce} ({subject(version)}), "
                    f"settled before a rollback, reverted when mined again in block {receipt.block_number}; what it "
                    "settled did not happen"
                )
                row, _ = freeze.freeze(s, now, reason, freeze.ROLLBACK, own=True)
                audit.append(s, now, "chain.rollback_detected", row.id, {"freeze": row.id, "reason": reason, **data})
                log.error("%s (freeze %s)", reason, row.id)
