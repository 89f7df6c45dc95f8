"""Proof of reserves: the statements `custody por snapshot` recorded in the audit log (``por.snapshot``: the
snapshot id, the statement hash, the block, the liabilities root, the number of accounts). The statement files
themselves stay where the snapshot wrote them (with ``report.html``, the coverage chart per asset); the page
says how an auditor checks one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.console.auth import Signed
from custody.console.deps import Services, services, signed_in
from custody.console.render import page
from custody.store.models import AuditEntry

router = APIRouter()
SHOWN = 100
KIND = "por.snapshot"


@dataclass(frozen=True)
class Snapshot:
    seq: int
    at: int
    snapshot_id: str
    data: dict[str, Any]  # statement_hash, block, root, accounts


def snapshots(s: Session, limit: int = SHOWN) -> list[Snapshot]:
    query = select(AuditEntry).where(AuditEntry.kind == KIND).order_by(AuditEntry.seq.desc()).limit(limit)
    return [Snapshot(e.seq, e.at, e.subject, json.loads(e.data)) for e in s.execute(query).scalars()]


@router.get("/reserves")
def reserves_page(
    svc: Annotated[Services, Depends(services)], signed: Annotated[Signed, Depends(signed_in)]
) -> Response:
    with svc.store.read() as s:
        found = snapshots(s)
    return page("reserves.html", here="/reserves", signed=signed, snapshots=found)
