"""Freezing: stop every outgoing payment at once; only a quorum can resume them.

Anyone who can run the daemon's commands can freeze (``custody freeze``), and the hot worker freezes by itself
when an asset's hot outflow would pass the policy's ``auto_freeze`` limit, and when the chain contradicts a
payment it had settled (``ROLLBACK``: a rollback deeper than the confirmation depth). While frozen, intake goes
on, but the hot worker signs and broadcasts nothing new, batches are not exported, and quorum batches are not
executed. A freeze is lifted only by applying a quorum-signed policy bundle whose ``unfreeze`` names its id, so
one compromised operator (or online host) cannot undo it.

Usually one freeze is in force at a time and freezing again finds it. A rollback freeze is the exception: it is
made even while another freeze is in force, because lifting it is a decision of its own (the worker then sends
the rolled-back transactions again), which lifting an unrelated freeze must not take by accident.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.errors import Frozen
from custody.ledger import audit
from custody.ledger.positions import REBALANCER
from custody.ledger.states import State
from custody.store.db import Store
from custody.store.models import BtcHotPayout, BtcHotTransaction, Freeze, HotTransaction, Withdrawal
from policies.bundle import Bundle
from policies.loader import format_period
from policies.model import Policy
from policies.units import format_amount

# ``by`` of the freeze the hot worker makes when the chain no longer has what it settled.
ROLLBACK = "auto:chain-rollback"


def all_active(s: Session) -> list[Freeze]:
    """Every freeze in force, oldest first."""
    return list(
        s.execute(select(Freeze).where(Freeze.lifted_at.is_(None)).order_by(Freeze.frozen_at, Freeze.id)).scalars()
    )


def active(s: Session) -> Freeze | None:
    """The oldest freeze in force, if any: payments are frozen while there is one."""
    return s.execute(
        select(Freeze).where(Freeze.lifted_at.is_(None)).order_by(Freeze.frozen_at, Freeze.id).limit(1)
    ).scalar_one_or_none()


def freeze(s: Session, now: int, reason: str, by: str, *, own: bool = False) -> tuple[Freeze, bool]:
    """Freeze (or find the freeze already in force). Returns the freeze and whether this call made it.
    ``own``: find only a freeze in force made by the same ``by``, and otherwise make one even if another
    freeze is in force (see the module's docstring)."""
    if own:
        current = s.execute(
            select(Freeze).where(Freeze.lifted_at.is_(None), Freeze.by == by).order_by(Freeze.frozen_at).limit(1)
        ).scalar_one_or_none()
    else:
        current = active(s)
    if current is not None:
        return current, False
    row = Freeze(id=secrets.token_hex(8), frozen_at=now, reason=reason, by=by)
    s.add(row)
    audit.append(s, now, "freeze.on", row.id, {"reason": reason, "by": by})
    return row, True


@dataclass(frozen=True)
class InForce:
    """The freeze in force after ``freeze_now``, read in its transaction; ``made``: whether that call made it."""

    id: str
    frozen_at: int
    reason: str
    made: bool


def freeze_now(store: Store, now: int, reason: str, by: str) -> InForce:
    """``freeze`` in a transaction of its own (``custody freeze``)."""
    with store.transaction() as s:
        row, made = freeze(s, now, reason, by)
        found = InForce(row.id, row.frozen_at, row.reason, made)
    return found


def refuse_if_frozen(s: Session, what: str) -> None:
    current = active(s)
    if current is not None:
        raise Frozen(f"payments are frozen ({current.id}: {current.reason}); {what} waits for a quorum to unfreeze")


def on_apply(s: Session, bundle: Bundle, now: int) -> str | None:
    """Called in the transaction that applies a (quorum-verified) bundle: lift the freeze it names, if that
    one is in force."""
    if bundle.policy.unfreeze is None:
        return None
    current = s.get(Freeze, bundle.policy.unfreeze, with_for_update=True)
    if current is None or current.lifted_at is not None:
        return None
    current.lifted_at, current.lifted_by_bundle = now, bundle.version
    audit.append(s, now, "freeze.off", current.id, {"bundle": bundle.version, "hash": bundle.hash})
    return current.id


def hot_outflow(s: Session, asset: str, since: int) -> int:
    """What the hot wallet has signed to pay to others (sweeps to the cold wallet excluded) since ``since``: each
    withdrawal once, when its first version was signed (a fee bump pays the same withdrawals again, not more).
    Ethereum: one withdrawal per transaction (``HotTransaction``). Bitcoin: a payment pays several withdrawals
    (``BtcHotPayout``), each of its versions (``BtcHotTransaction``) the same ones."""
    first_versions = select(HotTransaction.withdrawal_id).where(
        HotTransaction.attempt == 0, HotTransaction.created_at > since, HotTransaction.withdrawal_id.is_not(None)
    )
    first_btc = (
        select(BtcHotPayout.withdrawal_id)
        .join(BtcHotTransaction, BtcHotTransaction.payment == BtcHotPayout.payment)
        .where(BtcHotTransaction.attempt == 0, BtcHotTransaction.created_at > since)
    )
    amounts = s.execute(
        select(Withdrawal.amount).where(
            Withdrawal.id.in_(first_versions.union(first_btc).scalar_subquery()),
            Withdrawal.asset == asset,
            Withdrawal.api_key != REBALANCER,
            Withdrawal.state != State.FAILED,
        )
    ).scalars()
    return sum(amounts)


def check_outflow(s: Session, policy: Policy, w: Withdrawal, now: int, *, along: int = 0) -> bool:
    """Before paying ``w`` from the hot wallet: if it would take the asset's hot outflow past its automatic
    freeze limit, freeze instead (in ``s``) and return False. ``along``: what the same payment pays to others
    before ``w`` (a Bitcoin payment pays many withdrawals, none of them signed yet)."""
    rule = policy.assets.get(w.asset)
    if rule is None or rule.auto_freeze is None or w.api_key == REBALANCER:
        return True
    window = rule.auto_freeze
    spent = hot_outflow(s, w.asset, now - window.seconds) + along
    if spent + w.amount <= window.limit:
        return True
    d = rule.decimals
    freeze(
        s,
        now,
        f"automatic: paying {format_amount(w.amount, d)} {w.asset} ({w.id}) would take the hot outflow to "
        f"{format_amount(spent + w.amount, d)} {w.asset}, over the policy's limit of "
        f"{format_amount(window.limit, d)} {w.asset} per {format_period(window.seconds)}",
        f"auto:{w.asset}",
    )
    return False
