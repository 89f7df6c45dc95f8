"""What the policy engine decides and what it decides from: requests, contexts, reasons and decisions.

Plain values, built by callers and by ``policies.evaluate``; the rules themselves live there and in
``policies.holds``. ``policies.evaluate`` re-exports every type of this module, so callers may import them from
either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from policies.loader import format_period
from policies.text import when
from policies.units import format_amount


class Outcome(StrEnum):
    """What the policy decided for a withdrawal."""

    ALLOW = "allow"
    DELAY = "delay"
    REJECT = "reject"
    HOLD = "hold"  # waits for two operators (four eyes); approval re-runs the policy with Context.approved


class Route(StrEnum):
    """Which wallet pays a withdrawal."""

    HOT = "hot"
    COLD = "cold"


class Destination(StrEnum):
    """Why a destination may be paid: the rule that let it through."""

    WHITELIST = "whitelist"  # an active treasury whitelist entry for the asset
    ADDRESS_BOOK = "address_book"  # the customer's active address-book entry
    UNLISTED = "unlisted"  # neither, within the asset's unlisted limits


@dataclass(frozen=True, slots=True)
class Request:
    asset: str
    amount: int
    destination: str
    api_key: str
    customer: str | None = None  # the exchange's account id; None: a treasury withdrawal (whitelist only)


@dataclass(frozen=True, slots=True)
class BookEntry:
    """The customer's address-book entry for this asset and destination: added at, usable from."""

    added_at: int
    active_at: int


@dataclass(frozen=True, slots=True)
class Context:
    """What the rules need from the world, gathered by the caller.

    ``asset_totals`` and ``key_totals`` map a window length in seconds to the sum already used in that
    window (this request excluded); compute them with ``window_totals`` so the window edge is the same
    everywhere. ``hot_free_balance`` is the hot wallet's balance minus what queued withdrawals reserve.

    Read only for a request with a customer: ``customer_totals`` (this customer's payouts of the asset) and
    ``unlisted_totals`` (every payout of the asset to an unlisted destination), per window length like the
    others; ``book``, the customer's entry for this asset and destination; ``book_only``, the customer's
    address-book-only mode; ``paid_before``, whether this customer has a payout to this destination that was
    not rejected, cancelled or failed; ``median_30d``, the median amount of the customer's payouts of the asset
    created in the last 30 days (none rejected, cancelled or failed; None without any); ``approved``, two
    operators approved this withdrawal, so the hold rules are not checked.
    """

    now: int
    asset_totals: Mapping[int, int] = field(default_factory=dict)
    key_totals: Mapping[int, int] = field(default_factory=dict)
    hot_free_balance: int = 0
    customer_totals: Mapping[int, int] = field(default_factory=dict)
    unlisted_totals: Mapping[int, int] = field(default_factory=dict)
    book: BookEntry | None = None
    book_only: bool = False
    paid_before: bool = False
    median_30d: int | None = None
    approved: bool = False


class Quantity(NamedTuple):
    """An amount that renders itself in the asset's units only when a sentence is wanted."""

    value: int
    decimals: int
    asset: str

    def __str__(self) -> str:
        return f"{format_amount(self.value, self.decimals)} {self.asset}"


class Instant(NamedTuple):
    """A unix time that renders itself in UTC only when a sentence is wanted."""

    value: int

    def __str__(self) -> str:
        return when(self.value)


class Reason(NamedTuple):
    """One rule's verdict. ``message`` is the human sentence, built on demand from the template."""

    rule: str
    passed: bool
    template: str
    args: tuple[object, ...] = ()

    @property
    def message(self) -> str:
        return self.template.format(*self.args)


class Decision(NamedTuple):
    """``route`` and ``destination`` are None when rejected; ``eligible_at`` is None when rejected or held (a
    held withdrawal's time comes when two operators approve it and the policy is run again)."""

    outcome: Outcome
    route: Route | None
    eligible_at: int | None
    reasons: tuple[Reason, ...]
    destination: Destination | None = None

    @property
    def failed(self) -> tuple[Reason, ...]:
        """Every reason that did not pass, the fired holds included."""
        return tuple(r for r in self.reasons if not r.passed)

    @property
    def holds(self) -> tuple[Reason, ...]:
        """The hold rules that fired."""
        return tuple(r for r in self.reasons if not r.passed and r.rule.startswith("hold:"))


_PERIODS: dict[int, str] = {}


def period_name(seconds: int) -> str:
    """``format_period``, remembered: rules name the same few periods in every decision."""
    name = _PERIODS.get(seconds)
    if name is None:
        name = _PERIODS[seconds] = format_period(seconds)
    return name
