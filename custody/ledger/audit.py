"""The append-only, hash-chained audit log.

Entry n's hash is SHA-256 over the canonical JSON of
    {"seq": n, "at": unix seconds, "kind": "...", "subject": "...", "data": {...}, "prev": hash of n-1}
with prev = 64 zeros for entry 1. The head row holds the newest seq and hash; appenders lock it, so
concurrent transactions on any replica extend one chain. Editing or removing any entry, the last one
included, breaks verification at that entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from custody import failpoints
from custody.store.db import Store
from custody.store.models import AuditEntry, AuditHead
from policies.canonical import canonical_bytes

ZERO = "0" * 64


def entry_hash(seq: int, at: int, kind: str, subject: str, data: str, prev: str) -> str:
    body = {"seq": seq, "at": at, "kind": kind, "subject": subject, "data": json.loads(data), "prev": prev}
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


def _appended_hash(seq: int, at: int, kind: str, subject: str, data: str, prev: str) -> str:
    """``entry_hash`` for an entry being written, whose ``data`` is canonical already: the body's canonical
    bytes are those of its members in key order, so they are put together around ``data`` instead of
    parsing it back and encoding it again (``tests/custody/test_audit.py`` checks the two agree)."""

    def enc(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)

    text = f'{{"at":{at:d},"data":{data},"kind":{enc(kind)},"prev":{enc(prev)},"seq":{seq:d},"subject":{enc(subject)}}}'
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def append(session: Session, at: int, kind: str, subject: str, data: dict[str, Any]) -> None:
    """Add an entry inside the caller's transaction."""
    append_all(session, at, [(kind, subject, data)])


def append_all(session: Session, at: int, entries: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Add several entries, in order, under one lock of the head."""
    head = session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one()
    seq, prev = head.seq, head.hash
    rows = []
    for kind, subject, data in entries:
        text = canonical_bytes(data).decode("utf-8")
        seq += 1
        digest = _appended_hash(seq, at, kind, subject, text, prev)
        rows.append(
            {"seq": seq, "at": at, "kind": kind, "subject": subject, "data": text, "prev_hash": prev, "hash": digest}
        )
        prev = digest
    if rows:
        session.execute(
            insert(cast(Table, AuditEntry.__table__)), rows
        )  # one executemany, no ORM bookkeeping per entry
    head.seq, head.hash = seq, prev
    failpoints.reached("audit.appended")  # fault tests: stop here, inside the transaction, holding the head


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    first_broken: int | None = None
    reason: str = ""


def verify(session: Session, batch: int = 5000) -> Verdict:
    expected_seq, prev = 1, ZERO
    for entry in _entries(session, batch):
        if entry.seq != expected_seq:
            return Verdict(False, expected_seq - 1, expected_seq, f"entry {expected_seq} is missing")
        if entry.prev_hash != prev:
            return Verdict(
                False, expected_seq - 1, entry.seq, f"entry {entry.seq} does not link to entry {entry.seq - 1}"
            )
        try:
            digest = entry_hash(entry.seq, entry.at, entry.kind, entry.subject, entry.data, entry.prev_hash)
        except ValueError:
            digest = ""
        if digest != entry.hash:
            return Verdict(
                False, expected_seq - 1, entry.seq, f"entry {entry.seq} was altered (its hash does not match)"
            )
        expected_seq, prev = expected_seq + 1, entry.hash
    head = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
    if head.seq != expected_seq - 1 or head.hash != prev:
        first = min(head.seq, expected_seq)
        return Verdict(
            False,
            expected_seq - 1,
            first,
            f"the log ends at entry {expected_seq - 1} but its head records "
            f"entry {head.seq}: entries were removed from the end",
        )
    return Verdict(True, expected_seq - 1)


def verify_log(store: Store) -> Verdict:
    """``verify`` in a read transaction of its own (``custody audit verify``)."""
    with store.read() as s:
        return verify(s)


def export_log(store: Store) -> Iterator[str]:
    """``export_jsonl`` in a read transaction of its own, held while the caller consumes the lines
    (``custody audit export``)."""
    with store.read() as s:
        yield from export_jsonl(s)


def export_jsonl(session: Session, batch: int = 5000) -> Iterator[str]:
    for e in _entries(session, batch):
        yield json.dumps(
            {
                "seq": e.seq,
                "at": e.at,
                "kind": e.kind,
                "subject": e.subject,
                "data": json.loads(e.data),
                "prev": e.prev_hash,
                "hash": e.hash,
            },
            sort_keys=True,
        )


def _entries(session: Session, batch: int) -> Iterator[AuditEntry]:
    last = 0
    while True:
        rows = (
            session.execute(select(AuditEntry).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch))
            .scalars()
            .all()
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
