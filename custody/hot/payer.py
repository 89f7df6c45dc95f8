"""Paying hot withdrawals: a `queued_hot` withdrawal becomes one transaction from the hot EOA, exactly once,
whatever crashes.

    sign:      claim one queued withdrawal, have the sender sign its transfer at the wallet's next nonce and
               store the raw bytes, in one database transaction (withdrawal -> signed). Nothing is broadcast
               yet: the sender sends, follows and replaces it (``custody.hot.sender``), and tells
               ``PaymentSettler`` when it is sent (withdrawal -> broadcast) and when it settles (-> confirmed,
               or failed if it reverted).

A withdrawal is never signed twice at two nonces: it is claimed only while `queued_hot`, and leaves that state
in the same transaction that stores its first signed version. Its replacements (higher fees, same nonce) are
the sender's business; whichever version is mined settles the withdrawal.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.chain.ethereum import Receipt
from custody.hot.sender import Call, Sender, failpoint
from custody.ledger import freeze
from custody.ledger.policy import PolicyCache
from custody.ledger.states import State
from custody.ledger.transitions import move
from custody.store.models import HotTransaction, Withdrawal
from policies.chains import ETHEREUM
from signer.safetx import transfer_call

log = logging.getLogger("custody.hotwallet")


class Payer:
    """Signs queued hot withdrawals, one at a time, through the sender."""

    def __init__(self, sender: Sender, policies: PolicyCache) -> None:
        self.sender, self.policies = sender, policies

    def __repr__(self) -> str:
        return f"Payer({self.sender.address})"

    def sign_next(self) -> bool:
        """Sign and store the oldest queued hot withdrawal, unless frozen or over the outflow limit. True if it
        moved one (signed, or cancelled because its asset left the policy)."""
        sender = self.sender
        fees = sender.fees()
        now = sender.clock.now()
        with sender.store.transaction() as s:
            if freeze.active(s) is not None:
                return False
            policy = self.policies.get(s).policy
            # another chain's hot wallet pays its own assets (custody.hot.btcpayer)
            others = [symbol for symbol, rule in policy.assets.items() if rule.chain != ETHEREUM]
            query = (
                select(Withdrawal)
                .where(Withdrawal.state == State.QUEUED_HOT, Withdrawal.asset.not_in(others))
                .order_by(Withdrawal.seq)
                .limit(1)
            )
            if sender.store.is_postgres:
                query = query.with_for_update(skip_locked=True)
            w = s.execute(query).scalar_one_or_none()
            if w is None:
                return False
            if not freeze.check_outflow(s, policy, w, now):
                log.warning("automatic freeze: hot outflow limit of %s reached", w.asset)
                return False
            rule = policy.assets.get(w.asset)
            if rule is None:
                move(s, w, State.CANCELLED, now, by="hot-worker", reason=f"asset {w.asset} is no longer in the policy")
                return True
            to, value, data = transfer_call(rule.contract, w.destination, w.amount)
            gas = sender.node.estimate_gas(sender.address, to, value, data)
            version = sender.sign_at_next_nonce(s, Call(to, value, data, gas, fees), now, withdrawal_id=w.id)
            move(s, w, State.SIGNED, now, by="hot-worker", nonce=version.nonce, tx_hash=version.tx_hash)
        failpoint("after_store")
        return True


class PaymentSettler:
    """Moves a hot withdrawal along as the sender sends and settles its transaction (``sender.Settler``)."""

    def broadcast(self, s: Session, tx: HotTransaction, now: int) -> bool:
        w = _withdrawal(s, tx, lock=True)
        if w.state != State.SIGNED:
            return False  # a replacement, or a version sent again after a reorg: the sender audits it
        move(s, w, State.BROADCAST, now, by="hot-worker", tx_hash=tx.tx_hash)
        return True

    def settle(self, s: Session, tx: HotTransaction, receipt: Receipt, now: int) -> None:
        w = _withdrawal(s, tx, lock=True)
        if w.state != State.BROADCAST:
            return
        block = receipt.block_number
        w.tx_hash = tx.tx_hash
        if receipt.success:
            move(s, w, State.CONFIRMED, now, by="hot-worker", tx_hash=tx.tx_hash, block=block)
        else:
            w.failure = f"reverted in block {block}"
            move(s, w, State.FAILED, now, by="hot-worker", tx_hash=tx.tx_hash, block=block, reason=w.failure)

    def remined(self, s: Session, tx: HotTransaction) -> None:
        _withdrawal(s, tx, lock=False).tx_hash = tx.tx_hash  # it stays confirmed, now by this version


def _withdrawal(s: Session, tx: HotTransaction, *, lock: bool) -> Withdrawal:
    query = select(Withdrawal).where(Withdrawal.id == tx.withdrawal_id)
    return s.execute(query.with_for_update() if lock else query).scalar_one()
