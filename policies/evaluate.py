"""``evaluate(request, context) -> Decision``: may this withdrawal go, when, and from which wallet.

Pure: the caller passes the policy, the time and the rolling totals in. Every rule that was checked
leaves a ``Reason``; the outcome is ``reject`` if any failed, else ``delay`` if a delay tier applies,
else ``allow``. Rules are checked in this order, and all of them are checked even after one fails so the
operator sees every problem at once:

    asset            the asset is declared and enabled
    deny_list        the destination is not denied (denial beats any whitelist entry)
    whitelist        the destination is whitelisted for this asset and its entry is active
    max_per_transfer the amount is at most the asset's per-transfer maximum
    window:<p>       the asset's total over the last <p>, this amount included, is within its limit
    key_window:<p>   the same for the API key's own limits
    delay            the largest delay tier whose threshold the amount reaches
    route            hot if the amount is within the hot limit and the hot wallet's free balance
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from policies.loader import format_period
from policies.model import Policy, Window
from policies.units import format_amount


class Outcome(StrEnum):
    """What the policy decided for a withdrawal."""

    ALLOW = "allow"
    DELAY = "delay"
    REJECT = "reject"


class Route(StrEnum):
    """Which wallet pays a withdrawal."""

    HOT = "hot"
    COLD = "cold"


@dataclass(frozen=True, slots=True)
class Request:
    asset: str
    amount: int
    destination: str
    api_key: str


@dataclass(frozen=True, slots=True)
class Context:
    """What the rules need from the world, gathered by the caller.

    ``asset_totals`` and ``key_totals`` map a window length in seconds to the sum already used in that
    window (this request excluded); compute them with ``window_totals`` so the window edge is the same
    everywhere. ``hot_free_balance`` is the hot wallet's balance minus what queued withdrawals reserve.
    """

    now: int
    asset_totals: Mapping[int, int] = field(default_factory=dict)
    key_totals: Mapping[int, int] = field(default_factory=dict)
    hot_free_balance: int = 0


class Quantity(NamedTuple):
    """An amount that renders itself in the asset's units only when a sentence is wanted."""

    value: int
    decimals: int
    asset: str

    def __str__(self) -> str:
        return f"{format_amount(self.value, self.decimals)} {self.asset}"


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
    outcome: Outcome
    route: Route | None
    eligible_at: int | None
    reasons: tuple[Reason, ...]

    @property
    def failed(self) -> tuple[Reason, ...]:
        return tuple(r for r in self.reasons if not r.passed)


def window_totals(events: Iterable[tuple[int, int]], now: int, periods: Iterable[int]) -> dict[int, int]:
    """Sum ``(time, amount)`` events per window. An event counts in window ``p`` iff ``now - p < time <= now``."""
    spans = list(periods)
    totals = dict.fromkeys(spans, 0)
    for at, amount in events:
        for p in spans:
            if now - p < at <= now:
                totals[p] += amount
    return totals


def evaluate(policy: Policy, request: Request, context: Context) -> Decision:
    reasons: list[Reason] = []
    add = reasons.append
    asset, amount, dest, now = request.asset, request.amount, request.destination, context.now
    rule = policy.assets.get(asset)
    if rule is None or not rule.enabled:
        add(
            Reason(
                "asset", False, "asset {} is {} in the policy", (asset, "not declared" if rule is None else "disabled")
            )
        )
        return Decision(Outcome.REJECT, None, None, tuple(reasons))
    add(Reason("asset", True, "asset {} is enabled", (asset,)))
    decimals = rule.decimals

    denied = policy.deny.get(dest)
    ok = denied is None
    if denied is not None:
        add(Reason("deny_list", False, "destination {} is on the deny list: {}", (dest, denied.note or "no note")))
    else:
        add(_NOT_DENIED)

    entry = policy.whitelist.get(dest)
    ok = ok and entry is not None and asset in entry.assets and entry.active_from <= now
    if entry is None:
        add(Reason("whitelist", False, "destination {} is not on the whitelist", (dest,)))
    elif asset not in entry.assets:
        add(Reason("whitelist", False, "whitelist entry {!r} does not allow {}", (entry.label, asset)))
    elif entry.active_from > now:
        add(
            Reason(
                "whitelist",
                False,
                "whitelist entry {!r} is not active until {} (unix time)",
                (entry.label, entry.active_from),
            )
        )
    else:
        add(Reason("whitelist", True, "destination is whitelisted as {!r}", (entry.label,)))

    passed = amount <= rule.max_per_transfer
    ok = ok and passed
    add(
        Reason(
            "max_per_transfer",
            passed,
            "{} is {} the per-transfer maximum of {}",
            (
                Quantity(amount, decimals, asset),
                "within" if passed else "over",
                Quantity(rule.max_per_transfer, decimals, asset),
            ),
        )
    )

    ok = _windows(reasons, "window", asset, rule.windows, context.asset_totals, amount, decimals, asset) and ok
    key_rule = policy.api_keys.get(request.api_key)
    if key_rule is not None:
        key_windows = key_rule.windows.get(asset, ())
        ok = (
            _windows(reasons, "key_window", request.api_key, key_windows, context.key_totals, amount, decimals, asset)
            and ok
        )

    delay = 0
    for tier in rule.delay_tiers:  # sorted by threshold: the last one reached wins
        if amount >= tier.at_least:
            delay = tier.delay
    if delay:
        add(
            Reason(
                "delay", True, "transfers of {} or more wait {}", (Quantity(amount, decimals, asset), _period(delay))
            )
        )

    if amount <= rule.hot_limit and amount <= context.hot_free_balance:
        route = Route.HOT
        add(
            Reason(
                "route",
                True,
                "paid from the hot wallet: within the hot limit of {} and its free balance",
                (Quantity(rule.hot_limit, decimals, asset),),
            )
        )
    else:
        route = Route.COLD
        add(_COLD_OVER_LIMIT if amount > rule.hot_limit else _COLD_NO_BALANCE)

    if not ok:
        return Decision(Outcome.REJECT, None, None, tuple(reasons))
    return Decision(Outcome.DELAY if delay else Outcome.ALLOW, route, now + delay, tuple(reasons))


_NOT_DENIED = Reason("deny_list", True, "destination is not on the deny list")
_COLD_OVER_LIMIT = Reason("route", True, "paid from the cold wallet: above the hot limit")
_COLD_NO_BALANCE = Reason("route", True, "paid from the cold wallet: more than the hot wallet's free balance")
_WINDOW_TEMPLATES = {
    "window": "{} withdrawals over {} would total {}, {} the limit of {}",
    "key_window": "API key {!r}'s withdrawals over {} would total {}, {} the limit of {}",
}
_PERIODS: dict[int, str] = {}
_RULE_NAMES: dict[tuple[str, int], str] = {}


def _period(seconds: int) -> str:
    name = _PERIODS.get(seconds)
    if name is None:
        name = _PERIODS[seconds] = format_period(seconds)
    return name


def _windows(
    reasons: list[Reason],
    prefix: str,
    whose: str,
    windows: tuple[Window, ...],
    totals: Mapping[int, int],
    amount: int,
    decimals: int,
    asset: str,
) -> bool:
    """Add one reason per window; True if every window holds. ``whose`` is the asset or the API key's name."""
    template = _WINDOW_TEMPLATES[prefix]
    all_within = True
    for w in windows:
        after = totals.get(w.seconds, 0) + amount
        within = after <= w.limit
        name = _RULE_NAMES.get((prefix, w.seconds))
        if name is None:
            name = _RULE_NAMES[prefix, w.seconds] = f"{prefix}:{_period(w.seconds)}"
        all_within = all_within and within
        reasons.append(
            Reason(
                name,
                within,
                template,
                (
                    whose,
                    _period(w.seconds),
                    Quantity(after, decimals, asset),
                    "within" if within else "over",
                    Quantity(w.limit, decimals, asset),
                ),
            )
        )
    return all_within


# The rules that depend on nothing but the policy, the transfer and the time: what an offline signer can
# re-check for each transfer of a batch without the daemon's history (velocity needs that history).
STATIC_RULES = frozenset({"asset", "deny_list", "whitelist", "max_per_transfer"})


def static_failures(policy: Policy, asset: str, amount: int, destination: str, now: int) -> tuple[Reason, ...]:
    """The static rules this transfer breaks at ``now``; empty if it may go. Same sentences as ``evaluate``."""
    decision = evaluate(policy, Request(asset, amount, destination, ""), Context(now))
    return tuple(r for r in decision.reasons if not r.passed and r.rule in STATIC_RULES)
