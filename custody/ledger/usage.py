"""What the velocity windows have used: per asset, API key and second, the sum of the withdrawals made then
that still count (every state but rejected, cancelled and failed).

Intake adds each withdrawal it accepts; ``transitions.move`` takes it out again when it is cancelled or
fails. A window's total is then a sum over at most one row per key and second of the window, however many
withdrawals there were, where summing the withdrawals themselves grew with every one inside the longest
window. The sums are exactly those of ``policies.evaluate.window_totals`` over the counting withdrawals
(``tests/custody/test_usage.py`` compares the two).

``scoped_usage`` is kept the same way for the windows that are not an asset's or an API key's: a customer's
(scope ``customer:<id>``, every counting withdrawal of that customer) and the asset's unlisted payouts (scope
``unlisted``, every counting withdrawal whose destination kind is unlisted, whoever the customer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Numeric, Table, and_, case, func, select, type_coerce
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from custody.ledger import states
from custody.store.models import ScopedUsage, WindowUsage, Withdrawal
from policies.evaluate import window_totals

TABLE = cast(Table, WindowUsage.__table__)
SCOPED = cast(Table, ScopedUsage.__table__)
EXACT = Numeric(78, 0)  # what ``Amount`` is on PostgreSQL; its own type would add as text
Change = tuple[str, str, int, int]  # asset, API key, second, amount (negative to take it out)
ScopedChange = tuple[str, str, int, int]  # scope, asset, second, amount (negative to take it out)
UNLISTED = "unlisted"  # the scope of an asset's payouts to unlisted destinations


def counts(state: str) -> bool:
    return state not in states.NOT_SPENDING


def customer_scope(customer: str) -> str:
    return f"customer:{customer}"


def scopes(customer: str | None, destination_kind: str | None) -> tuple[str, ...]:
    """The scoped windows a withdrawal of this customer and destination kind counts in (none without either)."""
    found = (customer_scope(customer),) if customer is not None else ()
    return (*found, UNLISTED) if destination_kind == UNLISTED else found


def add(s: Session, changes: Iterable[Change]) -> None:
    """Apply the changes in the caller's transaction, summed per row first, rows in key order."""
    _apply(s, TABLE, WindowUsage, ("asset", "api_key", "at"), changes)


def add_scoped(s: Session, changes: Iterable[ScopedChange]) -> None:
    """``add`` for the scoped windows (``scopes``); nothing at all is sent when there is no change."""
    _apply(s, SCOPED, ScopedUsage, ("scope", "asset", "at"), changes)


def take_out(s: Session, w: Withdrawal) -> None:
    """``w`` stopped counting (it will never be paid): out of every window it was in."""
    add(s, [(w.asset, w.api_key, w.created_at, -w.amount)])
    add_scoped(s, [(scope, w.asset, w.created_at, -w.amount) for scope in scopes(w.customer, w.destination_kind)])


def _apply(
    s: Session,
    table: Table,
    model: type[Any],
    names: tuple[str, str, str],
    changes: Iterable[tuple[str, str, int, int]],
) -> None:
    merged: dict[tuple[str, str, int], int] = {}
    for a, b, at, amount in changes:
        merged[(a, b, at)] = merged.get((a, b, at), 0) + amount
    rows = [dict(zip((*names, "amount"), (*key, v), strict=True)) for key, v in sorted(merged.items()) if v]
    if not rows:
        return
    if s.get_bind().dialect.name == "postgresql":  # exact NUMERIC arithmetic in the database
        stmt = pg_insert(table)
        s.execute(
            stmt.on_conflict_do_update(
                index_elements=list(names),
                set_={"amount": type_coerce(table.c.amount, EXACT) + type_coerce(stmt.excluded.amount, EXACT)},
            ),
            rows,
        )
        return
    for row in rows:  # SQLite keeps amounts as text; its one writer at a time makes read-then-write safe
        existing = s.get(model, tuple(row[n] for n in names))
        if existing is None:
            s.add(model(**row))
        else:
            existing.amount += cast(int, row["amount"])


def totals(
    s: Session, asset: str, api_key: str, now: int, periods: list[int], key_periods: list[int]
) -> tuple[dict[int, int], dict[int, int]]:
    """What ``asset`` has used in each of ``periods``, and ``api_key`` in each of ``key_periods`` (an amount
    made at t counts in window p iff now - p < t <= now)."""
    longest = max(periods + key_periods, default=0)
    if not longest:
        return {}, {}
    U = WindowUsage
    where = (U.asset == asset, U.at > now - longest, U.at <= now)
    if s.get_bind().dialect.name == "postgresql":
        sums = [func.coalesce(func.sum(case((U.at > now - p, U.amount), else_=0)), 0) for p in periods]
        sums += [
            func.coalesce(func.sum(case((and_(U.api_key == api_key, U.at > now - p), U.amount), else_=0)), 0)
            for p in key_periods
        ]
        values = [int(v) for v in s.execute(select(*sums).where(*where)).one()]
        return dict(zip(periods, values[: len(periods)], strict=True)), dict(
            zip(key_periods, values[len(periods) :], strict=True)
        )
    rows = s.execute(select(U.at, U.amount, U.api_key).where(*where)).all()
    return (
        window_totals(((r[0], r[1]) for r in rows), now, periods),
        window_totals(((r[0], r[1]) for r in rows if r[2] == api_key), now, key_periods),
    )


def scoped_totals(
    s: Session, now: int, wanted: Mapping[tuple[str, str], Sequence[int]]
) -> dict[tuple[str, str], dict[int, int]]:
    """For each (scope, asset) of ``wanted``, what it used in each of its periods (the same edges as
    ``totals``), in one query for all of them; nothing is asked when no period is wanted."""
    result: dict[tuple[str, str], dict[int, int]] = {key: dict.fromkeys(periods, 0) for key, periods in wanted.items()}
    spans = sorted({p for periods in wanted.values() for p in periods})
    if not spans:
        return result
    U = ScopedUsage
    where = (
        U.scope.in_({scope for scope, _ in wanted}),
        U.asset.in_({asset for _, asset in wanted}),
        U.at > now - spans[-1],
        U.at <= now,
    )
    if s.get_bind().dialect.name == "postgresql":
        sums = [func.coalesce(func.sum(case((U.at > now - p, U.amount), else_=0)), 0) for p in spans]
        for scope, asset, *values in s.execute(
            select(U.scope, U.asset, *sums).where(*where).group_by(U.scope, U.asset)
        ):
            found = result.get((scope, asset))
            if found is not None:
                found.update({p: int(v) for p, v in zip(spans, values, strict=True) if p in found})
        return result
    rows: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for scope, asset, at, amount in s.execute(select(U.scope, U.asset, U.at, U.amount).where(*where)):
        rows.setdefault((scope, asset), []).append((at, amount))
    for key, periods in wanted.items():
        result[key] = window_totals(rows.get(key, ()), now, periods)
    return result
