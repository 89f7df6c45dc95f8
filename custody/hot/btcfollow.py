"""Sending and following the hot wallet's Bitcoin payments (stored by ``custody.hot.btcpayer``), and ``BtcHot``,
the worker's Bitcoin hot step.

Each pass, for each payment with a version not settled (its versions: the original and its fee bumps, all
spending the same coins and paying the same withdrawals):

    deep enough (``confirmations``, the including block counted)  -> that version confirmed, the others
        replaced, the withdrawals confirmed with its txid; at most one version can ever be mined
    seen in a block, now out of the best chain (a reorg)  -> the block forgotten, the same bytes sent again
    stored, not sent  -> its stored bytes sent (withdrawals -> broadcast); after a crash, only stored bytes
    sent, not mined, not in the node's mempool  -> the same bytes again
    sent, not mined for ``stuck_after_seconds``  -> a replacement (BIP-125): same coins, same outputs, the
        change smaller; its rate at least the old one plus the node's incremental relay fee and a quarter more,
        its fee at least the old one plus the incremental fee of its size, capped by the asset's
        ``max_fee_rate`` and ``max_fee``; decided under the wallet's row lock, stored, then sent

A freeze holds what is not sent yet and stops replacements; what is sent is followed and settles.

The watch (``watch_settled``): a confirmed payment is not forgotten. For ``settled_watch_blocks`` blocks after it
confirmed, its block must stay the best chain's block at its height. If a reorg deeper than ``confirmations``
takes it away, and no version of the payment is deep enough in the new chain, the payment is ``orphaned``:
``btchot.rollback_detected`` is audited and logged as an error, ``custody status`` shows it, its withdrawals
stay confirmed (nothing signs or pays them again: they are not ``queued_hot``), the hot position reserves them
again, and the same stored bytes are sent again (only those: every version spends the same coins, so at most
one is ever mined) until a version is deep enough again (``btchot.remined``). Unlike Ethereum's watch this one
does not freeze payments: re-sending the stored bytes of a Bitcoin payment can never pay it twice, while a
payment whose coins a reorg took away is one no one can send any more, which the status and log show.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import TypeVar

from embit.transaction import Transaction
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.chain.bitcoin import BitcoinNode, in_mempool
from custody.errors import BitcoinNodeError
from custody.hot import btcbuild
from custody.hot.btcpayer import BtcPayer, BtcTxState, fee_rate
from custody.hot.sender import failpoint
from custody.ledger import audit, freeze
from custody.ledger.states import State
from custody.ledger.transitions import move
from custody.store.models import BtcHotInput, BtcHotPayout, BtcHotTransaction, BtcHotWallet, Withdrawal

K = TypeVar("K")

log = logging.getLogger("custody.bitcoin")
SAT = Decimal(10) ** 8
RPC_ALREADY_IN_CHAIN, RPC_NOT_IN_WALLET, RPC_OUT_OF_RANGE = -27, -5, -8
ALREADY = ("already in block chain", "txn-already-in-mempool", "txn-already-known", "already have transaction")
FOLLOWED = (BtcTxState.SIGNED, BtcTxState.BROADCAST)


class BtcHot(BtcPayer):
    """The hot wallet's Bitcoin side, one pass at a time: balance, following, signing new payments."""

    def step(self, payments: int = 5) -> bool:
        """One pass: read the balance, move stored payments along, sign up to ``payments`` new ones."""
        busy = self.follow()
        for _ in range(payments):
            if self.sign_next() is None:
                break
            busy = True
        busy = self.follow() or busy
        busy = self.watch_settled() or busy
        self.read_balance()
        return busy

    # -- following -------------------------------------------------------------------------------------
    def follow(self) -> bool:
        self.ready()
        with self.store.read() as s:
            rows = list(
                s.execute(
                    select(BtcHotTransaction)
                    .where(BtcHotTransaction.state.in_(list(FOLLOWED)))
                    .order_by(BtcHotTransaction.created_at, BtcHotTransaction.payment, BtcHotTransaction.attempt)
                ).scalars()
            )
            frozen = freeze.active(s) is not None
        payments: dict[str, list[BtcHotTransaction]] = {}
        for row in rows:
            payments.setdefault(row.payment, []).append(row)
        busy = False
        for versions in payments.values():
            busy = self._follow_payment(versions, frozen) or busy
        return busy

    def _where(self, txid: str) -> tuple[int, str | None, int | None]:
        """(depth, block hash, height) of ``txid`` in the best chain; depth 0 if not mined (or a conflicting
        transaction is: another version of its payment)."""
        _, watch = self.ready()
        try:
            tx = watch.call("gettransaction", txid)
        except BitcoinNodeError as exc:
            if exc.node_code != RPC_NOT_IN_WALLET:
                raise
            return 0, None, None
        depth = int(tx.get("confirmations", 0))
        if depth <= 0:
            return 0, None, None
        return depth, str(tx["blockhash"]), int(tx.get("blockheight", 0))

    def _follow_payment(self, versions: list[BtcHotTransaction], frozen: bool) -> bool:
        now = self.clock.now()
        seen = {v.id: self._where(v.txid) for v in versions}
        for v in versions:
            depth, block, height = seen[v.id]
            if depth >= self.settings.confirmations and block is not None and height is not None:
                self._settle(v, block, height, now)
                return True
        busy = False
        for v in versions:
            depth, block, height = seen[v.id]
            if depth > 0 and block != v.block_hash:
                self._mined_at(v, block, height, now)
                busy = True
            elif depth == 0 and v.block_hash is not None:
                self._reorged(v, now)
                busy = self.broadcast(v) or True
        if any(depth > 0 for depth, _, _ in seen.values()):
            return busy
        newest = versions[-1]
        if newest.state == BtcTxState.SIGNED:
            return (not frozen and self.broadcast(newest)) or busy
        if not in_mempool(self.node, newest.txid) and self.broadcast(newest):
            return True  # forgotten by the node's mempool: the same bytes again (if it refuses them now, a bump)
        waited = now - (newest.broadcast_at or now)
        if not frozen and waited >= self.settings.stuck_after_seconds:
            replacement = self.replace(newest)
            if replacement is not None:
                self.broadcast(replacement)
                return True
        return busy

    def broadcast(self, v: BtcHotTransaction) -> bool:
        """Send ``v``'s stored bytes (only ever those); the first time, record it sent. False if refused."""
        try:
            self.node.call("sendrawtransaction", v.raw)
        except BitcoinNodeError as exc:
            if exc.node_code != RPC_ALREADY_IN_CHAIN and not any(a in exc.node_message for a in ALREADY):
                self._tell(v.txid, "payment %s: the node refused %s: %s", v.payment, v.txid, exc.message)
                return False
        failpoint("btc_after_broadcast")
        now = self.clock.now()
        with self.store.transaction() as s:
            row = s.get_one(BtcHotTransaction, v.id, with_for_update=True)
            if row.state != BtcTxState.SIGNED:
                return True
            row.state, row.broadcast_at, row.updated_at = BtcTxState.BROADCAST, now, now
            for w in _withdrawals(s, row.payment, State.SIGNED):
                move(s, w, State.BROADCAST, now, by="hot-worker", chain="bitcoin", tx_hash=row.txid)
            audit.append(s, now, "btchot.broadcast", row.payment, {"txid": row.txid, "attempt": row.attempt})
        return True

    def _mined_at(self, v: BtcHotTransaction, block: str | None, height: int | None, now: int) -> None:
        with self.store.transaction() as s:
            row = s.get_one(BtcHotTransaction, v.id, with_for_update=True)
            if row.state == BtcTxState.SIGNED:  # sent before a crash kept it from being recorded
                row.state, row.broadcast_at = BtcTxState.BROADCAST, now
                for w in _withdrawals(s, row.payment, State.SIGNED):
                    move(s, w, State.BROADCAST, now, by="hot-worker", chain="bitcoin", tx_hash=row.txid)
            row.block_hash, row.block_height, row.updated_at = block, height, now

    def _reorged(self, v: BtcHotTransaction, now: int) -> None:
        with self.store.transaction() as s:
            row = s.get_one(BtcHotTransaction, v.id, with_for_update=True)
            audit.append(s, now, "btchot.reorged", row.payment, {"txid": row.txid, "block": row.block_hash})
            row.block_hash, row.block_height, row.updated_at = None, None, now
        v.block_hash = None

    def _settle(self, v: BtcHotTransaction, block: str, height: int, now: int) -> None:
        """``v`` is deep enough: it confirms, its other versions are replaced, its withdrawals confirmed."""
        with self.store.transaction() as s:
            rows = list(
                s.execute(
                    select(BtcHotTransaction).where(BtcHotTransaction.payment == v.payment).with_for_update()
                ).scalars()
            )
            if any(r.state == BtcTxState.CONFIRMED for r in rows):
                return
            for r in rows:
                r.state, r.updated_at = (BtcTxState.CONFIRMED if r.id == v.id else BtcTxState.REPLACED), now
            mined = next(r for r in rows if r.id == v.id)
            mined.block_hash, mined.block_height = block, height
            for w in _withdrawals(s, v.payment, State.SIGNED):
                move(s, w, State.BROADCAST, now, by="hot-worker", chain="bitcoin", tx_hash=v.txid)
            for w in _withdrawals(s, v.payment, State.BROADCAST):
                w.tx_hash = v.txid
                move(s, w, State.CONFIRMED, now, by="hot-worker", chain="bitcoin", tx_hash=v.txid, block=height)
            audit.append(
                s,
                now,
                "btchot.confirmed",
                v.payment,
                {
                    "txid": v.txid,
                    "attempt": v.attempt,
                    "block": height,
                    "replaced": [r.txid for r in rows if r.id != v.id],
                },
            )

    # -- the watch over confirmed payments ---------------------------------------------------------------------
    def watch_settled(self) -> bool:
        """Check that the payments confirmed in the last ``settled_watch_blocks`` blocks are still in their blocks,
        and move orphaned ones along (the module docstring). True if it found or did something."""
        acct, _ = self.ready()
        info = self.node.call("getblockchaininfo")
        head = (int(info["blocks"]), str(info["bestblockhash"]))
        since = head[0] - (self.settings.confirmations - 1) - self.settings.settled_watch_blocks
        T = BtcHotTransaction
        orphaned = select(T.payment).where(T.wallet == acct.wallet, T.state == BtcTxState.ORPHANED)
        with self.store.read() as s:
            orphans = list(s.execute(orphaned).scalars())
            recent = []
            if head != self._watched:  # the same best block: the same chain all the way down
                recent = list(
                    s.execute(
                        select(T.id, T.block_height, T.block_hash).where(
                            T.wallet == acct.wallet, T.state == BtcTxState.CONFIRMED, T.block_height >= since
                        )
                    ).all()
                )
        busy = False
        for row_id in gone(self.node, [(i, h, b) for i, h, b in recent if h is not None and b is not None]):
            busy = self._left_its_block(row_id) or busy
        if busy:  # the ones just orphaned too
            with self.store.read() as s:
                orphans = list(s.execute(orphaned).scalars())
        for payment in sorted(set(orphans)):
            busy = self._follow_orphan(payment) or busy
        self._watched = None if busy else head
        return busy

    def _left_its_block(self, row_id: str) -> bool:
        """A confirmed version whose block is no longer in the best chain: recorded where it is now if it is still
        deep enough there, else orphaned (audited, logged as an error). True if it changed anything."""
        now = self.clock.now()
        with self.store.read() as s:
            row = s.get_one(BtcHotTransaction, row_id)
            txid, payment, was = row.txid, row.payment, (row.block_height, row.block_hash)
        depth, block, height = self._where(txid)
        with self.store.transaction() as s:
            row = s.get_one(BtcHotTransaction, row_id, with_for_update=True)
            if row.state != BtcTxState.CONFIRMED or (row.block_height, row.block_hash) != was:
                return False  # another replica saw it first
            if depth >= self.settings.confirmations:
                row.block_hash, row.block_height, row.updated_at = block, height, now
                audit.append(s, now, "btchot.remined", payment, {"txid": txid, "block": height, "was_in_block": was[0]})
                return True
            withdrawals = [w.id for w in _withdrawals(s, payment, State.CONFIRMED)]
            reason = (
                f"Bitcoin rollback: hot payment {payment} ({txid}), confirmed in block {was[0]} ({was[1]}), "
                f"left the chain ({'now ' + str(depth) + ' deep' if depth > 0 else 'not in a block now'}) after "
                f"{self.settings.confirmations} confirmation(s); its {len(withdrawals)} withdrawal(s) stay confirmed "
                "and its same signed bytes are sent again"
            )
            row.state, row.block_hash, row.block_height, row.updated_at = BtcTxState.ORPHANED, None, None, now
            audit.append(
                s,
                now,
                "btchot.rollback_detected",
                payment,
                {
                    "txid": txid,
                    "was_in_block": was[0],
                    "was_block_hash": was[1],
                    "depth_now": depth,
                    "withdrawals": withdrawals,
                    "reason": reason,
                },
            )
        log.error("%s", reason)
        return True

    def _follow_orphan(self, payment: str) -> bool:
        """An orphaned payment: deep enough again (any of its versions) -> confirmed there again; otherwise its
        orphaned version's same bytes are sent again whenever the node's mempool lacks them."""
        with self.store.read() as s:
            rows = list(
                s.execute(
                    select(BtcHotTransaction)
                    .where(BtcHotTransaction.payment == payment)
                    .order_by(BtcHotTransaction.attempt)
                ).scalars()
            )
        orphan = next((r for r in rows if r.state == BtcTxState.ORPHANED), None)
        if orphan is None:
            return False
        seen = {r.id: self._where(r.txid) for r in rows}
        for r in rows:
            depth, block, height = seen[r.id]
            if depth >= self.settings.confirmations and block is not None and height is not None:
                self._remined(orphan, r, block, height)
                return True
        if any(depth > 0 for depth, _, _ in seen.values()) or in_mempool(self.node, orphan.txid):
            return False  # on its way back: mined, not deep enough yet, or waiting in the mempool
        try:
            self.node.call("sendrawtransaction", orphan.raw)
        except BitcoinNodeError as exc:
            if exc.node_code != RPC_ALREADY_IN_CHAIN and not any(a in exc.node_message for a in ALREADY):
                self._tell(
                    orphan.txid, "orphaned payment %s: the node refuses its stored bytes: %s", payment, exc.message
                )
                return False
        with self.store.transaction() as s:
            audit.append(
                s,
                self.clock.now(),
                "btchot.rebroadcast",
                payment,
                {"txid": orphan.txid, "why": "confirmed, then taken out of the chain by a reorg"},
            )
        return True

    def _remined(self, orphan: BtcHotTransaction, version: BtcHotTransaction, block: str, height: int) -> None:
        """A version of an orphaned payment is deep enough again: it is the confirmed one (the others replaced)
        and its withdrawals, confirmed all along, name its txid."""
        now = self.clock.now()
        with self.store.transaction() as s:
            rows = list(
                s.execute(
                    select(BtcHotTransaction).where(BtcHotTransaction.payment == orphan.payment).with_for_update()
                ).scalars()
            )
            if not any(r.state == BtcTxState.ORPHANED for r in rows):
                return
            for r in rows:
                r.state, r.updated_at = (BtcTxState.CONFIRMED if r.id == version.id else BtcTxState.REPLACED), now
                if r.id == version.id:
                    r.block_hash, r.block_height = block, height
            for w in _withdrawals(s, orphan.payment, State.CONFIRMED):
                w.tx_hash = version.txid
            audit.append(s, now, "btchot.remined", orphan.payment, {"txid": version.txid, "block": height})
        log.warning("orphaned payment %s is confirmed again: %s in block %d", orphan.payment, version.txid, height)

    # -- fee bumps ---------------------------------------------------------------------------------------
    def replace(self, old: BtcHotTransaction) -> BtcHotTransaction | None:
        """Sign and store a replacement of ``old`` paying a higher fee (the module docstring); None if the
        policy's caps or the change leave no room, or another pass replaced or settled it first."""
        acct, _ = self.ready()
        found = self.asset()
        if found is None:
            return None
        _, rule = found
        info = self.node.call("getnetworkinfo")
        incremental = max(1, math.ceil(Decimal(info.get("incrementalfee", "0.00001")) * SAT / 1000))
        wanted = max(
            fee_rate(self.node, rule, self.settings), old.fee_rate + incremental, math.ceil(old.fee_rate * 1.25)
        )
        rate = min(wanted, rule.max_fee_rate or wanted)
        now = self.clock.now()
        with self.store.transaction() as s:
            s.execute(select(BtcHotWallet).where(BtcHotWallet.wallet == old.wallet).with_for_update()).scalar_one()
            rows = list(s.execute(select(BtcHotTransaction).where(BtcHotTransaction.payment == old.payment)).scalars())
            newest = max(rows, key=lambda r: r.attempt)
            if newest.id != old.id or any(r.state not in (BtcTxState.BROADCAST,) for r in rows):
                return None
            before, change_script = _plan_of(s, old)
            bumped = btcbuild.bumped(before, rate, incremental, rule.max_fee or 0) if rate > old.fee_rate else None
            if bumped is None:
                self._tell(
                    old.txid, "payment %s is stuck and cannot be bumped within the policy's fee caps", old.payment
                )
                return None
            signed = btcbuild.sign(bumped, change_script, acct.key.child)
            version = BtcHotTransaction(
                id=str(uuid.uuid4()),
                payment=old.payment,
                wallet=old.wallet,
                asset=old.asset,
                attempt=old.attempt + 1,
                state=BtcTxState.SIGNED,
                txid=signed.txid,
                raw=signed.raw,
                fee=bumped.fee,
                fee_rate=bumped.fee_rate,
                vsize=bumped.vsize,
                created_at=now,
                updated_at=now,
            )
            s.add(version)
            audit.append(
                s,
                now,
                "btchot.replacement_signed",
                old.payment,
                {
                    "txid": signed.txid,
                    "replaces": old.txid,
                    "attempt": version.attempt,
                    "fee": str(bumped.fee),
                    "fee_rate": bumped.fee_rate,
                },
            )
        failpoint("btc_after_replacement_store")
        return version

    def _tell(self, key: str, message: str, *args: object) -> None:
        if key + message not in self._told:
            self._told.add(key + message)
            log.warning(message, *args)


def gone(node: BitcoinNode, seen: Iterable[tuple[K, int, str]]) -> list[K]:
    """Of ``seen`` (a key, and the height and hash of the block something was confirmed in), the keys whose block
    is no longer the best chain's block at that height; one ``getblockhash`` per height."""
    hashes: dict[int, str | None] = {}
    out = []
    for key, height, block in seen:
        if height not in hashes:
            try:
                hashes[height] = str(node.call("getblockhash", height))
            except BitcoinNodeError as exc:
                if exc.node_code != RPC_OUT_OF_RANGE:
                    raise
                hashes[height] = None  # the best chain is shorter now
        if hashes[height] != block:
            out.append(key)
    return out


def _plan_of(s: Session, v: BtcHotTransaction) -> tuple[btcbuild.Plan, bytes]:
    """The plan ``v`` was signed from, read back from its stored bytes and reserved coins, and its change script."""
    tx = Transaction.from_string(v.raw)
    coins = {
        (c.txid, c.vout): c for c in s.execute(select(BtcHotInput).where(BtcHotInput.payment == v.payment)).scalars()
    }
    ordered = []
    for vin in tx.vin:
        c = coins[(vin.txid.hex(), vin.vout)]
        ordered.append(btcbuild.Coin(c.txid, c.vout, int(c.amount), c.branch, c.index))
    paid = len(list(s.execute(select(BtcHotPayout.withdrawal_id).where(BtcHotPayout.payment == v.payment)).scalars()))
    outputs = tuple((bytes(o.script_pubkey.data), int(o.value)) for o in tx.vout[:paid])
    change = int(tx.vout[paid].value) if len(tx.vout) > paid else 0
    script = bytes(tx.vout[paid].script_pubkey.data) if change else b""
    plan = btcbuild.Plan(tuple(ordered), outputs, change, int(v.fee), v.fee_rate, v.vsize)
    return plan, script


def _withdrawals(s: Session, payment: str, state: State) -> list[Withdrawal]:
    return list(
        s.execute(
            select(Withdrawal)
            .join(BtcHotPayout, BtcHotPayout.withdrawal_id == Withdrawal.id)
            .where(BtcHotPayout.payment == payment, Withdrawal.state == state)
            .order_by(Withdrawal.seq)
            .with_for_update()
        ).scalars()
    )
