"""The audit log: newest first, paged by keyset (``seq``), searched by subject (a withdrawal, batch, freeze or
operator) or kind through their indexes (migration 0013), and the whole chain verified on request with the
ledger's own ``verify`` (the same check as `custody audit verify`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.console.auth import Signed
from custody.console.deps import Services, services, signed_in
from custody.console.render import page
from custody.errors import InvalidField
from custody.ledger.audit import Verdict, verify
from custody.store.models import AuditEntry

router = APIRouter()
PAGE = 50
KIND = re.compile(r"[a-z_]+(\.[a-z_]+)*")


@dataclass(frozen=True)
class Search:
    subject: str = ""
    kind: str = ""
    before: int | None = None


def parse_search(subject: str, kind: str, before: str) -> Search:
    subject, kind = subject.strip(), kind.strip()
    if len(subject) > 64 or not subject.isprintable():
        raise InvalidField("subject must be at most 64 printable characters (a withdrawal or batch id, an operator)")
    if kind and (len(kind) > 64 or not KIND.fullmatch(kind)):
        raise InvalidField("kind must be an entry kind such as withdrawal.created or freeze.on")
    if before and (not before.isdigit() or len(before) > 18):
        raise InvalidField("before must be an audit entry's sequence number")
    return Search(subject, kind, int(before) if before else None)


def entries(s: Session, q: Search, limit: int = PAGE) -> tuple[list[tuple[AuditEntry, str]], int | None]:
    """A page of entries, newest first, each with its data as indented JSON, and the ``before`` of the next."""
    query = select(AuditEntry)
    if q.subject:
        query = query.where(AuditEntry.subject == q.subject)
    if q.kind:
        query = query.where(AuditEntry.kind == q.kind)
    if q.before is not None:
        query = query.where(AuditEntry.seq < q.before)
    rows = list(s.execute(query.order_by(AuditEntry.seq.desc()).limit(limit + 1)).scalars())
    shown = [(e, json.dumps(json.loads(e.data), indent=1, sort_keys=True)) for e in rows[:limit]]
    return shown, (rows[limit - 1].seq if len(rows) > limit else None)


def _page(svc: Services, signed: Signed, q: Search, verdict: Verdict | None) -> Response:
    with svc.store.read() as s:
        shown, older = entries(s, q)
    link = None
    if older is not None:
        link = urlencode({k: v for k, v in (("subject", q.subject), ("kind", q.kind), ("before", older)) if v})
    return page("audit.html", here="/audit", signed=signed, q=q, shown=shown, older=link, verdict=verdict)


@router.get("/audit")
def audit_page(
    svc: Annotated[Services, Depends(services)],
    signed: Annotated[Signed, Depends(signed_in)],
    subject: str = "",
    kind: str = "",
    before: str = "",
) -> Response:
    return _page(svc, signed, parse_search(subject, kind, before), None)


@router.get("/audit/verify")
def audit_verify(
    svc: Annotated[Services, Depends(services)], signed: Annotated[Signed, Depends(signed_in)]
) -> Response:
    """Every entry's hash and link checked, from the first; takes about a second per few hundred thousand."""
    with svc.store.read() as s:
        verdict = verify(s)
    return _page(svc, signed, Search(), verdict)
