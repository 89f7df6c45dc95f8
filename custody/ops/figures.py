"""The figures an operator watches, read once: ``custody status`` and ``/metrics`` both render a ``Figures``.

``read_figures`` reads everything from the database in one read transaction (then the webhook backlog, which
``custody.ops.webhooks`` reads in its own), so the two views can never disagree on how a figure is computed:
withdrawals by state and asset, balances and hot share per asset, the freezes in force, the hot-wallet
transactions a rollback orphaned, and the batches waiting for owners' signatures. Nothing here depends on the
clock. Whether the node answers is ``node_answers``: only ``/metrics`` asks, and it asks even while the
database is down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from web3.exceptions import Web3RPCError

from custody.chain.ethereum import EthereumNode
from custody.cold.batches import BatchState
from custody.cold.btcbatches import OPEN as BTC_OPEN
from custody.cold.btcbump import is_stuck, open_bump
from custody.cold.views import BatchView, BtcBatchView, batch_views, btc_batch_views
from custody.errors import DaemonError, NoActivePolicy
from custody.ledger import freeze
from custody.ledger.policy import PolicyCache
from custody.ledger.states import TxState
from custody.ops.balances import AssetPosition, positions
from custody.ops.webhooks import backlog
from custody.store.db import Store
from custody.store.models import BtcBatch, BtcColdWallet, ChainBalance, HotTransaction, PolicyBundleRow, Withdrawal


@dataclass(frozen=True)
class PolicyHead:
    """The newest policy row: an applied bundle, or the genesis (version 0)."""

    version: int
    hash: str


class Count(NamedTuple):
    state: str
    asset: str
    n: int


@dataclass(frozen=True)
class FreezeInForce:
    id: str
    since: int
    reason: str
    by: str


@dataclass(frozen=True)
class Orphaned:
    """A settled hot-wallet transaction whose block left the chain (a rollback deeper than the confirmation
    depth): its withdrawal stays confirmed; it waits for a quorum to lift the rollback freeze."""

    nonce: int
    tx_hash: str
    withdrawal: str | None
    batch: str | None


@dataclass(frozen=True)
class BtcWalletFigure:
    """A Bitcoin cold wallet and its balance as the worker last read it from the node's watch-only wallet."""

    wallet: str  # the node's wallet name
    network: str
    descriptor: str
    balance: int | None  # satoshis; None before the first reading
    block: int | None  # the height it was read at


@dataclass(frozen=True)
class BtcBatchFigure:
    """A Bitcoin batch not settled yet: waiting for signatures, signed, or broadcast (perhaps stuck)."""

    batch: BtcBatchView
    confirmations: int  # of its transaction at the last balance reading's height; 0 while not mined
    stuck: bool  # broadcast and not mined ``stuck_after`` after it was sent (the follower noted it)
    replaces: str | None  # the batch it fee-bumps
    bumped_by: str | None  # an open fee bump of it


@dataclass(frozen=True)
class Figures:
    policy: PolicyHead | None  # None: the database has no policy genesis
    withdrawals: tuple[Count, ...]  # by state and asset, in the database's order
    balances: tuple[AssetPosition, ...]  # by symbol; none before the first bundle
    freezes: tuple[FreezeInForce, ...]  # every freeze in force, oldest first
    orphaned: tuple[Orphaned, ...]  # by nonce
    batches_waiting: tuple[BatchView, ...]  # exported, oldest first
    webhook_backlog: Mapping[str, int] = field(default_factory=dict)  # url -> events still to deliver
    btc_wallets: tuple[BtcWalletFigure, ...] = ()  # the Bitcoin cold wallets, by network
    btc_batches: tuple[BtcBatchFigure, ...] = ()  # Bitcoin batches not settled yet, oldest first

    @property
    def frozen(self) -> bool:
        """Payments are frozen while any freeze is in force."""
        return bool(self.freezes)


def read_figures(store: Store, policies: PolicyCache, webhook_urls: tuple[str, ...] = ()) -> Figures:
    """Every figure, from one read transaction; the backlog of ``webhook_urls`` (none by default) after it.
    Database errors propagate: the caller decides whether an unreachable database is an answer."""
    with store.read() as s:
        figures = Figures(
            policy=_policy_head(s),
            withdrawals=_withdrawal_counts(s),
            balances=_balances(s, policies),
            freezes=tuple(FreezeInForce(f.id, f.frozen_at, f.reason, f.by) for f in freeze.all_active(s)),
            orphaned=_orphaned(s),
            batches_waiting=tuple(batch_views(s, [BatchState.EXPORTED])),
            btc_wallets=_btc_wallets(s),
            btc_batches=_btc_batches(s),
        )
    if not webhook_urls:
        return figures
    return replace(figures, webhook_backlog=backlog(store, webhook_urls))


def node_answers(node: EthereumNode | None) -> bool:
    """Whether the node answers with the configured chain id; False when there is none."""
    if node is None:
        return False
    try:
        node.check_chain()
    except (DaemonError, ValueError, Web3RPCError):  # unreachable, another chain, or a bad answer
        return False
    return True


def _policy_head(s: Session) -> PolicyHead | None:
    # the row's version and hash are those of the document it holds (custody.ledger.policy writes both),
    # so there is no need to parse the bundle at each scrape
    row = s.execute(
        select(PolicyBundleRow.version, PolicyBundleRow.hash).order_by(PolicyBundleRow.version.desc()).limit(1)
    ).one_or_none()
    return None if row is None else PolicyHead(row[0], row[1])


def _withdrawal_counts(s: Session) -> tuple[Count, ...]:
    query = select(Withdrawal.state, Withdrawal.asset, func.count()).group_by(Withdrawal.state, Withdrawal.asset)
    return tuple(Count(state, asset, n) for state, asset, n in s.execute(query).all())


def _balances(s: Session, policies: PolicyCache) -> tuple[AssetPosition, ...]:
    try:
        return tuple(positions(s, policies))
    except NoActivePolicy:
        return ()


def _orphaned(s: Session) -> tuple[Orphaned, ...]:
    query = select(HotTransaction).where(HotTransaction.state == TxState.ORPHANED).order_by(HotTransaction.nonce)
    return tuple(Orphaned(t.nonce, t.tx_hash, t.withdrawal_id, t.batch_id) for t in s.execute(query).scalars())


def _btc_wallets(s: Session) -> tuple[BtcWalletFigure, ...]:
    out = []
    for w in s.execute(select(BtcColdWallet).order_by(BtcColdWallet.network)).scalars():
        reading = s.execute(
            select(ChainBalance.amount, ChainBalance.block)
            .where(ChainBalance.wallet == w.wallet)
            .order_by(ChainBalance.updated_at.desc())
            .limit(1)
        ).one_or_none()
        balance, block = (None, None) if reading is None else (reading[0], reading[1])
        out.append(BtcWalletFigure(w.wallet, w.network, w.descriptor, balance, block))
    return tuple(out)


def _btc_batches(s: Session) -> tuple[BtcBatchFigure, ...]:
    """Confirmations are counted at the height of the worker's last balance reading, so that no figure needs
    the node or the clock."""
    tips = {w.wallet: w.block for w in _btc_wallets(s)}
    out = []
    for view in btc_batch_views(s):
        if view.state not in BTC_OPEN:
            continue
        row = s.get_one(BtcBatch, view.id)
        tip = tips.get(row.wallet)
        depth = 0
        if row.block_height is not None and tip is not None and tip >= row.block_height:
            depth = tip - row.block_height + 1
        bump = open_bump(s, row.id)
        out.append(BtcBatchFigure(view, depth, is_stuck(s, row), row.replaces, None if bump is None else bump.id))
    return tuple(out)
