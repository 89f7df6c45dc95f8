"""What a withdrawal's decision sees (``policies.evaluate.Context``), read from the database in the caller's
transaction: the velocity windows' usage, the hot wallet's free balance and, for a customer's withdrawal, the
customer's and the unlisted windows, its address-book entry for the destination, whether the customer is in
address-book-only mode, whether it was paid to this address before, and its 30-day median payout.

Intake decides a group of requests in one transaction, so the customer facts of the whole group are read at
once, one query per kind of fact (``Facts.read``), after the intake locks are taken; then each withdrawal the
group accepts is added to them (``Facts.add``, ``Running.add``), so each request is decided as if the ones
before it had committed alone. A request without a customer reads none of them: its decision costs the same
queries as before customers existed.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.ledger import states, usage
from custody.ledger.positions import RESERVING, reserved
from custody.ledger.states import State
from custody.store.models import AddressBookEntry, ApiKey, Customer, Withdrawal
from policies.evaluate import BookEntry, Context, Route
from policies.model import Policy

# The customer's median payout is taken over the withdrawals it made in this many seconds before now.
MEDIAN_SPAN = 30 * 86400


def asset_context(
    s: Session, policy: Policy, api_key: str, asset: str, now: int, reading: tuple[int, int] | None
) -> Context:
    """What this asset and key used in each window (``custody.ledger.usage``) and the hot wallet's free
    balance, given its last ``reading``: two queries."""
    periods = [w.seconds for w in policy.assets[asset].windows]
    key_rule = policy.api_keys.get(api_key)
    key_periods = [w.seconds for w in key_rule.windows.get(asset, ())] if key_rule else []
    asset_totals, key_totals = usage.totals(s, asset, api_key, now, periods, key_periods)
    balance, block = reading if reading is not None else (0, None)
    used = reserved(s, policy.assets[asset], block)
    return Context(now=now, asset_totals=asset_totals, key_totals=key_totals, hot_free_balance=balance - used)


class Ask(NamedTuple):
    """A customer's withdrawal to decide."""

    customer: str
    asset: str
    destination: str  # checksummed


@dataclass
class Facts:
    """What the customer rules need for a set of ``Ask``, as the database holds it (and, during intake, with
    the group's earlier withdrawals added)."""

    totals: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)  # (scope, asset) -> used per period
    book: dict[tuple[str, str, str], BookEntry] = field(default_factory=dict)  # (customer, asset, address), live
    book_only: set[str] = field(default_factory=set)
    paid: set[tuple[str, str]] = field(default_factory=set)  # (customer, destination) paid, or being paid
    amounts: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (customer, asset): recent payouts

    @classmethod
    def read(cls, s: Session, policy: Policy, asks: Iterable[Ask], now: int, *, holds: bool = True) -> Facts:
        """At most five queries, whatever the number of asks: the customer and unlisted windows (only if the
        policy has any), the live address-book entries, the address-book-only customers and, only if
        ``holds`` and the policy's hold rules need them, the earlier payouts to these destinations and the
        customers' payouts of the last 30 days."""
        asks = list(asks)
        facts = cls()
        if not asks:
            return facts
        customers = {a.customer for a in asks}
        wanted: dict[tuple[str, str], list[int]] = {}
        for a in asks:
            limits = policy.customers.limits_for(a.customer, a.asset)
            if limits is not None and limits.windows:
                wanted[(usage.customer_scope(a.customer), a.asset)] = [w.seconds for w in limits.windows]
            unlisted = policy.assets[a.asset].unlisted
            if unlisted is not None and unlisted.windows:
                wanted[(usage.UNLISTED, a.asset)] = [w.seconds for w in unlisted.windows]
        facts.totals = usage.scoped_totals(s, now, wanted)
        B = AddressBookEntry
        entries = s.execute(
            select(B.customer, B.asset, B.address, B.added_at, B.active_at).where(
                B.customer.in_(customers), B.address.in_({a.destination for a in asks}), B.removed_at.is_(None)
            )
        )
        facts.book = {(c, asset, address): BookEntry(added, active) for c, asset, address, added, active in entries}
        facts.book_only = set(
            s.execute(select(Customer.id).where(Customer.id.in_(customers), Customer.book_only.is_(True))).scalars()
        )
        # What the customer's history holds: payouts that count, but not held ones. A held withdrawal has not
        # been looked at yet; counting it would let a held decoy (then cancelled) make the next payout to a new
        # address look like a second one, or pull the median up.
        W = Withdrawal
        spending = ~W.state.in_(states.NOT_SPENDING) & (W.state != State.HELD)
        if holds and policy.holds.first_payout:
            paid = select(W.customer, W.destination).where(
                W.customer.in_(customers), W.destination.in_({a.destination for a in asks}), spending
            )
            facts.paid = {(c, d) for c, d in s.execute(paid.distinct()) if c is not None}
        if holds and policy.holds.median_multiple is not None:
            recent = select(W.customer, W.asset, W.amount).where(
                W.customer.in_(customers),
                W.asset.in_({a.asset for a in asks}),
                W.created_at > now - MEDIAN_SPAN,
                W.created_at <= now,
                spending,
            )
            for c, asset, amount in s.execute(recent):
                if c is not None:  # the query asked for these customers only
                    facts.amounts.setdefault((c, asset), []).append(amount)
        return facts

    def add(self, w: Withdrawal) -> None:
        """``w`` was just accepted (made now: inside every window) by the group being decided."""
        if w.customer is None or not usage.counts(w.state):
            return
        for scope in usage.scopes(w.customer, w.destination_kind):
            for period in self.totals.get((scope, w.asset), {}):
                self.totals[(scope, w.asset)][period] += w.amount
        if w.state == State.HELD:  # not history yet (see ``read``)
            return
        self.paid.add((w.customer, w.destination))
        self.amounts.setdefault((w.customer, w.asset), []).append(w.amount)

    def median(self, customer: str, asset: str) -> int | None:
        """The customer's median payout of ``asset`` in the last 30 days (the lower middle one of an even
        count: an amount that was paid, never a mean); None without any."""
        amounts = self.amounts.get((customer, asset))
        return statistics.median_low(amounts) if amounts else None


def with_customer(base: Context, facts: Facts, ask: Ask, *, approved: bool = False) -> Context:
    """``base`` (the asset's and key's windows, the hot wallet) with what the customer rules need for ``ask``."""
    customer, asset, destination = ask
    return Context(
        now=base.now,
        asset_totals=base.asset_totals,
        key_totals=base.key_totals,
        hot_free_balance=base.hot_free_balance,
        customer_totals=facts.totals.get((usage.customer_scope(customer), asset), {}),
        unlisted_totals=facts.totals.get((usage.UNLISTED, asset), {}),
        book=facts.book.get((customer, asset, destination)),
        book_only=customer in facts.book_only,
        paid_before=(customer, destination) in facts.paid,
        median_30d=facts.median(customer, asset),
        approved=approved,
    )


def backends(s: Session, policy: Policy, names: Iterable[str]) -> set[str]:
    """Those of these API keys that are the policy's backends (``[[backends]]``: that name, with that public
    key), the only keys that may pay a customer's address-book or unlisted destination: one query, none if no
    name is a backend's."""
    declared = {b.name: b.key.lower() for b in policy.backends}
    wanted = {name for name in names if name in declared}
    if not wanted:
        return set()
    found = s.execute(select(ApiKey.name, ApiKey.public_key).where(ApiKey.name.in_(wanted)))
    return {name for name, key in found if key.lower() == declared[name]}


class Running:
    """What one intake group has used so far, on top of what the database held when the group began: the
    windows count every accepted withdrawal of the group (created now, so inside every window), and the
    hot wallet's free balance loses what hot-routed ones reserve, exactly as if each had committed alone."""

    def __init__(self) -> None:
        self.asset_used: dict[str, int] = {}
        self.key_used: dict[tuple[str, str], int] = {}
        self.hot_reserved: dict[str, int] = {}

    def add(self, w: Withdrawal) -> None:
        if not usage.counts(w.state):
            return
        self.asset_used[w.asset] = self.asset_used.get(w.asset, 0) + w.amount
        key = (w.asset, w.api_key)
        self.key_used[key] = self.key_used.get(key, 0) + w.amount
        if w.route == Route.HOT and w.state in RESERVING:
            self.hot_reserved[w.asset] = self.hot_reserved.get(w.asset, 0) + w.amount

    def context(self, base: Context, asset: str, api_key: str) -> Context:
        extra, key_extra = self.asset_used.get(asset, 0), self.key_used.get((asset, api_key), 0)
        return Context(
            now=base.now,
            asset_totals={p: v + extra for p, v in base.asset_totals.items()},
            key_totals={p: v + key_extra for p, v in base.key_totals.items()},
            hot_free_balance=base.hot_free_balance - self.hot_reserved.get(asset, 0),
        )


def without(totals: dict[int, int], amount: int, at: int, now: int) -> dict[int, int]:
    """``totals`` without one withdrawal of ``amount`` made at ``at`` (in window p iff now - p < at <= now):
    a held withdrawal decided again is not counted against itself."""
    return {p: v - amount if now - p < at <= now else v for p, v in totals.items()}
