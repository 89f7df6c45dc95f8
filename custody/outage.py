"""Quiet outages: a loop that loses its database or its node says so once, backs off, and says when it is back.

Every background loop (hot worker, serve's scheduler, webhook dispatcher) wraps one pass in ``Loop.run_pass``.
A pass that fails with an outage (the database or the node unreachable) logs one line when the outage begins,
"database unreachable since …", nothing while it lasts, and one line when a pass succeeds again, "database
reachable again after 18 s"; between failed passes the loop waits with exponential backoff (capped). Any other
exception is a bug or a bad row: logged with its traceback, also backed off, so one bad row cannot spin a loop.

The API, which has no loop, reports what its requests meet through ``failed`` and ``succeeded``: one line
when requests start failing on the database, one when one goes through again.

The state of each loop's dependency is kept in a process-wide registry so ``/metrics`` can expose it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from custody.errors import NodeUnavailable
from custody.store.db import unavailable

DATABASE, NODE = "database", "node"


def kind_of(exc: BaseException) -> str | None:
    """Which dependency an exception says is unreachable, or None if it is not an outage."""
    if isinstance(exc, NodeUnavailable):
        return NODE
    if unavailable(exc):  # cut or refused connections, and the server's lock/statement/idle timeouts
        return DATABASE
    return None


@dataclass
class _State:
    since: float | None = None  # wall-clock time the outage began, None while reachable


@dataclass
class Registry:
    """Which dependencies each loop currently cannot reach (for metrics and status)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    down: dict[tuple[str, str], float] = field(default_factory=dict)  # (loop, dependency) -> since

    def snapshot(self) -> dict[tuple[str, str], float]:
        with self.lock:
            return dict(self.down)


REGISTRY = Registry()


class Loop:
    """One background loop's pacing and its outage log lines."""

    def __init__(
        self, name: str, log: logging.Logger, *, idle: float = 0.5, cap: float = 10.0, registry: Registry = REGISTRY
    ) -> None:
        self.name, self.log, self.idle, self.cap, self.registry = name, log, idle, cap, registry
        self.backoff = idle
        self.states: dict[str, _State] = {DATABASE: _State(), NODE: _State()}

    def run_pass(self, work: Callable[[], bool]) -> float:
        """Run one pass; return how long to wait before the next (0 when the pass did work)."""
        try:
            busy = work()
        except Exception as exc:
            kind = kind_of(exc)
            if kind is None:
                self.log.exception("%s pass failed; retrying in %.1f s", self.name, self.backoff)
            else:
                self._down(kind, exc)
            wait, self.backoff = self.backoff, min(self.backoff * 2, self.cap)
            return wait
        self._up()
        self.backoff = self.idle
        return 0.0 if busy else self.idle

    def failed(self, exc: BaseException, then: str = "backing off") -> bool:
        """An outage met outside ``run_pass`` (by an API request): its first line, as a pass would log it,
        ending with what happens meanwhile. False if ``exc`` is not an outage."""
        kind = kind_of(exc)
        if kind is not None:
            self._down(kind, exc, then)
        return kind is not None

    def succeeded(self) -> None:
        """Work that needed the dependencies went through: any outage is over (with its line)."""
        if any(state.since is not None for state in self.states.values()):
            self._up()

    def forever(self, work: Callable[[], bool], stop: threading.Event) -> None:
        while not stop.is_set():
            wait = self.run_pass(work)
            if wait:
                stop.wait(wait)

    def _down(self, kind: str, exc: BaseException, then: str = "backing off") -> None:
        state = self.states[kind]
        if state.since is not None:
            return
        state.since = time.time()
        with self.registry.lock:
            self.registry.down[(self.name, kind)] = state.since
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.since))
        self.log.warning("%s: %s unreachable since %s (%s); %s", self.name, kind, stamp, _short(exc), then)

    def _up(self) -> None:
        for kind, state in self.states.items():
            if state.since is None:
                continue
            self.log.warning("%s: %s reachable again after %.0f s", self.name, kind, time.time() - state.since)
            state.since = None
            with self.registry.lock:
                self.registry.down.pop((self.name, kind), None)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text[:160]}"
