"""Webhooks: every state change of a withdrawal, batch or address book, POSTed to each configured URL, in
order, signed.

The outbox is the audit log itself: a state change and its audit entry commit in one transaction, so an event
exists exactly when the change does, and a crash can lose neither. Each endpoint keeps a cursor (the audit seq
delivered through); a dispatcher delivers the entries after it one by one and moves the cursor only on a 2xx
answer. A failure is retried with exponential backoff (1 s doubling to 5 min); later events wait, so a receiver
always sees them in order. Delivery is at least once: a crash between the receiver's 2xx and the cursor's
update sends that event again, with the same delivery id, which the receiver deduplicates on.

Each POST carries the event as JSON and three headers:

    X-Custody-Delivery   the delivery id: the audit entry's hash (also what an auditor finds in the log)
    X-Custody-Timestamp  unix seconds when this attempt was sent
    X-Custody-Signature  Ed25519 over  b"custody-webhook-v1\\n" + delivery + b"\\n" + timestamp + b"\\n"
                         + hex SHA-256 of the body,  by the daemon's identity key (identity.pub)

Several dispatchers (replicas) may run: an endpoint is leased to one of them at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

import httpx
from nacl.signing import SigningKey
from sqlalchemy import CursorResult, func, or_, select, update

from custody import logs, outage
from custody.clock import iso
from custody.store.db import Store
from custody.store.models import AuditEntry, AuditHead, WebhookEndpoint
from policies.units import format_amount

log = logging.getLogger("custody.webhooks")
DOMAIN = b"custody-webhook-v1"
# chain.rollback_detected: see custody.hot.rollback; address.* and customer.*: custody.intake.addressbook;
# request.source_not_allowed: custody.intake.sources
KINDS = ("withdrawal.", "batch.", "chain.", "address.", "customer.", "request.")
MAX_BACKOFF = 300.0


def signed_headers(key: SigningKey, delivery: str, body: bytes, timestamp: int) -> dict[str, str]:
    message = b"\n".join(
        [DOMAIN, delivery.encode(), str(timestamp).encode(), hashlib.sha256(body).hexdigest().encode()]
    )
    return {
        "Content-Type": "application/json",
        "X-Custody-Delivery": delivery,
        "X-Custody-Timestamp": str(timestamp),
        "X-Custody-Signature": key.sign(message).signature.hex(),
    }


def event(entry: AuditEntry) -> dict[str, Any]:
    """The audit entry as a receiver gets it, in the API's units: times ISO 8601, amounts decimal strings."""
    return {
        "id": entry.hash,
        "seq": entry.seq,
        "type": entry.kind,
        "subject": entry.subject,
        "at": iso(entry.at),
        "data": edge_units(json.loads(entry.data)),
    }


def edge_units(data: dict[str, Any]) -> dict[str, Any]:
    """The log keeps unix seconds and base units (exact, compact); the edge speaks ISO 8601 and the asset's
    decimal units, like the API. An amount is given both ways: ``amount`` in the asset's units and
    ``amount_base_units``; an entry written before the log recorded ``decimals`` has only the latter."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        is_time = key == "at" or key.endswith("_at")
        out[key] = iso(value) if is_time and isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(out.get("amount"), str):
        base = out.pop("amount")
        decimals = out.pop("decimals", None)
        if isinstance(decimals, int):
            out["amount"] = format_amount(int(base), decimals)
        out["amount_base_units"] = base
    return out


def backoff(attempts: int) -> float:
    return float(min(MAX_BACKOFF, 2 ** max(0, attempts - 1)))


def sync_endpoints(store: Store, urls: tuple[str, ...], now: int) -> None:
    """Register configured URLs once; a new one starts at the current end of the log (events from now on)."""
    with store.read() as s:
        known = set(s.execute(select(WebhookEndpoint.url)).scalars())
    missing = [u for u in urls if u not in known]
    if not missing:
        return
    with store.transaction() as s:
        head = s.execute(select(AuditHead.seq).where(AuditHead.id == 1)).scalar_one()
        for url in missing:
            if s.get(WebhookEndpoint, url) is None:
                s.add(
                    WebhookEndpoint(
                        url=url, cursor=head, attempts=0, next_attempt_at=0.0, lease_until=0.0, created_at=now
                    )
                )


def backlog(store: Store, urls: tuple[str, ...]) -> dict[str, int]:
    """Events each endpoint has still to receive."""
    out = {}
    with store.read() as s:
        for ep in s.execute(select(WebhookEndpoint).where(WebhookEndpoint.url.in_(urls))).scalars():
            out[ep.url] = s.execute(select(func.count()).where(*_after(ep.cursor))).scalar_one()
    return out


@dataclass(frozen=True)
class EndpointStatus:
    """A configured URL as ``custody webhooks status`` shows it. ``started``: a worker has registered its
    endpoint (until then nothing is waiting for it); ``attempts``: failures in a row."""

    url: str
    started: bool
    waiting: int = 0
    attempts: int = 0
    last_error: str | None = None


def endpoint_status(store: Store, urls: tuple[str, ...]) -> list[EndpointStatus]:
    """Each of ``urls``, in order, read in one transaction."""
    out = []
    with store.read() as s:
        for url in urls:
            ep = s.get(WebhookEndpoint, url)
            if ep is None:
                out.append(EndpointStatus(url, started=False))
                continue
            waiting = s.execute(select(func.count()).where(*_after(ep.cursor))).scalar_one()
            out.append(EndpointStatus(url, True, waiting, ep.attempts, ep.last_error))
    return out


def _after(cursor: int) -> tuple[Any, ...]:
    return AuditEntry.seq > cursor, or_(*(AuditEntry.kind.startswith(k) for k in KINDS))


def _pending(s: Any, cursor: int, limit: int) -> list[AuditEntry]:
    return list(s.execute(select(AuditEntry).where(*_after(cursor)).order_by(AuditEntry.seq).limit(limit)).scalars())


@dataclass
class Dispatcher:
    store: Store
    key: SigningKey
    urls: tuple[str, ...]
    timeout: float = 5.0
    batch: int = 50
    lease: float = 30.0  # seconds; [webhooks] lease_seconds

    def __post_init__(self) -> None:
        self.client = httpx.Client(timeout=self.timeout)
        # The leases this dispatcher took and has not released: a database outage can stop it from releasing
        # one, and it may then take it back at once instead of waiting out its lease like any other dispatcher.
        self.held: dict[str, float] = {}

    def close(self) -> None:
        self.client.close()

    def step(self) -> int:
        """One pass over the due endpoints; returns how many events were delivered."""
        now = time.time()
        sync_endpoints(self.store, self.urls, int(now))
        delivered = 0
        for url in self.urls:
            if self._lease(url, now):
                try:
                    delivered += self._deliver(url)
                finally:
                    with self.store.transaction() as s:
                        s.execute(update(WebhookEndpoint).where(WebhookEndpoint.url == url).values(lease_until=0.0))
                    self.held.pop(url, None)
        return delivered

    def _lease(self, url: str, now: float) -> bool:
        with self.store.transaction() as s:
            taken = cast(
                "CursorResult[Any]",
                s.execute(
                    update(WebhookEndpoint)
                    .where(
                        WebhookEndpoint.url == url,
                        or_(WebhookEndpoint.lease_until < now, WebhookEndpoint.lease_until == self.held.get(url, -1.0)),
                        WebhookEndpoint.next_attempt_at <= now,
                    )
                    .values(lease_until=now + self.lease)
                ),
            )
        if taken.rowcount:
            self.held[url] = now + self.lease
        return bool(taken.rowcount)

    def _deliver(self, url: str) -> int:
        with self.store.read() as s:
            ep = s.get_one(WebhookEndpoint, url)
            cursor, attempts = ep.cursor, ep.attempts
            entries = _pending(s, cursor, self.batch)
            events = [(e.seq, e.hash, json.dumps(event(e), sort_keys=True).encode()) for e in entries]
        delivered = 0
        for seq, delivery, body in events:
            error = self._post(url, delivery, body)
            with self.store.transaction() as s:
                ep = s.get_one(WebhookEndpoint, url, with_for_update=True)
                if error is None:
                    ep.cursor, ep.attempts, ep.last_error, ep.next_attempt_at = seq, 0, None, 0.0
                    delivered += 1
                    continue
                attempts = ep.attempts + 1
                ep.attempts, ep.last_error = attempts, error
                ep.next_attempt_at = time.time() + backoff(attempts)
            log.warning("webhook %s: event %s not delivered (attempt %s): %s", url, seq, attempts, error)
            break
        return delivered

    def _post(self, url: str, delivery: str, body: bytes) -> str | None:
        headers = signed_headers(self.key, delivery, body, int(time.time()))
        try:
            answer = self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {str(exc)[:200]}"
        return None if 200 <= answer.status_code < 300 else f"HTTP {answer.status_code}"

    def run(self, stop: threading.Event, idle: float = 0.5) -> None:
        """Deliver until ``stop``. A failed pass is retried with backoff; a database outage is logged once,
        when it begins and when it ends (``custody.outage``), not at every pass."""

        def one_pass() -> bool:
            logs.REQUEST_ID.set(logs.new_id("h-"))
            return self.step() > 0

        outage.Loop("webhooks", log, idle=idle).forever(one_pass, stop)


@dataclass(frozen=True)
class ReceiverAnswer:
    """What ``send_test`` got: the receiver's HTTP status, or (``status`` None) why there was no answer."""

    status: int | None
    error: str | None = None


def send_test(key: SigningKey, url: str, now: int, timeout: float = 10.0) -> ReceiverAnswer:
    """``custody webhooks test URL``: one signed test event. A URL that cannot be reached (refused, unknown
    host, timeout, not an http(s) URL) is an answer too, with the reason, not an exception."""
    # the shape of every event (``event``), so a receiver's parser is tested too; seq 0 is never a real entry's
    test = {"id": "test", "seq": 0, "type": "test", "subject": "test", "at": iso(now), "data": {}}
    body = json.dumps(test, sort_keys=True).encode()
    try:
        answer = httpx.post(url, content=body, headers=signed_headers(key, "test", body, now), timeout=timeout)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return ReceiverAnswer(None, f"{type(exc).__name__}: {str(exc)[:200] or 'no detail'}")
    return ReceiverAnswer(answer.status_code)
