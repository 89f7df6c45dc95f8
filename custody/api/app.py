"""The FastAPI application. Errors are translated once, here, into problem details with a stable code."""

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from custody import logs, outage
from custody.api.problems import DATABASE_UNAVAILABLE, HTTP_CODES, HTTP_ERROR, status_of
from custody.api.schemas import (
    AssetBalance,
    Balances,
    Problem,
    WithdrawalIn,
    WithdrawalOut,
    WithdrawalPage,
    withdrawal_out,
)
from custody.clock import Clock
from custody.config import Settings
from custody.errors import (
    BodyTooLarge,
    InvalidField,
    MalformedJson,
    MissingField,
    MissingIdempotencyKey,
    RateLimited,
    UnknownField,
)
from custody.intake.apikeys import Authenticator, Principal, RateLimiter, Seen
from custody.intake.groupcommit import GroupCommit
from custody.intake.withdrawals import Created, Intake, NewWithdrawal, Withdrawals
from custody.ledger.policy import PolicyCache
from custody.ledger.positions import cold_balance, hot_position
from custody.ops.metrics import Metrics
from custody.store.db import Store, unavailable
from policies.errors import CustodyError
from policies.units import format_amount

PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
ERRORS: dict[int | str, dict[str, Any]] = {code: PROBLEM for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)}
access = logging.getLogger("custody.api")


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {
        "type": f"https://custody.invalid/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "code": code,
        "detail": detail,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def create_app(settings: Settings, store: Store, clock: Clock) -> FastAPI:
    cache = PolicyCache()
    auth = Authenticator(
        store, settings.max_clock_skew_seconds, RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    )
    service = Withdrawals(store, cache, clock, auth.remember)
    intake: GroupCommit[Intake, Created] = GroupCommit("intake", service.create_many)
    metrics = Metrics(settings, store)
    database = outage.Loop("api", access)  # one line when requests start failing on the database, one when back

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(intake.close)  # what was queued is committed and answered before exit
        await run_in_threadpool(auth.nonces.close)

    app = FastAPI(
        title="custody", version="1", summary="Withdrawal intake for an exchange's treasury", lifespan=lifespan
    )
    app.state.withdrawals, app.state.auth = service, auth
    app.add_middleware(RequestLog, metrics=metrics, database=database)

    @app.exception_handler(CustodyError)
    async def _custody_error(_: Request, exc: CustodyError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
        return problem(status_of(exc), exc.code, exc.message, headers)

    @app.exception_handler(DBAPIError)
    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        """The connection broke (the database restarted, or cut it mid-transaction), or the server ended the
        work (a lock, statement or idle-in-transaction timeout; see ``custody.store.db.Timeouts``): the
        transaction rolled back whole, so nothing was written; the client retries with the same
        Idempotency-Key. Any other database error is a bug, answered 500 with its traceback logged."""
        if not unavailable(exc):
            raise exc
        database.failed(exc, "answering 503")  # once per outage; each request's access line says 503 too
        return problem(503, DATABASE_UNAVAILABLE, "the database is unavailable; retry", {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "header", "path"))
        return problem(422, "invalid_field", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, HTTP_ERROR)
        return problem(exc.status_code, code, str(exc.detail))

    async def body(request: Request) -> bytes:
        """The raw body, read up to the limit: the signature covers exactly these bytes."""
        limit = settings.max_body_bytes
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

    def checked(scope: str, record: bool = True) -> Any:
        """The signed request's check, as a dependency; ``record=False`` leaves its nonce to the caller."""

        async def dependency(request: Request, raw: Annotated[bytes, Depends(body)]) -> Seen:
            h = request.headers
            query = request.scope["query_string"].decode("latin-1")
            seen = await auth.check(
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
                clock.now(),
            )
            seen.principal.require(scope)
            if record:
                await auth.nonces.run(seen)
            return seen

        return Depends(dependency)

    def signed(scope: str) -> Any:
        async def principal(seen: Annotated[Seen, checked(scope)]) -> Principal:
            return seen.principal

        return Depends(principal)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics_page() -> PlainTextResponse:
        """Prometheus metrics, for an internal scraper (keep the API itself off public networks)."""
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: PROBLEM})
    def readyz() -> Any:
        try:
            store.ping()
        except Exception as exc:  # any database failure means not ready; say which, never crash
            return problem(503, "database_unreachable", type(exc).__name__)
        return {"status": "ready"}

    @app.get("/v1/ping", tags=["ops"], responses=ERRORS)
    async def ping(who: Annotated[Principal, signed("read")]) -> dict[str, str]:
        """A signed no-op: the baseline for the intake benchmark."""
        return {"key": who.name}

    @app.post(
        "/v1/withdrawals",
        tags=["withdrawals"],
        status_code=201,
        response_model=WithdrawalOut,
        responses={**ERRORS, 200: {"model": WithdrawalOut, "description": "The same request again"}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": WithdrawalIn.model_json_schema()}},
            }
        },
    )
    async def create_withdrawal(
        request: Request,
        seen: Annotated[Seen, checked("withdraw", record=False)],
        raw: Annotated[bytes, Depends(body)],
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None,
    ) -> Any:
        if not idempotency_key or not idempotency_key.isprintable():
            raise MissingIdempotencyKey("an Idempotency-Key header (1 to 128 printable characters) is required")
        req = parse_withdrawal(raw)
        # the request's nonce is recorded in the intake's own transaction: consumed exactly when it commits
        w, created = await intake.run(Intake(seen.principal, idempotency_key, req, logs.REQUEST_ID.get(), seen))
        if created:  # the access line names the new withdrawal and the state intake left it in
            request.state.log = {"withdrawal": w.id, "to": w.state}
        out = withdrawal_out(w).model_dump()
        return JSONResponse(
            out, status_code=201 if created else 200, headers=None if created else {"Idempotent-Replayed": "true"}
        )

    @app.get("/v1/withdrawals/{withdrawal_id}", tags=["withdrawals"], response_model=WithdrawalOut, responses=ERRORS)
    def get_withdrawal(withdrawal_id: str, who: Annotated[Principal, signed("read")]) -> WithdrawalOut:
        return withdrawal_out(service.get(who, withdrawal_id))

    @app.get("/v1/withdrawals", tags=["withdrawals"], response_model=WithdrawalPage, responses=ERRORS)
    def list_withdrawals(
        who: Annotated[Principal, signed("read")],
        state: Annotated[str | None, Query(max_length=16)] = None,
        cursor: Annotated[str | None, Query(max_length=19)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> WithdrawalPage:
        rows, nxt = service.list(who, state, cursor, limit)
        return WithdrawalPage(items=[withdrawal_out(w) for w in rows], next_cursor=nxt)

    @app.get("/v1/balances", tags=["wallets"], response_model=Balances, responses=ERRORS)
    def balances(who: Annotated[Principal, signed("read")]) -> Balances:
        """Per asset: the hot wallet's balance, what is reserved and free, and the cold balance."""
        with store.read() as s:
            policy = cache.get(s).policy
            positions = [
                (hot_position(s, symbol), cold_balance(s, symbol), rule.decimals)
                for symbol, rule in sorted(policy.assets.items())
            ]
        return Balances(
            assets=[
                AssetBalance(
                    asset=p.asset,
                    hot=format_amount(p.balance, d),
                    hot_block=p.block,
                    reserved=format_amount(p.reserved, d),
                    free=format_amount(p.free, d),
                    cold=None if cold is None else format_amount(cold, d),
                )
                for p, cold, d in positions
            ]
        )

    @app.post(
        "/v1/withdrawals/{withdrawal_id}/cancel", tags=["withdrawals"], response_model=WithdrawalOut, responses=ERRORS
    )
    def cancel_withdrawal(withdrawal_id: str, who: Annotated[Principal, signed("cancel")]) -> WithdrawalOut:
        return withdrawal_out(service.cancel(who, withdrawal_id))

    return app


class RequestLog:
    """Every request gets an id (the client's X-Request-Id, or a new one) that each log line of it carries
    and the response echoes; one access line per request says who asked what and how it ended, never its
    body (an endpoint may add fields through ``request.state.log``: intake names the withdrawal it made and
    its state). Plain ASGI, so it adds no task or stream of its own to each request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, database: outage.Loop) -> None:
        self.app, self.metrics, self.database = app, metrics, database

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        rid = logs.accept_id(headers.get("x-request-id"))
        token = logs.REQUEST_ID.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        scope.setdefault("state", {})
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            method, path = scope["method"], scope["path"]
            if method == "POST" and path == "/v1/withdrawals":
                self.metrics.observe_intake(status, elapsed)
            if status in (200, 201) and path.startswith("/v1/"):  # a signed request's nonce was recorded
                self.database.succeeded()
            access.info(
                "%s %s %s",
                method,
                path,
                status,
                extra={
                    "status": status,
                    "ms": round(1000 * elapsed, 1),
                    "api_key": headers.get("x-custody-key"),
                    **scope["state"].get("log", {}),
                },
            )
            logs.REQUEST_ID.reset(token)


def parse_withdrawal(raw: bytes) -> NewWithdrawal:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedJson("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedJson("the body must be a JSON object")
    try:
        parsed = WithdrawalIn.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        error = {"extra_forbidden": UnknownField, "missing": MissingField}.get(first["type"], InvalidField)
        raise error(f"{field}: {first['msg']}") from None
    return NewWithdrawal(parsed.asset, parsed.amount, parsed.destination, parsed.client_reference)
