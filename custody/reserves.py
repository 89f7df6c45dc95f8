"""The hot wallet's position per asset: what it holds as last read, and what is already promised from it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody import states
from custody.store.models import ChainBalance, ColdWallet, HotTransaction, HotWallet, Withdrawal

# Hot-routed withdrawals in these states will still take their amount from the hot wallet.
RESERVING = (states.DELAYED, states.QUEUED_HOT, states.SIGNED, states.BROADCAST)


@dataclass(frozen=True)
class HotPosition:
    asset: str
    balance: int  # as last read from the chain
    block: int | None  # the block it was read at
    reserved: int  # what hot-routed withdrawals not yet reflected in that reading will take

    @property
    def free(self) -> int:
        return self.balance - self.reserved


def hot_position(session: Session, asset: str) -> HotPosition:
    """The hot wallet's last read balance of ``asset`` and what hot-routed withdrawals reserve of it:
    those still to be paid, and those mined in a block after the reading (which the balance does not show)."""
    wallet = session.execute(select(HotWallet.address).limit(1)).scalar_one_or_none()
    balance = session.get(ChainBalance, (wallet, asset)) if wallet else None
    W = Withdrawal
    pending = W.state.in_(RESERVING)
    if balance is not None:
        mined_later = select(HotTransaction.tx_hash).where(HotTransaction.mined_block > balance.block)
        pending = pending | ((W.state == states.CONFIRMED) & W.tx_hash.in_(mined_later))
    reserved = sum(session.execute(select(W.amount).where(W.asset == asset, W.route == "hot", pending)).scalars())
    if balance is None:
        return HotPosition(asset, 0, None, reserved)
    return HotPosition(asset, balance.amount, balance.block, reserved)


def free_balance(session: Session, asset: str) -> int:
    return hot_position(session, asset).free


def cold_balance(session: Session, asset: str) -> int | None:
    """The cold wallet's last read balance of ``asset``; None while there is no cold wallet or reading."""
    cold = session.execute(select(ColdWallet.address).limit(1)).scalar_one_or_none()
    row = session.get(ChainBalance, (cold, asset)) if cold else None
    return None if row is None else row.amount


def hot_share(hot: HotPosition, cold: int | None) -> int | None:
    """The hot balance's share of hot + cold in basis points, rounded down; None until the hot balance has
    been read, or while both are zero."""
    total = hot.balance + (cold or 0)
    return None if hot.block is None or total == 0 else hot.balance * 10_000 // total
