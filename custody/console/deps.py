"""What every page needs: the console's settings and services, and the signed-in operator (a dependency that
raises ``NotSignedIn``, which the app turns into a redirect to the sign-in page)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from fastapi import Request

from custody.chain.ethereum import EthereumNode
from custody.clock import Clock
from custody.console.auth import COOKIE, SESSION_TTL, TOKEN_TTL, Signed, session_for
from custody.console.hosts import allowed_hosts
from custody.ledger.policy import PolicyCache
from custody.ops.figures import node_answers
from custody.store.db import Store


@dataclass(frozen=True)
class ConsoleSettings:
    token_ttl: int = TOKEN_TTL
    session_ttl: int = SESSION_TTL
    secure_cookie: bool | None = None  # None: Secure when the request came over https
    webhook_urls: tuple[str, ...] = ()
    rpc_url: str = ""  # the Ethereum node, for the overview's reachability line; empty: not shown
    chain_id: int = 31337
    explorer_tx: str = ""  # a block explorer's transaction URL with {} for the hash; empty: hashes are not links
    # the Host names the console answers to (``custody.console.hosts``); by default loopback only
    allowed_hosts: tuple[str, ...] = field(default_factory=allowed_hosts)


@dataclass
class NodeCheck:
    """Whether the node answers, asked at most every ``every`` seconds (an overview refresh must not wait on a
    dead node each time), with a short timeout."""

    rpc_url: str
    chain_id: int
    every: float = 15.0
    _last: tuple[float, bool] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answers(self) -> bool | None:
        if not self.rpc_url:
            return None
        with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < self.every:
                return self._last[1]
        ok = node_answers(EthereumNode(self.rpc_url, self.chain_id, timeout=2.0))
        with self._lock:
            self._last = (time.monotonic(), ok)
        return ok


@dataclass
class Services:
    store: Store
    clock: Clock
    settings: ConsoleSettings
    policies: PolicyCache
    node: NodeCheck


def services(request: Request) -> Services:
    found: Services = request.app.state.console
    return found


def signed_in(request: Request) -> Signed:
    svc = services(request)
    return session_for(svc.store, svc.policies, request.cookies.get(COOKIE), svc.clock.now())
