"""The hot wallet's position per asset: what it holds as last read, and what is already promised from it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from custody.ledger.states import State, TxState
from custody.store.models import (
    BtcColdWallet,
    BtcHotPayout,
    BtcHotTransaction,
    BtcHotWallet,
    ChainBalance,
    ColdWallet,
    HotTransaction,
    HotWallet,
    Withdrawal,
)
from policies.chains import BITCOIN
from policies.model import AssetRule

# The built-in key that owns rebalancing withdrawals (sweeps and top-ups); revoked from birth (migration 0003).
REBALANCER = "custody-rebalancer"
# Hot-routed withdrawals in these states will still take their amount from the hot wallet.
RESERVING = (State.DELAYED, State.QUEUED_HOT, State.SIGNED, State.BROADCAST)
# A hot Bitcoin payment's versions (``custody.hot.btcpayer.BtcTxState``; ``custody.ledger`` does not import
# ``custody.hot``): sent, settled, and settled then taken out of the chain by a reorg deeper than that.
BTC_BROADCAST, BTC_CONFIRMED, BTC_ORPHANED = "broadcast", "confirmed", "orphaned"


@dataclass(frozen=True)
class HotPosition:
    asset: str
    balance: int  # as last read from the chain
    block: int | None  # the block it was read at
    reserved: int  # what hot-routed withdrawals not yet reflected in that reading will take

    @property
    def free(self) -> int:
        return self.balance - self.reserved


def hot_reading(session: Session, rule: AssetRule) -> tuple[int, int] | None:
    """The hot wallet's last read balance of ``rule``'s asset and the block it was read at; None before any.

    Each chain's hot wallet writes its own readings: the Ethereum worker under the hot EOA's address
    (``HotWallet``), the Bitcoin hot step under the node's wallet name of the network's BIP-84 account
    (``BtcHotWallet``, ``custody.hot.btcwallet.read_balance``), its block a Bitcoin height. A reading of the
    other chain's wallet is never taken, whatever its asset column says."""
    if rule.chain == BITCOIN:
        query = (
            select(ChainBalance.amount, ChainBalance.block)
            .join(BtcHotWallet, BtcHotWallet.wallet == ChainBalance.wallet)
            .where(ChainBalance.asset == rule.symbol, BtcHotWallet.network == rule.network)
            .limit(1)
        )
    else:
        query = (
            select(ChainBalance.amount, ChainBalance.block)
            .join(HotWallet, HotWallet.address == ChainBalance.wallet)
            .where(ChainBalance.asset == rule.symbol)
            .limit(1)
        )
    row = session.execute(query).one_or_none()
    return None if row is None else (row[0], row[1])


def reserving(rule: AssetRule, block: int | None) -> ColumnElement[bool]:
    """The hot-routed withdrawals of ``rule``'s asset that a reading at ``block`` does not show as paid.
    Ethereum: those still to be paid, those mined in a later block, and those whose transaction a deep
    rollback orphaned (it is to be sent again). Bitcoin: ``_btc_pending``."""
    W = Withdrawal
    if rule.chain == BITCOIN:
        pending = _btc_pending(block)
    else:
        pending = W.state.in_(RESERVING)
        if block is not None:
            mined_later = select(HotTransaction.tx_hash).where(
                (HotTransaction.mined_block > block) | (HotTransaction.state == TxState.ORPHANED)
            )
            pending = pending | ((W.state == State.CONFIRMED) & W.tx_hash.in_(mined_later))
    return (W.asset == rule.symbol) & (W.route == "hot") & pending


def _btc_pending(block: int | None) -> ColumnElement[bool]:
    """Bitcoin, by their payment's versions (``BtcHotTransaction``, heights of the Bitcoin
    chain): a reading at height ``block`` shows a payment as paid once one of its versions is recorded mined
    at or below ``block`` (``read_balance`` counts it so, see there); so a withdrawal reserves its amount
    while it waits or is signed, while sent and not mined by ``block``, and once confirmed only if its
    payment confirmed above ``block`` or a deep reorg took it out again (``orphaned``: to be mined again)."""
    W, T, P = Withdrawal, BtcHotTransaction, BtcHotPayout
    waiting: ColumnElement[bool] = W.state.in_([s for s in RESERVING if s != State.BROADCAST])
    if block is None:  # no reading yet: everything not confirmed
        return waiting | (W.state == State.BROADCAST)
    shown = (
        select(P.withdrawal_id).join(T, T.payment == P.payment).where(T.state == BTC_BROADCAST, T.block_height <= block)
    )
    later = (
        select(P.withdrawal_id)
        .join(T, T.payment == P.payment)
        .where(((T.state == BTC_CONFIRMED) & (T.block_height > block)) | (T.state == BTC_ORPHANED))
    )
    return (
        waiting | ((W.state == State.BROADCAST) & W.id.not_in(shown)) | ((W.state == State.CONFIRMED) & W.id.in_(later))
    )


def reserved(session: Session, rule: AssetRule, block: int | None) -> int:
    """What the hot-routed withdrawals of ``rule``'s asset that a reading at ``block`` does not show take of it.
    PostgreSQL sums exactly in SQL; SQLite has no exact wide integers, so its rows are summed here."""
    if session.get_bind().dialect.name == "postgresql":
        total = select(func.coalesce(func.sum(Withdrawal.amount), 0)).where(reserving(rule, block))
        return int(session.execute(total).scalar_one())
    return sum(session.execute(select(Withdrawal.amount).where(reserving(rule, block))).scalars())


def hot_position(session: Session, rule: AssetRule) -> HotPosition:
    """The hot wallet's last read balance of ``rule``'s asset (on its chain) and what hot-routed withdrawals
    reserve of it."""
    reading = hot_reading(session, rule)
    block = None if reading is None else reading[1]
    taken = reserved(session, rule, block)
    if reading is None:
        return HotPosition(rule.symbol, 0, None, taken)
    return HotPosition(rule.symbol, reading[0], block, taken)


def cold_balance(session: Session, asset: str) -> int | None:
    """The cold wallet's last read balance of ``asset``; None while there is no cold wallet or reading."""
    cold = session.execute(select(ColdWallet.address).limit(1)).scalar_one_or_none()
    row = session.get(ChainBalance, (cold, asset)) if cold else None
    if row is None:
        return btc_cold_balance(session, asset)
    return row.amount


def btc_cold_balance(session: Session, asset: str) -> int | None:
    """A bitcoin asset's cold balance: what the worker last read from the Bitcoin cold wallet's watch-only
    wallet on the node, recorded under the node's wallet name (``custody.cold.btcwallet.record_balances``)."""
    query = (
        select(ChainBalance.amount)
        .join(BtcColdWallet, BtcColdWallet.wallet == ChainBalance.wallet)
        .where(ChainBalance.asset == asset)
        .order_by(ChainBalance.updated_at.desc())
        .limit(1)
    )
    return session.execute(query).scalar_one_or_none()


def hot_share(hot: HotPosition, cold: int | None) -> int | None:
    """The hot balance's share of hot + cold in basis points, rounded down; None until the hot balance has
    been read, or while both are zero."""
    total = hot.balance + (cold or 0)
    return None if hot.block is None or total == 0 else hot.balance * 10_000 // total
