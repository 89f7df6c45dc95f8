"""Errors are translated once, here, into problem details with a stable code; their statuses come from
``custody.api.problems``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from custody import outage
from custody.api.problems import DATABASE_UNAVAILABLE, HTTP_CODES, HTTP_ERROR, status_of, status_of_code
from custody.errors import InvalidField, RateLimited
from custody.store.db import unavailable
from policies.errors import CustodyError


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {
        "type": f"https://custody.invalid/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "code": code,
        "detail": detail,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def install_handlers(app: FastAPI, database: outage.Loop) -> None:
    """The app's exception handlers; ``database`` logs once per outage that requests meet."""

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
        status = status_of_code(DATABASE_UNAVAILABLE)
        return problem(status, DATABASE_UNAVAILABLE, "the database is unavailable; retry", {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "header", "path"))
        error = InvalidField(f"{where}: {first.get('msg', 'invalid')}")  # a query or header FastAPI refused
        return problem(status_of(error), error.code, error.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, HTTP_ERROR)
        return problem(exc.status_code, code, str(exc.detail))
