"""The request log: every request's id, the client's address, and its one access line on the ``custody.api``
logger."""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from custody import logs, outage
from custody.intake.sources import client_address, parse_networks
from custody.ops.metrics import Metrics

access = logging.getLogger("custody.api")


class RequestLog:
    """Every request gets an id (the client's X-Request-Id, or a new one) that each log line of it carries
    and the response echoes; one access line per request says who asked what and how it ended, never its
    body (an endpoint may add fields through ``request.state.log``: intake names the withdrawal it made and
    its state). It also finds the client's address once, for the access line and for the policy's per-key
    source networks (``custody.api.deps.checked``): the direct peer, or, when the peer is one of the
    ``trusted`` proxies (``[api] trusted_proxies``), the rightmost address of X-Forwarded-For that is not a
    trusted proxy (``custody.intake.sources.client_address``). Plain ASGI, so it adds no task or stream of its
    own to each request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, database: outage.Loop, trusted: tuple[str, ...] = ()) -> None:
        self.app, self.metrics, self.database = app, metrics, database
        self.trusted = parse_networks(trusted)

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
        peer = scope.get("client")
        forwarded = headers.getlist("x-forwarded-for") if self.trusted else []
        client = client_address(peer[0] if peer else None, forwarded, self.trusted)
        scope["state"]["client"] = client
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
                    "client": None if client is None else str(client),
                    **scope["state"].get("log", {}),
                },
            )
            logs.REQUEST_ID.reset(token)
