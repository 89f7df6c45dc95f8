"""The hold rules: when a customer's withdrawal that the policy allows waits for two operators instead.

Checked by ``policies.evaluate`` only for a request with a customer, only when no rule failed, and not once
two operators have approved it (``Context.approved``). Each rule that is on and applies leaves one reason,
``passed=False`` when it fires (a withdrawal is held when any fired):

    hold:first_payout        the customer was never paid to this destination (``Context.paid_before`` is
                             false); not for whitelisted destinations
    hold:median              amount >= median_multiple x the customer's 30-day median of the asset
                             (``Context.median_30d``); passes without history (median None)
    hold:young_entry         an address-book destination whose entry is younger than young_entry:
                             now - added_at < young_entry
    hold:velocity            some window of the customer's limits would reach velocity_share % of its limit:
                             (used + amount) * 100 >= velocity_share * limit
    hold:similar_to_denied   a denied address of the same kind has the same first 4 and last 4 significant
                             characters (case-insensitive) and is not the destination itself: the hex digits
                             after 0x; for bech32 the data after the prefix and witness version ("bc1q"),
                             which every such address shares; for base58 everything after the version digit
"""

from __future__ import annotations

from collections.abc import Mapping

from policies.decision import Context, Destination, Quantity, Reason, Request, period_name
from policies.loader import format_period
from policies.model import AssetRule, HoldRules, Limits, Policy


def check_holds(
    reasons: list[Reason],
    policy: Policy,
    request: Request,
    customer: str,
    kind: Destination,
    limits: Limits | None,
    context: Context,
) -> bool:
    """Add one reason per hold rule that is on and applies; True if any fired. Nothing when approved."""
    h = policy.holds
    if h == _NO_HOLDS:
        return False
    if context.approved:
        reasons.append(_APPROVED)
        return False
    add = reasons.append
    rule = policy.assets[request.asset]
    amount, dest = request.amount, request.destination
    quantity = Quantity(amount, rule.decimals, rule.symbol)
    start = len(reasons)
    if h.first_payout and kind != Destination.WHITELIST:
        if context.paid_before:
            add(Reason("hold:first_payout", True, "customer {!r} was paid to {} before", (customer, dest)))
        else:
            add(
                Reason(
                    "hold:first_payout",
                    False,
                    "first payout to {} for customer {!r}: held for review",
                    (dest, customer),
                )
            )
    if h.median_multiple is not None:
        median = context.median_30d
        if median is None:
            add(
                Reason(
                    "hold:median",
                    True,
                    "customer {!r} has no payouts of {} in the last 30 days to compare with",
                    (customer, rule.symbol),
                )
            )
        else:
            high = amount >= h.median_multiple * median
            add(
                Reason(
                    "hold:median",
                    not high,
                    "{} is {} {} times customer {!r}'s 30-day median of {}",
                    (
                        quantity,
                        "at least" if high else "less than",
                        h.median_multiple,
                        customer,
                        Quantity(median, rule.decimals, rule.symbol),
                    ),
                )
            )
    if h.young_entry is not None and kind == Destination.ADDRESS_BOOK and context.book is not None:
        age = context.now - context.book.added_at
        young = age < h.young_entry
        add(
            Reason(
                "hold:young_entry",
                not young,
                "the address-book entry was added {} ago, {} {}",
                (format_period(max(age, 0)), "less than" if young else "at least", period_name(h.young_entry)),
            )
        )
    if h.velocity_share is not None and limits is not None and limits.windows:
        add(_velocity(h.velocity_share, customer, limits, context.customer_totals, amount, rule))
    if h.similar_to_denied:
        twin = _similar_denied(policy, dest)
        if twin is None:
            add(_NOT_SIMILAR)
        else:
            add(
                Reason(
                    "hold:similar_to_denied",
                    False,
                    "destination {} looks like denied address {} (same first and last 4 hex digits)",
                    (dest, twin),
                )
            )
    return any(not r.passed for r in reasons[start:])


def _velocity(
    share: int, customer: str, limits: Limits, totals: Mapping[int, int], amount: int, rule: AssetRule
) -> Reason:
    """Fired by the first window (shortest first) that this payout would fill to ``share`` % of its limit:
    (used + amount) * 100 >= share * limit."""
    for w in limits.windows:
        after = totals.get(w.seconds, 0) + amount
        if after * 100 >= share * w.limit:
            return Reason(
                "hold:velocity",
                False,
                "customer {!r}'s withdrawals over {} would total {}, at least {}% of the limit of {}",
                (
                    customer,
                    period_name(w.seconds),
                    Quantity(after, rule.decimals, rule.symbol),
                    share,
                    Quantity(w.limit, rule.decimals, rule.symbol),
                ),
            )
    return Reason("hold:velocity", True, "customer {!r}'s withdrawals stay below {}% of every limit", (customer, share))


def _similar_denied(policy: Policy, destination: str) -> str | None:
    """A denied address with the same first and last 4 significant characters as ``destination``
    (case-insensitive) that is not ``destination`` itself, or None."""
    low = destination.lower()
    kind, body = _significant(low)
    head, tail = body[:4], body[-4:]
    for address in policy.deny:
        other = address.lower()
        other_kind, other_body = _significant(other)
        if other_kind == kind and other_body[:4] == head and other_body[-4:] == tail and other != low:
            return address
    return None


def _significant(address: str) -> tuple[str, str]:
    """What an address always starts with (which a look-alike shares for free), and the rest."""
    if address.startswith("0x"):
        return "0x", address[2:]
    prefix, separator, data = address.rpartition("1")
    if separator and prefix in ("bc", "tb", "bcrt"):  # bech32: the prefix, then the witness version
        return address[: len(prefix) + 2], data[1:]
    return address[:1], address[1:]  # base58: the first digit follows from the version byte


_NO_HOLDS = HoldRules()
_APPROVED = Reason("approved", True, "two operators approved it: the hold rules are not checked again")
_NOT_SIMILAR = Reason(
    "hold:similar_to_denied", True, "destination does not look like a denied address (first and last 4 hex digits)"
)
