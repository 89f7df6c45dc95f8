"""Proof of reserves: the statements `custody por snapshot` recorded in the audit log (``por.snapshot``: the
snapshot id, the statement hash, the block, the liabilities root, the number of accounts, and each asset's
coverage, reserves over liabilities, drawn as a bar). The statement files themselves stay where the snapshot
wrote them (with ``report.html``); the page says how an auditor checks one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
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


BAR = 160  # pixels for a coverage of FULL_SCALE; the 100 % mark is at BAR // FULL_SCALE
FULL_SCALE = 2  # a coverage over 2x is drawn at the end of the bar (its figure says how far over)


@dataclass(frozen=True)
class Coverage:
    asset: str
    ratio: str | None  # reserves / liabilities as the statement says it ("1.0250"); None: no liabilities
    width: int  # the bar's length in pixels
    covered: bool  # reserves at least the liabilities


@dataclass(frozen=True)
class Snapshot:
    seq: int
    at: int
    snapshot_id: str
    data: dict[str, Any]  # statement_hash, block, root, accounts, coverage (by asset; older entries: none)
    coverage: tuple[Coverage, ...]


def coverage_bars(claimed: object) -> tuple[Coverage, ...]:
    """Each asset's coverage as a bar (pure); an entry that is not a mapping of ratio strings draws nothing."""
    if not isinstance(claimed, dict):
        return ()
    bars = []
    for asset, ratio in claimed.items():
        try:
            value = None if ratio is None else Decimal(str(ratio))
        except InvalidOperation:
            continue
        if value is None:
            bars.append(Coverage(str(asset), None, 0, True))
            continue
        width = int(min(value, Decimal(FULL_SCALE)) * BAR / FULL_SCALE)
        bars.append(Coverage(str(asset), str(ratio), max(width, 0), value >= 1))
    return tuple(bars)


def snapshots(s: Session, limit: int = SHOWN) -> list[Snapshot]:
    query = select(AuditEntry).where(AuditEntry.kind == KIND).order_by(AuditEntry.seq.desc()).limit(limit)
    found = []
    for e in s.execute(query).scalars():
        data = json.loads(e.data)
        found.append(Snapshot(e.seq, e.at, e.subject, data, coverage_bars(data.get("coverage"))))
    return found


@router.get("/reserves")
def reserves_page(
    svc: Annotated[Services, Depends(services)], signed: Annotated[Signed, Depends(signed_in)]
) -> Response:
    with svc.store.read() as s:
        found = snapshots(s)
    return page("reserves.html", here="/reserves", signed=signed, snapshots=found, bar=BAR, full=BAR // FULL_SCALE)
