"""The console answers only to its own names: a defence against DNS rebinding.

A console bound to 127.0.0.1 is out of a remote site's reach, unless that site's name starts resolving to
127.0.0.1: the operator's browser then treats the console as the attacker's own origin, and the attacker's page
can read it (the session cookie is not sent there, but a sign-in link or anything without a session is). Such
a request still says the attacker's name in its ``Host`` header, so it is refused (``host_refused``, 400)
before any route runs, whatever cookie it carries.

Allowed: the loopback names (``localhost``, ``127.0.0.1``, ``::1``: a rebinding site cannot make a browser
send them), the address the console is bound to unless it is a wildcard (``0.0.0.0``, ``::``), and whatever the
operator names with ``--allowed-host`` (the name a TLS proxy in front is reached by). The port is not compared:
a rebinding page reaches the console on the console's own port anyway, and a proxy's port is not ours to know.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from custody.console.errors import HostRefused
from custody.console.render import page

LOOPBACK = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104  (names to leave out, not a bind)


def allowed_hosts(bind: str = "127.0.0.1", extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The names the console answers to, lower-case, without brackets or ports."""
    names = [*LOOPBACK, *([] if bind in WILDCARDS else [bind]), *extra]
    return tuple(dict.fromkeys(n for n in (hostname(x) for x in names) if n))


def hostname(header: str) -> str | None:
    """The host of a ``Host`` header (``name``, ``name:port``, ``[v6]`` or ``[v6]:port``), lower-case; None
    when it is not one."""
    header = header.strip().lower()
    if header.startswith("["):
        host, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    elif header.count(":") > 1:  # a bare IPv6 address (``--allowed-host ::1``)
        host = header
    else:
        host, colon, port = header.partition(":")
        if colon and not port.isdigit():
            return None
    return host or None


class HostCheck:
    """Refuses, with the console's error page, any HTTP request whose Host is not one of ``allowed``."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers", []))
            host = hostname(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed:
                refused = HostRefused(
                    "this console answers only to its own host names: open it at the address `custody console "
                    "login` printed, or start it with --allowed-host NAME for the name you use"
                )
                response = page("error.html", 400, code=refused.code, message=str(refused))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
