"""Keeping the hot wallet inside its band (policy `hot_min` / `hot_max`, or `hot_min_share` / `hot_max_share` of
the asset's total in the hot and cold wallets, per asset).

Above `hot_max`, the excess over the band's middle is swept to the cold wallet: a hot withdrawal whose
destination is the cold wallet itself, so it needs no approval and is paid by the ordinary hot worker with
all its crash safety. Below `hot_min`, a top-up to the band's middle is raised: a cold withdrawal to the hot
address, which goes through a signing ceremony like any other (admins must whitelist the hot address).

Both are withdrawals owned by the built-in, revoked key `custody-rebalancer`, so they are audited, visible
and counted like any other. At most one is open per asset at a time, so the band is never over-corrected.
"""

from __future__ import annotations

from sqlalchemy import select

from custody.clock import Clock
from custody.intake.withdrawals import new_withdrawal, record
from custody.ledger import states
from custody.ledger.policy import PolicyCache
from custody.ledger.positions import REBALANCER, cold_balance, hot_position
from custody.store.db import Store, advisory_lock
from custody.store.models import ColdWallet, Withdrawal
from policies.evaluate import Decision, Outcome, Quantity, Reason, Route
from policies.model import AssetRule


def plan(free: int, hot_min: int | None, hot_max: int | None) -> tuple[str, int] | None:
    """("sweep" | "top_up", amount) to bring ``free`` back to the middle of the band, or None."""
    low = hot_min if hot_min is not None else 0
    high = hot_max if hot_max is not None else low
    target = (low + high) // 2 if hot_max is not None else low
    if hot_max is not None and free > hot_max:
        return "sweep", free - target
    if hot_min is not None and free < hot_min:
        return "top_up", target - free
    return None


def effective_band(rule: AssetRule, total: int | None) -> tuple[int | None, int | None]:
    """The band in base units: amounts as given, shares of ``total`` (hot + cold) where it is known."""

    def side(amount: int | None, share: int | None) -> int | None:
        if amount is not None:
            return amount
        if share is None or total is None:
            return None
        return total * share // 10_000

    return side(rule.hot_min, rule.hot_min_share), side(rule.hot_max, rule.hot_max_share)


def rebalance(store: Store, policies: PolicyCache, clock: Clock, hot_address: str) -> list[str]:
    """Raise the sweeps and top-ups the band calls for; return the new withdrawals' ids."""
    created: list[str] = []
    with store.transaction() as s:
        advisory_lock(s, "rebalance")
        cold = s.execute(select(ColdWallet.address).limit(1)).scalar_one_or_none()
        if cold is None:
            return created  # no cold wallet yet: nowhere to sweep to or top up from
        active = policies.get(s)
        now = clock.now()
        for symbol, rule in sorted(active.policy.assets.items()):
            if (
                rule.hot_min is None
                and rule.hot_max is None
                and rule.hot_min_share is None
                and rule.hot_max_share is None
            ):
                continue
            open_ = s.execute(
                select(Withdrawal.id)
                .where(
                    Withdrawal.api_key == REBALANCER, Withdrawal.asset == symbol, Withdrawal.state.not_in(states.FINAL)
                )
                .limit(1)
            )
            if open_.first() is not None:
                continue
            position = hot_position(s, rule)
            if position.block is None:
                continue  # the balance has not been read yet
            cold_amount = cold_balance(s, symbol)
            hot_min, hot_max = effective_band(rule, None if cold_amount is None else position.balance + cold_amount)
            step = plan(position.free, hot_min, hot_max)
            if step is None:
                continue
            kind, amount = step
            if kind == "top_up" and rule.hot_topup is not None:
                amount = min(amount, rule.hot_topup.limit)  # signers refuse more; the rest waits for a window
            if kind == "sweep":
                why = "hot wallet holds {} free, above the band's maximum of {}: sweep to the cold wallet"
                bound, route, destination = hot_max, Route.HOT, cold
            else:
                why = "hot wallet holds {} free, below the band's minimum of {}: top-up from the cold wallet"
                bound, route, destination = hot_min, Route.COLD, hot_address
            assert bound is not None
            reason = Reason(
                "rebalance",
                True,
                why,
                (Quantity(position.free, rule.decimals, symbol), Quantity(bound, rule.decimals, symbol)),
            )
            w = record(
                s,
                new_withdrawal(
                    api_key=REBALANCER,
                    idempotency_key=f"{kind}:{symbol}:{now}:{position.block}",
                    request_hash="0" * 64,
                    asset=symbol,
                    amount=amount,
                    decimals=rule.decimals,
                    destination=destination,
                    decision=Decision(Outcome.ALLOW, route, now, (reason,)),
                    version=active.version,
                    policy_hash=active.hash,
                    now=now,
                    client_reference=kind,
                ),
                now,
            )
            created.append(w.id)
    return created
