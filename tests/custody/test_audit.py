"""The audit chain catches an edited row, a removed row, and a removed last row, on both databases."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from custody.ledger import audit
from custody.store.models import AuditEntry
from policies.canonical import canonical_bytes


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


@given(
    seq=st.integers(1, 2**62),
    at=st.integers(0, 2**40),
    kind=st.text(max_size=20),
    subject=st.text(max_size=40),
    data=st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(), st.lists(st.text(max_size=4), max_size=3)),
        max_size=5,
    ),
)
def test_the_hash_written_is_the_hash_verified(seq, at, kind, subject, data):
    """Appending builds an entry's canonical body around its already canonical data; verification parses
    the stored data and encodes the whole body. Any difference would break every chain."""
    text = canonical_bytes(data).decode("utf-8")
    prev = "ab" * 32
    assert audit._appended_hash(seq, at, kind, subject, text, prev) == audit.entry_hash(
        seq, at, kind, subject, text, prev
    )
