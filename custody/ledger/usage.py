"""What the velocity windows have used: per asset, API key and second, the sum of the withdrawals made then
that still count (every state but rejected, cancelled and failed).

Intake adds each withdrawal it accepts; ``transitions.move`` takes it out again when it is cancelled or
fails. A window's total is then a sum over at most one row per key and second of the window, however many
withdrawals there were, where summing the withdrawals themselves grew with every one inside the longest
window. The sums are exactly those of ``policies.evaluate.window_totals`` over the counting withdrawals
(``tests/custody/test_usage.py`` compares the two).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from sqlalchemy import Numeric, Table, and_, case, func, select, type_coerce
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from custody.ledger import states
from custody.store.models import WindowUsage
from policies.evaluate import window_totals

TABLE = cast(Table, WindowUsage.__table__)
EXACT = Numeric(78, 0)  # what ``Amount`` is on PostgreSQL; its own type would add as text
Change = tuple[str, str, int, int]  # asset, API key, second, amount (negative to take it out)


def counts(state: str) -> bool:
    return state not in states.NOT_SPENDING


def add(s: Session, changes: Iterable[Change]) -> None:
    """Apply the changes in the caller's transaction, summed per row first, rows in key order."""
    merged: dict[tuple[str, str, int], int] = {}
    for asset, api_key, at, amount in changes:
        merged[(asset, api_key, at)] = merged.get((asset, api_key, at), 0) + amount
    rows = [{"asset": a, "api_key": k, "at": t, "amount": v} for (a, k, t), v in sorted(merged.items()) if v]
    if not rows:
        return
    if s.get_bind().dialect.name == "postgresql":  # exact NUMERIC arithmetic in the database
        stmt = pg_insert(TABLE)
        s.execute(
            stmt.on_conflict_do_update(
                index_elements=["asset", "api_key", "at"],
                set_={"amount": type_coerce(TABLE.c.amount, EXACT) + type_coerce(stmt.excluded.amount, EXACT)},
            ),
            rows,
        )
        return
    for row in rows:  # SQLite keeps amounts as text; its one writer at a time makes read-then-write safe
        key = (row["asset"], row["api_key"], row["at"])
        existing = s.get(WindowUsage, key)
        if existing is None:
            s.add(WindowUsage(**row))
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
