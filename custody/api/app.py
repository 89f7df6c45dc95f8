"""The FastAPI application, wired: its services, the request log, the error handlers and the routers.

What each part holds: ``deps`` (the services and the signed-request dependencies), ``middleware`` (request
ids and the access log), ``handlers`` (errors into problem details; statuses from ``problems``), ``routes``
(one module per resource: each route parses, calls one service function, and formats), ``schemas`` (the
wire shapes).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
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


def create_app(settings: Settings, store: Store, clock: Clock) -> FastAPI:
    services = make_services(settings, store, clock)
    database = outage.Loop("api", access)  # one line when requests start failing on the database, one when back
    app = FastAPI(
        title="custody", version="1", summary="Withdrawal intake for an exchange's treasury", lifespan=lifespan
    )
    app.state.services = services
    app.state.withdrawals, app.state.auth = services.withdrawals, services.auth  # serve's scheduler uses them
    app.add_middleware(RequestLog, metrics=services.metrics, database=database, trusted=settings.trusted_proxies)
    install_handlers(app, database)
    for router in ROUTERS:
        app.include_router(router)
    return app
