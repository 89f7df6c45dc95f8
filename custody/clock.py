"""The clock, behind an interface so services never read the time themselves."""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> int: ...


class SystemClock:
    def now(self) -> int:
        return int(time.time())


class FixedClock:
    """A clock the tests move by hand."""

    def __init__(self, now: int) -> None:
        self.value = now

    def now(self) -> int:
        return self.value

    def advance(self, seconds: int) -> None:
        self.value += seconds


def iso(ts: int | None) -> str | None:
    """Unix seconds as the API and webhooks write times: ISO 8601 in UTC, e.g. ``2026-12-06T19:45:10Z``."""
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")
