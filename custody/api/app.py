"""The FastAPI application, wired: its services, the request log, the error handlers and the routers.

What each part holds: ``deps`` (the services and the signed-request dependencies), ``middleware`` (request
ids and the access log), ``handlers`` (errors into problem details; statuses from ``problems``), ``routes``
(one module per resource: each route parses, calls one service function, and formats), ``schemas`` (the
wire shapes).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool

from custody import outage
from custody.api.deps import Services
from custody.api.handlers import install_handlers
from custody.api.middleware import RequestLog, access
from custody.api.routes import ROUTERS
from custody.clock import Clock
from custody.config import Settings
from custody.intake.addressbook import AddressBook
from custody.intake.apikeys import Authenticator, RateLimiter
from custody.intake.groupcommit import GroupCommit
from custody.intake.signatures import KEY_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from custody.intake.sources import Sources
from custody.intake.withdrawals import Withdrawals
from custody.ledger.policy import PolicyCache
from custody.ops.metrics import Metrics
from custody.store.db import Store


def make_services(settings: Settings, store: Store, clock: Clock) -> Services:
    policies = PolicyCache()
    limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    auth = Authenticator(store, settings.max_clock_skew_seconds, limiter)
    withdrawals = Withdrawals(store, policies, clock, auth.remember)
    intake = GroupCommit("intake", withdrawals.create_many)
    return Services(
        settings,
        store,
        clock,
        policies,
        auth,
        withdrawals,
        intake,
        Metrics(settings, store),
        book=AddressBook(store, policies, clock, auth.remember),
        sources=Sources(store, policies, auth.remember),
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    services: Services = app.state.services
    await run_in_threadpool(services.intake.close)  # what was queued is committed and answered before exit
    await run_in_threadpool(services.auth.nonces.close)


# OpenAPI: the four signature headers, one apiKey scheme each, all required together on every signed route
# (one security requirement naming the four). docs/api.md says how their values are made.
SIGNATURE_SCHEMES = {
    "CustodyKey": (KEY_HEADER, "The API key's name, as registered with `custody apikey add`"),
    "CustodyTimestamp": (TIMESTAMP_HEADER, "Decimal unix seconds, within the daemon's allowed clock skew"),
    "CustodyNonce": (NONCE_HEADER, "16 to 64 random lowercase hex digits, new for every request"),
    "CustodySignature": (SIGNATURE_HEADER, "Ed25519 signature of the request message (docs/api.md), 128 hex digits"),
}
SIGNED_PREFIX = "/v1/"


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the signature headers declared as security schemes on every signed route."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title, version=app.version, summary=app.summary, description=app.description, routes=app.routes
        )
        doc.setdefault("components", {})["securitySchemes"] = {
            name: {"type": "apiKey", "in": "header", "name": header, "description": text}
            for name, (header, text) in SIGNATURE_SCHEMES.items()
        }
        for path, operations in doc.get("paths", {}).items():
            if path.startswith(SIGNED_PREFIX):
                for operation in operations.values():
                    operation["security"] = [{name: [] for name in SIGNATURE_SCHEMES}]
        app.openapi_schema = doc
    return app.openapi_schema


def create_app(settings: Settings, store: Store, clock: Clock) -> FastAPI:
    services = make_services(settings, store, clock)
    database = outage.Loop("api", access)  # one line when requests start failing on the database, one when back
    app = FastAPI(
        title="custody",
        version="1",
        summary="Withdrawal intake for an exchange's treasury",
        description="Every route under /v1/ is signed: see docs/api.md for the message and the headers.",
        lifespan=lifespan,
        redirect_slashes=False,  # a trailing slash is 404, not a 307 that a client follows unsigned into a 401
    )
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    app.state.services = services
    app.state.withdrawals, app.state.auth = services.withdrawals, services.auth  # serve's scheduler uses them
    app.add_middleware(RequestLog, metrics=services.metrics, database=database, trusted=settings.trusted_proxies)
    install_handlers(app, database)
    for router in ROUTERS:
        app.include_router(router)
    return app
