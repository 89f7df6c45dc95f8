"""Withdrawals: the list, filtered by state, asset, customer and time, paged by keyset (``seq``, newest first:
each page is one index range scan however deep it is, so it stays fast at any size), and one withdrawal's
page: the policy's decision with every rule's reason, its approvals, its transactions and its audit trail."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.console.auth import Signed
from custody.console.deps import Services, services, signed_in
from custody.console.render import page
from custody.errors import InvalidField, NotFound
from custody.ledger.states import State
from custody.store.models import Approval, AuditEntry, Batch, BtcBatch, HotTransaction, Withdrawal

router = APIRouter()
PAGE = 50
TRAIL = 500  # audit entries shown on a withdrawal's page
ASSET = re.compile(r"[A-Za-z0-9]{1,16}")
STATES = tuple(s.value for s in State)


@dataclass(frozen=True)
class Filters:
    state: str = ""
    asset: str = ""
    customer: str = ""
    since: int | None = None  # created at or after (unix seconds)
    until: int | None = None  # created before
    before: int | None = None  # keyset: rows with seq below (older)
    after: int | None = None  # keyset: rows with seq above (newer)

    def query(self, **change: Any) -> str:
        """The query string of these filters with ``change`` applied (for the paging links)."""
        raw = {
            "state": self.state,
            "asset": self.asset,
            "customer": self.customer,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "before": "" if self.before is None else str(self.before),
            "after": "" if self.after is None else str(self.after),
        }
        raw.update({k: "" if v is None else str(v) for k, v in change.items()})
        return urlencode({k: v for k, v in raw.items() if v})


def _iso(ts: int | None) -> str:
    return "" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M")


def parse_time(name: str, text: str) -> int | None:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM`` (what a datetime-local field sends), in UTC."""
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"):
        try:
            return int(dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC).timestamp())
        except ValueError:
            continue
    raise InvalidField(f"{name} must be a date (YYYY-MM-DD) or a date and time (YYYY-MM-DDTHH:MM), in UTC")


def _seq(name: str, text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or len(text) > 18:
        raise InvalidField(f"{name} must be a withdrawal sequence number")
    return int(text)


def parse_filters(q: Mapping[str, str]) -> Filters:
    """The list's filters from the query string; anything malformed is refused with what is wrong."""
    state, asset, customer = q.get("state", ""), q.get("asset", ""), q.get("customer", "").strip()
    if state and state not in STATES:
        raise InvalidField(f"state must be one of {', '.join(STATES)}")
    if asset and not ASSET.fullmatch(asset):
        raise InvalidField("asset must be a symbol of 1 to 16 letters and digits")
    if len(customer) > 64 or not customer.isprintable():
        raise InvalidField("customer must be at most 64 printable characters")
    return Filters(
        state,
        asset.upper(),
        customer,
        parse_time("since", q.get("since", "")),
        parse_time("until", q.get("until", "")),
        _seq("before", q.get("before", "")),
        _seq("after", q.get("after", "")),
    )


COLUMNS = (
    Withdrawal.seq,
    Withdrawal.id,
    Withdrawal.state,
    Withdrawal.asset,
    Withdrawal.amount,
    Withdrawal.decimals,
    Withdrawal.destination,
    Withdrawal.customer,
    Withdrawal.route,
    Withdrawal.created_at,
    Withdrawal.tx_hash,
)


def find(s: Session, f: Filters, limit: int = PAGE) -> tuple[list[Any], bool, bool]:
    """One page of withdrawals, newest first, and whether there are newer and older ones beyond it."""
    query = select(*COLUMNS)
    if f.state:
        query = query.where(Withdrawal.state == f.state)
    if f.asset:
        query = query.where(Withdrawal.asset == f.asset)
    if f.customer:
        query = query.where(Withdrawal.customer == f.customer)
    if f.since is not None:
        query = query.where(Withdrawal.created_at >= f.since)
    if f.until is not None:
        query = query.where(Withdrawal.created_at < f.until)
    if f.after is not None:  # the page above: the oldest rows newer than ``after``, shown newest first
        rows = list(s.execute(query.where(Withdrawal.seq > f.after).order_by(Withdrawal.seq).limit(limit + 1)))
        more_newer = len(rows) > limit
        return list(reversed(rows[:limit])), more_newer, True
    if f.before is not None:
        query = query.where(Withdrawal.seq < f.before)
    rows = list(s.execute(query.order_by(Withdrawal.seq.desc()).limit(limit + 1)))
    return rows[:limit], f.before is not None, len(rows) > limit


@router.get("/withdrawals")
def withdrawal_list(
    request: Request, svc: Annotated[Services, Depends(services)], signed: Annotated[Signed, Depends(signed_in)]
) -> Response:
    f = parse_filters(request.query_params)
    with svc.store.read() as s:
        rows, newer, older = find(s, f)
    newer_link = f.query(before=None, after=rows[0].seq) if rows and newer else None
    older_link = f.query(after=None, before=rows[-1].seq) if rows and older else None
    return page(
        "withdrawals.html",
        here="/withdrawals",
        signed=signed,
        f=f,
        rows=rows,
        states=STATES,
        newer=newer_link,
        older=older_link,
        since=_iso(f.since),
        until=_iso(f.until),
    )


@dataclass(frozen=True)
class Detail:
    w: Withdrawal
    reasons: list[dict[str, Any]]  # {rule, passed, message}, as the policy engine gave them
    approvals: list[Approval]
    transactions: list[HotTransaction]
    batch: Batch | BtcBatch | None
    trail: list[tuple[AuditEntry, str]]  # each entry and its data as indented JSON


def detail(s: Session, withdrawal_id: str) -> Detail:
    w = s.execute(select(Withdrawal).where(Withdrawal.id == withdrawal_id[:36])).scalar_one_or_none()
    if w is None:
        raise NotFound(f"no withdrawal {withdrawal_id[:40]!r}")
    approvals = list(s.execute(select(Approval).where(Approval.withdrawal_id == w.id).order_by(Approval.at)).scalars())
    txs = list(
        s.execute(
            select(HotTransaction)
            .where(HotTransaction.withdrawal_id == w.id)
            .order_by(HotTransaction.nonce, HotTransaction.attempt)
        ).scalars()
    )
    batch: Batch | BtcBatch | None = None
    if w.batch_id is not None:
        batch = s.get(Batch, w.batch_id) or s.get(BtcBatch, w.batch_id)
    entries = s.execute(
        select(AuditEntry).where(AuditEntry.subject == w.id).order_by(AuditEntry.seq).limit(TRAIL)
    ).scalars()
    trail = [(e, json.dumps(json.loads(e.data), indent=1, sort_keys=True)) for e in entries]
    return Detail(w, json.loads(w.reasons), approvals, txs, batch, trail)


@router.get("/withdrawals/{withdrawal_id}")
def withdrawal_page(
    withdrawal_id: str, svc: Annotated[Services, Depends(services)], signed: Annotated[Signed, Depends(signed_in)]
) -> Response:
    with svc.store.read() as s:
        d = detail(s, withdrawal_id)
    return page("withdrawal.html", here="/withdrawals", signed=signed, d=d, explorer=svc.settings.explorer_tx)
