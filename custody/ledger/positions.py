"""The hot wallet's position per asset: what it holds as last read, and what is already promised from it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from custody.ledger.states import State, TxState
from custody.store.models import BtcColdWallet, ChainBalance, ColdWallet, HotTransaction, HotWallet, Withdrawal

# The built-in key that owns rebalancing withdrawals (sweeps and top-ups); revoked from birth (migration 0003).
REBALANCER = "custody-rebalancer"
# Hot-routed withdrawals in these states will still take their amount from the hot wallet.
RESERVING = (State.DELAYED, State.QUEUED_HOT, State.SIGNED, State.BROADCAST)


@dataclass(frozen=True)
class HotPosition:
    asset: str
    balance: int  # as last read from the chain
    block: int | None  # the block it was read at
    reserved: int  # what hot-routed withdrawals not yet reflected in that reading will take

    @property
    def free(self) -> int:
        return self.balance - self.reserved


def hot_reading(session: Session, asset: str) -> tuple[int, int] | None:
    """The hot wallet's last read balance of ``asset`` and the block it was read at; None before any."""
    query = (
        select(ChainBalance.amount, ChainBalance.block)
        .join(HotWallet, HotWallet.address == ChainBalance.wallet)
        .where(ChainBalance.asset == asset)
        .limit(1)
    )
    row = session.execute(query).one_or_none()
    return None if row is None else (row[0], row[1])


def reserving(asset: str, block: int | None) -> ColumnElement[bool]:
    """The hot-routed withdrawals of ``asset`` that a reading at ``block`` does not show as paid: those
    still to be paid, those mined in a later block, and those whose transaction a deep rollback orphaned (it
    is to be sent again)."""
    W = Withdrawal
    pending: ColumnElement[bool] = W.state.in_(RESERVING)
    if block is not None:
        mined_later = select(HotTransaction.tx_hash).where(
            (HotTransaction.mined_block > block) | (HotTransaction.state == TxState.ORPHANED)
        )
        pending = pending | ((W.state == State.CONFIRMED) & W.tx_hash.in_(mined_later))
    return (W.asset == asset) & (W.route == "hot") & pending


def reserved(session: Session, asset: str, block: int | None) -> int:
    """What the hot-routed withdrawals of ``asset`` that a reading at ``block`` does not show take of it.
    PostgreSQL sums exactly in SQL; SQLite has no exact wide integers, so its rows are summed here."""
    if session.get_bind().dialect.name == "postgresql":
        total = select(func.coalesce(func.sum(Withdrawal.amount), 0)).where(reserving(asset, block))
        return int(session.execute(total).scalar_one())
    return sum(session.execute(select(Withdrawal.amount).where(reserving(asset, block))).scalars())


def hot_position(session: Session, asset: str) -> HotPosition:
    """The hot wallet's last read balance of ``asset`` and what hot-routed withdrawals reserve of it."""
    reading = hot_reading(session, asset)
    block = None if reading is None else reading[1]
    taken = reserved(session, asset, block)
    if reading is None:
        return HotPosition(asset, 0, None, taken)
    return HotPosition(asset, reading[0], block, taken)


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
