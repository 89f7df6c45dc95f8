"""What waits for people: the review queue (held withdrawals, the hold rules that fired and the operators'
decisions so far) and the cold batches (Safe and Bitcoin) with who has signed and who is missing, read through
``custody.cold.views`` so the console and `custody batch list` agree. Both pages refresh themselves."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.cold.views import BatchView, BtcBatchView, batch_views, btc_batch_views
from custody.console.auth import Signed
from custody.console.deps import Services, services, signed_in
from custody.console.render import page
from custody.ledger.states import State
from custody.store.models import Approval, Batch, Withdrawal

router = APIRouter()
HELD_SHOWN = 200
BATCHES_SHOWN = 100  # newest first
REFRESH = 15  # seconds between the queues' reloads


@dataclass(frozen=True)
class Held:
    w: Withdrawal
    holds: list[dict[str, Any]]  # the hold rules that fired: {rule, passed, message}
    approvals: list[Approval]


def held(s: Session, limit: int = HELD_SHOWN) -> list[Held]:
    rows = list(
        s.execute(select(Withdrawal).where(Withdrawal.state == State.HELD).order_by(Withdrawal.seq).limit(limit))
        .scalars()
        .all()
    )
    decisions: dict[str, list[Approval]] = defaultdict(list)
    if rows:
        query = select(Approval).where(Approval.withdrawal_id.in_([w.id for w in rows])).order_by(Approval.at)
        for a in s.execute(query).scalars():
            decisions[a.withdrawal_id].append(a)
    return [
        Held(
            w, [r for r in json.loads(w.reasons) if r["rule"].startswith("hold:") and not r["passed"]], decisions[w.id]
        )
        for w in rows
    ]


@router.get("/review")
def review_queue(
    svc: Annotated[Services, Depends(services)], signed: Annotated[Signed, Depends(signed_in)]
) -> Response:
    with svc.store.read() as s:
        queue = held(s)
    return page("review.html", here="/review", signed=signed, queue=queue, refresh=REFRESH)


def safe_batches(s: Session) -> tuple[list[BatchView], dict[str, str]]:
    views = batch_views(s)[-BATCHES_SHOWN:][::-1]
    ids = [v.id for v in views]
    query = select(Batch.id, Batch.safe_tx_hash).where(Batch.id.in_(ids))
    hashes = {batch_id: digest for batch_id, digest in s.execute(query).all()} if ids else {}
    return views, hashes


def bitcoin_batches(s: Session) -> list[BtcBatchView]:
    return btc_batch_views(s)[-BATCHES_SHOWN:][::-1]


@router.get("/batches")
def batches(svc: Annotated[Services, Depends(services)], signed: Annotated[Signed, Depends(signed_in)]) -> Response:
    with svc.store.read() as s:
        safe, hashes = safe_batches(s)
        btc = bitcoin_batches(s)
    return page(
        "batches.html",
        here="/batches",
        signed=signed,
        safe=safe,
        hashes=hashes,
        btc=btc,
        refresh=REFRESH,
        explorer=svc.settings.explorer_tx,
    )
