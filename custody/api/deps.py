"""The routes' dependencies: the services the app was made with, the raw body, who signed the request (and
whether the policy lets that key call from where it came from), and the signed request itself.

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
from custody.intake.addressbook import AddressBook
from custody.intake.apikeys import Authenticator, Principal, Seen
from custody.intake.groupcommit import GroupCommit
from custody.intake.sources import Address, Sources, parse_address
from custody.intake.withdrawals import Created, Intake, SignedRequest, Withdrawals
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
    book: AddressBook
    sources: Sources  # the policy's source networks per key


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


def target(request: Request) -> str:
    """What the signature covers of the request target: the decoded path, and the query as sent."""
    query = request.scope["query_string"].decode("latin-1")
    return str(request.scope["path"]) + (f"?{query}" if query else "")


def client(request: Request) -> Address | None:
    """The client's address: as ``RequestLog`` found it (through trusted proxies), else the direct peer."""
    state = request.scope.get("state", {})
    if "client" in state:
        found: Address | None = state["client"]
        return found
    return parse_address(request.client.host) if request.client else None


def checked(scope: str, record: bool = True) -> Any:
    """The signed request's check, as a dependency; ``record=False`` leaves its nonce to the caller. A key the
    policy limits to some networks, calling from elsewhere, is refused (``source_not_allowed``) whatever the
    scope: the refusal is audited and consumes the request's nonce."""

    async def dependency(request: Request, raw: Body, svc: Svc) -> Seen:
        h = request.headers
        path = target(request)
        seen = await svc.auth.check(
            {
                "key": h.get("x-custody-key"),
                "timestamp": h.get("x-custody-timestamp"),
                "nonce": h.get("x-custody-nonce"),
                "signature": h.get("x-custody-signature"),
                "idempotency_key": h.get("idempotency-key"),
            },
            request.method,
            path,
            raw,
            svc.clock.now(),
        )
        await svc.sources.check(seen, client(request), request.method, path)
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


def signed_request(request: Request, raw: bytes) -> SignedRequest:
    """The request exactly as it was signed and as ``checked`` verified it: the headers, the signed target
    (``target``) and the body's bytes, all as sent."""
    h = request.headers
    return SignedRequest(
        key=h.get("x-custody-key", ""),
        method=request.method,
        path=target(request),
        timestamp=h.get("x-custody-timestamp", ""),
        nonce=h.get("x-custody-nonce", ""),
        idempotency_key=h.get("idempotency-key", ""),
        body=raw,
        signature=h.get("x-custody-signature", ""),
    )


async def original(request: Request, raw: Body) -> str:
    """``signed_request`` in its stored form (``SignedRequest.to_json``), so that anyone holding the key's
    public key can check it again later: offline signers do, before paying a customer's destination from the
    cold wallet."""
    return signed_request(request, raw).to_json()


Original = Annotated[str, Depends(original)]
Reader = Annotated[Principal, signed("read")]
Canceller = Annotated[Principal, signed("cancel")]
Withdrawer = Annotated[Principal, signed("withdraw")]
