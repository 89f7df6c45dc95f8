"""The routes' dependencies: the services the app was made with, the raw body, and who signed the request.

``create_app`` makes one ``Services`` per app and keeps it in ``app.state.services``; a route takes what it
calls from there (``Svc``), never from a module global, so two apps in one process stay apart.

No ``from __future__ import annotations`` here or in the routes: FastAPI reads these annotations at run time,
and ``signed``'s names a local of its factory.
"""

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from custody.clock import Clock
from custody.config import Settings
from custody.errors import BodyTooLarge
from custody.intake.apikeys import Authenticator, Principal, Seen
from custody.intake.groupcommit import GroupCommit
from custody.intake.withdrawals import Created, Intake, Withdrawals
from custody.ledger.policy import PolicyCache
from custody.ops.metrics import Metrics
from custody.store.db import Store


@dataclass(frozen=True)
class Services:
    """What one app's routes call, made once by ``create_app``."""

    settings: Settings
    store: Store
    clock: Clock
    policies: PolicyCache
    auth: Authenticator
    withdrawals: Withdrawals
    intake: GroupCommit[Intake, Created]  # Withdrawals.create_many, group-committed
    metrics: Metrics


async def services(request: Request) -> Services:
    """The app's services (async: a lookup needs no worker thread)."""
    found: Services = request.app.state.services
    return found


Svc = Annotated[Services, Depends(services)]


async def body(request: Request, svc: Svc) -> bytes:
    """The raw body, read up to the limit: the signature covers exactly these bytes."""
    limit = svc.settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


Body = Annotated[bytes, Depends(body)]


def checked(scope: str, record: bool = True) -> Any:
    """The signed request's check, as a dependency; ``record=False`` leaves its nonce to the caller."""

    async def dependency(request: Request, raw: Body, svc: Svc) -> Seen:
        h = request.headers
        query = request.scope["query_string"].decode("latin-1")
        seen = await svc.auth.check(
            {
                "key": h.get("x-custody-key"),
                "timestamp": h.get("x-custody-timestamp"),
                "nonce": h.get("x-custody-nonce"),
                "signature": h.get("x-custody-signature"),
                "idempotency_key": h.get("idempotency-key"),
            },
            request.method,
            request.scope["path"] + (f"?{query}" if query else ""),
            raw,
            svc.clock.now(),
        )
        seen.principal.require(scope)
        if record:
            await svc.auth.nonces.run(seen)
        return seen

    return Depends(dependency)


def signed(scope: str) -> Any:
    """Who signed the request, once it is checked for ``scope`` and its nonce recorded."""

    async def principal(seen: Annotated[Seen, checked(scope)]) -> Principal:
        return seen.principal

    return Depends(principal)


Reader = Annotated[Principal, signed("read")]
Canceller = Annotated[Principal, signed("cancel")]
