"""The console's FastAPI application: a separate app on its own port (`custody console serve`), never mounted
in the withdrawal API. Its pages are rendered on the server; nothing is loaded from another host and no script
runs (the queues refresh themselves with a <meta refresh>).

Every response carries the security headers (``HEADERS``: a Content-Security-Policy that allows only this
origin's stylesheet and no script at all, no framing, no sniffing, no referrer) and, except the stylesheet,
``Cache-Control: no-store``. A request whose Host is not one of the console's names is refused before any
route runs (``custody.console.hosts``, against DNS rebinding). A page without a session redirects to /signin; a
console error becomes a page with its code and a status (``STATUS``), never a traceback.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from custody.clock import Clock
from custody.console import auditlog, cold, overview, policy, reserves, signin, withdrawals
from custody.console.deps import ConsoleSettings, NodeCheck, Services
from custody.console.errors import CsrfRefused, NotSignedIn
from custody.console.hosts import HostCheck
from custody.console.render import STATIC, page
from custody.errors import DaemonError, Forbidden, InvalidRequest, NotFound, Unauthorized
from custody.ledger.policy import PolicyCache
from custody.store.db import Store

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
STATUS = ((NotFound, 404), (CsrfRefused, 403), (Forbidden, 403), (Unauthorized, 403), (InvalidRequest, 400))


class SecurityHeaders:
    """Adds ``HEADERS`` to every response, and ``no-store`` to all but the static stylesheet."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                headers += HEADERS
                headers.append((b"cache-control", b"no-cache" if static else b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def status_of(exc: DaemonError) -> int:
    return next((status for kind, status in STATUS if isinstance(exc, kind)), 500)


def create_console_app(store: Store, clock: Clock, settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    app = FastAPI(title="custody console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = Services(store, clock, settings, PolicyCache(), NodeCheck(settings.rpc_url, settings.chain_id))

    @app.exception_handler(NotSignedIn)
    async def to_signin(request: Request, exc: NotSignedIn) -> Response:
        return RedirectResponse("/signin", status_code=303)

    @app.exception_handler(DaemonError)
    async def error_page(request: Request, exc: DaemonError) -> Response:
        return page("error.html", status_of(exc), code=exc.code, message=str(exc))

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        return page("error.html", 404, code="not_found", message="there is no such page")

    for module in (signin, overview, withdrawals, cold, policy, auditlog, reserves):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(HostCheck, allowed=settings.allowed_hosts)  # inside SecurityHeaders: refusals get them too
    app.add_middleware(SecurityHeaders)
    return app
