"""``evaluate(request, context) -> Decision``: may this withdrawal go, when, and from which wallet.

Pure: the caller passes the policy, the time and the rolling totals in. Every rule that was checked
leaves a ``Reason``; the outcome is ``reject`` if any failed, else ``hold`` if a hold rule fired, else
``delay`` if a delay tier applies, else ``allow``. Rules are checked in this order, and all of them are
checked even after one fails so the operator sees every problem at once:

    asset            the asset is declared and enabled
    destination      the destination is an address of the asset's chain (and network); only a failure is
                     written. Bitcoin destinations are compared in their canonical form (bech32 lowercase)
    deny_list        the destination is not denied (denial beats any whitelist, address-book or unlisted rule)
    whitelist        the destination is whitelisted for this asset and its entry is active
    max_per_transfer the amount is at most the asset's per-transfer maximum
    window:<p>       the asset's total over the last <p>, this amount included, is within its limit
    key_window:<p>   the same for the API key's own limits
    delay            the largest delay tier whose threshold the amount reaches
    route            hot if the amount is within the hot limit and the hot wallet's free balance; else cold,
                     except a payout to an address-book or unlisted destination at or below the hot limit,
                     which is refused while the hot wallet's free balance is short (signers never pay those)

A withdrawal for a customer (``Request.customer``) may also go where the whitelist does not reach; the one
destination rule is then the first of: ``whitelist`` (an active entry), ``address_book`` (the customer's
entry: usable iff now >= active_at, else refused until then), ``address_book`` (refused: no entry and the
customer is in address-book-only mode), ``unlisted`` (no entry and the asset allows unlisted payouts), else
the whitelist's refusal. The customer's limits and, for an unlisted destination, the asset's unlisted limits
follow the API key's windows:

    customer_max, customer_window:<p>   policy.customers.limits_for(customer, asset), this customer's totals
    unlisted_max, unlisted_window:<p>   the asset's ``unlisted`` limits, over every unlisted payout of it

and, only when nothing failed and two operators have not already approved it (``Context.approved``), the
hold rules after ``route``: ``hold:first_payout``, ``hold:median``, ``hold:young_entry``, ``hold:velocity``,
``hold:similar_to_denied``. A fired hold is a reason that did not pass; any fired hold makes the outcome
``hold`` (the delay, if any, applies once approval re-runs the policy). Without a customer none of this
applies: the decision is exactly the whitelist's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace

from policies.addresses import destination
from policies.chains import chain_name
from policies.decision import (
    BookEntry,
    Context,
    Decision,
    Destination,
    Instant,
    Outcome,
    Quantity,
    Reason,
    Request,
    Route,
    period_name,
)
from policies.errors import AddressError
from policies.holds import check_holds
from policies.model import AssetRule, Limits, Policy, WhitelistEntry, Window

__all__ = ["STATIC_RULES", "BookEntry", "Context", "Decision", "Destination", "Instant", "Outcome", "Quantity"]
__all__ += ["Reason", "Request", "Route", "evaluate", "static_failures", "window_totals"]
_RULE_NAMES: dict[tuple[str, int], str] = {}


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
    canonical, problem = _canonical(rule, dest)
    if canonical is None:
        add(Reason("destination", False, "destination is not a {} address: {}", (chain_name(rule), problem)))
        return Decision(Outcome.REJECT, None, None, tuple(reasons))
    if canonical != dest:  # every rule below, and the holds, see the one form the policy's addresses are in
        request, dest = replace(request, destination=canonical), canonical

    denied = policy.deny.get(dest)
    ok = denied is None
    if denied is not None:
        add(Reason("deny_list", False, "destination {} is on the deny list: {}", (dest, denied.note or "no note")))
    else:
        add(_NOT_DENIED)

    customer = request.customer
    entry = policy.whitelist.get(dest)
    kind: Destination | None = None
    if entry is not None and asset in entry.assets and entry.active_from <= now:
        kind = Destination.WHITELIST
        add(Reason("whitelist", True, "destination is whitelisted as {!r}", (entry.label,)))
    elif customer is None:
        ok = False
        add(_not_whitelisted(entry, dest, asset))
    else:
        kind = _customer_destination(reasons, rule, entry, request, customer, context)
        ok = ok and kind is not None

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
    limits = None if customer is None else policy.customers.limits_for(customer, asset)
    if customer is not None and limits is not None:
        ok = _limits(reasons, "customer", customer, limits, context.customer_totals, amount, rule) and ok
    if kind == Destination.UNLISTED and rule.unlisted is not None:
        ok = _limits(reasons, "unlisted", asset, rule.unlisted, context.unlisted_totals, amount, rule) and ok

    delay = 0
    for tier in rule.delay_tiers:  # sorted by threshold: the last one reached wins
        if amount >= tier.at_least:
            delay = tier.delay
    if delay:
        add(
            Reason(
                "delay",
                True,
                "transfers of {} or more wait {}",
                (Quantity(amount, decimals, asset), period_name(delay)),
            )
        )

    if amount <= rule.hot_limit and amount <= context.hot_free_balance:
        route: Route | None = Route.HOT
        add(
            Reason(
                "route",
                True,
                "paid from the hot wallet: within the hot limit of {} and its free balance",
                (Quantity(rule.hot_limit, decimals, asset),),
            )
        )
    elif amount <= rule.hot_limit and kind in _HOT_ONLY:
        # An offline signer cannot see what the hot wallet paid, so it refuses customer payouts at or below the
        # hot limit (a host could list one already paid hot): they are paid hot or not at all.
        route = None
        ok = False
        add(
            Reason(
                "route",
                False,
                "a payout of {} to a customer's own address is paid from the hot wallet only (at or below its "
                "limit of {}), whose free balance is short now: request it again once the hot wallet is topped up",
                (Quantity(amount, decimals, asset), Quantity(rule.hot_limit, decimals, asset)),
            )
        )
    else:
        route = Route.COLD
        add(_COLD_OVER_LIMIT if amount > rule.hot_limit else _COLD_NO_BALANCE)

    if not ok:
        return Decision(Outcome.REJECT, None, None, tuple(reasons))
    if (
        customer is not None
        and kind is not None
        and check_holds(reasons, policy, request, customer, kind, limits, context)
    ):
        return Decision(Outcome.HOLD, route, None, tuple(reasons), kind)
    return Decision(Outcome.DELAY if delay else Outcome.ALLOW, route, now + delay, tuple(reasons), kind)


def _not_whitelisted(entry: WhitelistEntry | None, dest: str, asset: str) -> Reason:
    if entry is None:
        return Reason("whitelist", False, "destination {} is not on the whitelist", (dest,))
    if asset not in entry.assets:
        return Reason("whitelist", False, "whitelist entry {!r} does not allow {}", (entry.label, asset))
    return Reason(
        "whitelist", False, "whitelist entry {!r} is not active until {} (unix time)", (entry.label, entry.active_from)
    )


def _customer_destination(
    reasons: list[Reason],
    rule: AssetRule,
    entry: WhitelistEntry | None,
    request: Request,
    customer: str,
    context: Context,
) -> Destination | None:
    """The destination rule for a customer's payout that no active whitelist entry covers: one reason, and the
    kind of destination, or None if it may not be paid."""
    dest, book = request.destination, context.book
    if book is not None:
        if context.now >= book.active_at:
            reasons.append(
                Reason(
                    "address_book",
                    True,
                    "destination is in customer {!r}'s address book, usable since {}",
                    (customer, Instant(book.active_at)),
                )
            )
            return Destination.ADDRESS_BOOK
        reasons.append(
            Reason(
                "address_book",
                False,
                "customer {!r}'s address-book entry for {} is locked until {}",
                (customer, dest, Instant(book.active_at)),
            )
        )
        return None
    if context.book_only:
        reasons.append(
            Reason(
                "address_book",
                False,
                "customer {!r} withdraws only to its address book, and {} is not in it",
                (customer, dest),
            )
        )
        return None
    if rule.unlisted is not None:
        reasons.append(
            Reason(
                "unlisted",
                True,
                "destination {} is neither whitelisted nor in the address book: an unlisted payout of {}",
                (dest, rule.symbol),
            )
        )
        return Destination.UNLISTED
    reasons.append(_not_whitelisted(entry, dest, rule.symbol))
    return None


def _limits(
    reasons: list[Reason],
    prefix: str,
    whose: str,
    limits: Limits,
    totals: Mapping[int, int],
    amount: int,
    rule: AssetRule,
) -> bool:
    """``<prefix>_max`` and ``<prefix>_window:<p>``: a customer's limits, or the asset's unlisted ones."""
    ok = True
    if limits.max_per_transfer is not None:
        ok = amount <= limits.max_per_transfer
        reasons.append(
            Reason(
                f"{prefix}_max",
                ok,
                _MAX_TEMPLATES[prefix],
                (
                    Quantity(amount, rule.decimals, rule.symbol),
                    "within" if ok else "over",
                    whose,
                    Quantity(limits.max_per_transfer, rule.decimals, rule.symbol),
                ),
            )
        )
    within = _windows(reasons, f"{prefix}_window", whose, limits.windows, totals, amount, rule.decimals, rule.symbol)
    return within and ok


_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")


def _canonical(rule: AssetRule, dest: str) -> tuple[str | None, str]:
    """The destination in its chain's canonical form, or None and why it is no address of the asset's chain.

    An Ethereum destination is only checked for its shape (callers check the EIP-55 checksum, and the keccak
    would dominate the cost of a decision); a Bitcoin one is reduced to its canonical form.
    """
    if rule.chain == "ethereum":
        if isinstance(dest, str) and _HEX40.fullmatch(dest):
            return dest, ""
        return None, f"{str(dest)[:60]!r} is not 0x and 40 hex digits"
    try:
        return destination(rule.chain, rule.network, dest), ""
    except AddressError as exc:
        return None, exc.message


_NOT_DENIED = Reason("deny_list", True, "destination is not on the deny list")
_MAX_TEMPLATES = {
    "customer": "{} is {} customer {!r}'s per-transfer maximum of {}",
    "unlisted": "{} is {} the per-transfer maximum for unlisted {} payouts, {}",
}
_HOT_ONLY = (Destination.ADDRESS_BOOK, Destination.UNLISTED)
_COLD_OVER_LIMIT = Reason("route", True, "paid from the cold wallet: above the hot limit")
_COLD_NO_BALANCE = Reason("route", True, "paid from the cold wallet: more than the hot wallet's free balance")
_WINDOW_TEMPLATES = {
    "window": "{} withdrawals over {} would total {}, {} the limit of {}",
    "key_window": "API key {!r}'s withdrawals over {} would total {}, {} the limit of {}",
    "customer_window": "customer {!r}'s withdrawals over {} would total {}, {} the limit of {}",
    "unlisted_window": "unlisted payouts of {} over {} would total {}, {} the limit of {}",
}


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
            name = _RULE_NAMES[prefix, w.seconds] = f"{prefix}:{period_name(w.seconds)}"
        all_within = all_within and within
        reasons.append(
            Reason(
                name,
                within,
                template,
                (
                    whose,
                    period_name(w.seconds),
                    Quantity(after, decimals, asset),
                    "within" if within else "over",
                    Quantity(w.limit, decimals, asset),
                ),
            )
        )
    return all_within


# The rules that depend on nothing but the policy, the transfer and the time: what an offline signer can
# re-check for each transfer of a batch without the daemon's history (velocity needs that history).
STATIC_RULES = frozenset({"asset", "destination", "deny_list", "whitelist", "max_per_transfer"})


def static_failures(policy: Policy, asset: str, amount: int, destination: str, now: int) -> tuple[Reason, ...]:
    """The static rules this transfer breaks at ``now``; empty if it may go. Same sentences as ``evaluate``."""
    decision = evaluate(policy, Request(asset, amount, destination, ""), Context(now))
    return tuple(r for r in decision.reasons if not r.passed and r.rule in STATIC_RULES)
