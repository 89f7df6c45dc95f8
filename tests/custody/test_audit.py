"""The audit chain catches an edited row, a removed row, and a removed last row, on both databases."""

from __future__ import annotations

import time

from sqlalchemy import delete, select, update

from custody import audit
from custody.store.models import AuditEntry


def fill(store, n: int = 5) -> None:
    with store.transaction() as s:
        for i in range(n):
            audit.append(s, int(time.time()), "test.event", f"s{i}", {"i": i, "amount": str(10**30)})


def verdict(store) -> audit.Verdict:
    with store.transaction() as s:
        return audit.verify(s)


def test_an_intact_log_verifies(store):
    fill(store)
    v = verdict(store)
    assert v.ok and v.entries == 5


def test_an_edited_row_is_named(store):
    fill(store)
    with store.transaction() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(data='{"amount":"1","i":2}'))
    v = verdict(store)
    assert not v.ok and v.first_broken == 3 and "altered" in v.reason


def test_an_edited_time_or_kind_is_caught_too(store):
    fill(store)
    with store.transaction() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(at=0))
    assert verdict(store).first_broken == 2


def test_a_deleted_row_is_named(store):
    fill(store)
    with store.transaction() as s:
        s.execute(delete(AuditEntry).where(AuditEntry.seq == 2))
    v = verdict(store)
    assert not v.ok and v.first_broken == 2 and "missing" in v.reason


def test_a_deleted_last_row_is_caught_by_the_head(store):
    fill(store)
    with store.transaction() as s:
        s.execute(delete(AuditEntry).where(AuditEntry.seq == 5))
    v = verdict(store)
    assert not v.ok and v.first_broken == 5


def test_export_is_one_json_object_per_entry(store):
    fill(store, 3)
    with store.transaction() as s:
        lines = list(audit.export_jsonl(s))
        hashes = list(s.execute(select(AuditEntry.hash).order_by(AuditEntry.seq)).scalars())
    assert [line.count('"hash"') for line in lines] == [1, 1, 1]
    assert all(h in line for h, line in zip(hashes, lines, strict=True))
