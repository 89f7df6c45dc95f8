"""The pure engine on customer payouts (issue 16): the three kinds of destination, customer and unlisted limits,
and the hold rules, each at its boundary: exactly at it and one unit (one second, one base unit) short or over."""

from __future__ import annotations

from dataclasses import replace

import pytest

from policies.evaluate import (
    BookEntry,
    Context,
    Decision,
    Destination,
    Outcome,
    Request,
    Route,
    evaluate,
)
from policies.model import HoldRules, Policy
from policies.text import when
from tests.policies.helpers import (
    BOOKED,
    CUSTOMER,
    DENIED,
    ETH,
    GOOD,
    LATER,
    LOOKALIKE,
    NEAR_MISS,
    NOW,
    STRANGER,
    VIP,
    payout_policy,
    policy,
)

P = payout_policy()
DAY = 86400
ACTIVE = BookEntry(added_at=NOW - 30 * DAY, active_at=NOW - 29 * DAY)  # an old, usable entry


def decide(
    amount: int,
    destination: str = STRANGER,
    *,
    customer: str | None = CUSTOMER,
    p: Policy = P,
    now: int = NOW,
    **ctx: object,
) -> Decision:
    ctx.setdefault("hot_free_balance", 1000 * ETH)
    return evaluate(p, Request("ETH", amount, destination, "backend", customer), Context(now=now, **ctx))  # type: ignore[arg-type]


def failed(d: Decision) -> list[str]:
    return [r.rule for r in d.failed]


def rules(d: Decision) -> list[str]:
    return [r.rule for r in d.reasons]


# -- the destination -------------------------------------------------------------------------------------------
def test_an_address_book_entry_is_usable_exactly_at_active_at_and_not_one_second_before():
    entry = BookEntry(added_at=NOW - DAY, active_at=NOW)
    d = decide(ETH, BOOKED, book=entry)
    assert d.outcome == Outcome.ALLOW and d.destination == Destination.ADDRESS_BOOK and d.eligible_at == NOW
    assert d.reasons[2].rule == "address_book" and d.reasons[2].passed
    assert decide(ETH, BOOKED, now=NOW + 1, book=entry).destination == Destination.ADDRESS_BOOK
    locked = decide(ETH, BOOKED, now=NOW - 1, book=entry)
    assert locked.outcome == Outcome.REJECT and failed(locked) == ["address_book"] and locked.destination is None
    assert locked.failed[0].message == (
        f"customer 'cust-1''s address-book entry for {BOOKED} is locked until {when(NOW)}"
    )


def test_a_locked_entry_is_refused_even_where_unlisted_payouts_are_allowed():
    d = decide(ETH, BOOKED, book=BookEntry(NOW, NOW + DAY))
    assert failed(d) == ["address_book"] and "unlisted" not in rules(d)


def test_unlisted_payouts_are_off_by_default_and_refused_with_the_whitelist_reason():
    closed = payout_policy(assets=policy().assets)  # ETH without `unlisted`
    with_customer = decide(ETH, STRANGER, p=closed)
    without = decide(ETH, STRANGER, p=closed, customer=None)
    assert with_customer.outcome == without.outcome == Outcome.REJECT
    assert failed(with_customer) == ["whitelist"]
    assert (
        with_customer.failed[0].message
        == without.failed[0].message
        == (f"destination {STRANGER} is not on the whitelist")
    )


def test_unlisted_max_at_the_limit_and_one_unit_over():
    d = decide(2 * ETH, STRANGER)
    assert d.outcome == Outcome.ALLOW and d.destination == Destination.UNLISTED
    assert [r.rule for r in d.reasons if r.rule.startswith("unlisted")] == [
        "unlisted",
        "unlisted_max",
        "unlisted_window:1d",
    ]
    over = decide(2 * ETH + 1, STRANGER)
    assert failed(over) == ["unlisted_max"]
    assert over.failed[0].message == (
        "2.000000000000000001 ETH is over the per-transfer maximum for unlisted ETH payouts, 2 ETH"
    )


def test_unlisted_window_at_the_limit_and_one_unit_over():
    assert decide(2 * ETH, STRANGER, unlisted_totals={DAY: 3 * ETH}).outcome == Outcome.ALLOW
    over = decide(2 * ETH, STRANGER, unlisted_totals={DAY: 3 * ETH + 1})
    assert failed(over) == ["unlisted_window:1d"]
    assert over.failed[0].message == (
        "unlisted payouts of ETH over 1d would total 5.000000000000000001 ETH, over the limit of 5 ETH"
    )


def test_unlisted_limits_do_not_apply_to_other_destinations():
    d = decide(3 * ETH, BOOKED, book=ACTIVE, unlisted_totals={DAY: 100 * ETH})
    assert d.outcome == Outcome.ALLOW and not any(r.rule.startswith("unlisted") for r in d.reasons)
    assert decide(3 * ETH, GOOD, unlisted_totals={DAY: 100 * ETH}).outcome == Outcome.ALLOW


@pytest.mark.parametrize(
    "ctx",
    [{}, {"book": ACTIVE}, {"book_only": True}],
    ids=["unlisted", "address book", "address-book-only"],
)
def test_the_deny_list_beats_the_whitelist_the_address_book_and_unlisted(ctx):
    hold_all = HoldRules(True, 1, 10 * DAY, 1, True)
    d = decide(ETH, DENIED, p=payout_policy(hold_all), paid_before=False, **ctx)
    assert d.outcome == Outcome.REJECT and "deny_list" in failed(d)
    assert d.destination is None and d.route is None and d.holds == ()


def test_address_book_only_refuses_what_is_not_in_the_book_but_not_the_whitelist():
    d = decide(ETH, STRANGER, book_only=True)
    assert failed(d) == ["address_book"]
    assert d.failed[0].message == f"customer 'cust-1' withdraws only to its address book, and {STRANGER} is not in it"
    assert decide(ETH, BOOKED, book_only=True, book=ACTIVE).destination == Destination.ADDRESS_BOOK
    assert decide(ETH, GOOD, book_only=True).destination == Destination.WHITELIST


def test_an_active_whitelist_entry_comes_before_the_address_book():
    d = decide(ETH, GOOD, book=BookEntry(NOW, NOW + DAY))  # a locked book entry is not even looked at
    assert d.outcome == Outcome.ALLOW and d.destination == Destination.WHITELIST
    assert "address_book" not in rules(d)


def test_a_whitelist_entry_not_yet_active_leaves_the_customer_rules():
    assert decide(ETH, LATER).destination == Destination.UNLISTED
    assert decide(ETH, LATER, book=ACTIVE).destination == Destination.ADDRESS_BOOK
    assert decide(ETH, LATER, customer=None).outcome == Outcome.REJECT


# -- customer limits -------------------------------------------------------------------------------------------
def test_customer_max_at_the_limit_and_one_unit_over():
    at = decide(10 * ETH, GOOD)
    assert at.outcome == Outcome.DELAY  # the 10 ETH delay tier: not refused
    over = decide(10 * ETH + 1, GOOD)
    assert failed(over) == ["customer_max"]
    assert over.failed[0].message == (
        "10.000000000000000001 ETH is over customer 'cust-1''s per-transfer maximum of 10 ETH"
    )


@pytest.mark.parametrize(("period", "limit"), [(3600, 20 * ETH), (DAY, 50 * ETH)])
def test_customer_windows_at_the_limit_and_one_unit_over(period, limit):
    used = limit - ETH
    assert decide(ETH, GOOD, customer_totals={period: used}).outcome == Outcome.ALLOW
    over = decide(ETH + 1, GOOD, customer_totals={period: used})
    name = "customer_window:1h" if period == 3600 else "customer_window:1d"
    assert failed(over) == [name]
    assert over.failed[0].message.startswith(f"customer 'cust-1''s withdrawals over {name[-2:]} would total ")


def test_an_override_replaces_the_default_limits_for_that_customer():
    assert decide(20 * ETH, GOOD, customer=VIP).outcome == Outcome.DELAY  # no per-transfer maximum of its own
    assert decide(20 * ETH, GOOD, customer=VIP, customer_totals={3600: 100 * ETH}).outcome == Outcome.DELAY
    assert decide(ETH, GOOD, customer=VIP, customer_totals={DAY: 499 * ETH}).outcome == Outcome.ALLOW
    assert failed(decide(ETH + 1, GOOD, customer=VIP, customer_totals={DAY: 499 * ETH})) == ["customer_window:1d"]


def test_customer_limits_count_alongside_the_asset_and_key_windows():
    d = decide(ETH, GOOD, customer_totals={3600: 20 * ETH}, asset_totals={3600: 200 * ETH})
    assert set(failed(d)) == {"customer_window:1h", "window:1h"}


# -- without a customer nothing new applies --------------------------------------------------------------------
@pytest.mark.parametrize("destination", [GOOD, LATER, DENIED, STRANGER, BOOKED, LOOKALIKE])
@pytest.mark.parametrize("amount", [ETH, 3 * ETH, 10 * ETH + 1, 60 * ETH])
def test_without_a_customer_the_decision_is_exactly_the_treasury_one(destination, amount):
    everything = payout_policy(HoldRules(True, 1, 10 * DAY, 1, True))
    rich = {
        "customer_totals": {3600: 19 * ETH},
        "unlisted_totals": {DAY: 4 * ETH},
        "book": ACTIVE,
        "book_only": True,
        "paid_before": False,
        "median_30d": 1,
    }
    new = decide(amount, destination, customer=None, p=everything, **rich)
    old = decide(amount, destination, customer=None, p=policy())
    assert new.reasons == old.reasons and new.outcome == old.outcome and new.route == old.route
    assert new.outcome != Outcome.HOLD
    assert new.destination == (None if old.outcome == Outcome.REJECT else Destination.WHITELIST)


# -- holds -----------------------------------------------------------------------------------------------------
def held(d: Decision) -> list[str]:
    return [r.rule for r in d.holds]


def test_first_payout_holds_only_when_never_paid_and_never_for_whitelisted_destinations():
    p = payout_policy(HoldRules(first_payout=True))
    first = decide(ETH, STRANGER, p=p)
    assert first.outcome == Outcome.HOLD and held(first) == ["hold:first_payout"]
    assert first.holds[0].message == f"first payout to {STRANGER} for customer 'cust-1': held for review"
    again = decide(ETH, STRANGER, p=p, paid_before=True)
    assert again.outcome == Outcome.ALLOW and "hold:first_payout" in rules(again)
    assert decide(ETH, BOOKED, p=p, book=ACTIVE).outcome == Outcome.HOLD
    whitelisted = decide(ETH, GOOD, p=p)
    assert whitelisted.outcome == Outcome.ALLOW and "hold:first_payout" not in rules(whitelisted)


def test_median_holds_at_the_multiple_and_not_one_unit_below():
    p = payout_policy(HoldRules(median_multiple=10))
    median = ETH // 10
    assert decide(ETH - 1, STRANGER, p=p, median_30d=median).outcome == Outcome.ALLOW
    d = decide(ETH, STRANGER, p=p, median_30d=median)
    assert d.outcome == Outcome.HOLD and held(d) == ["hold:median"]
    assert d.holds[0].message == "1 ETH is at least 10 times customer 'cust-1''s 30-day median of 0.1 ETH"
    no_history = decide(10 * ETH, GOOD, p=p, median_30d=None)
    assert no_history.outcome != Outcome.HOLD and "hold:median" in rules(no_history)


def test_young_entry_holds_while_younger_than_the_age_and_not_at_it():
    p = payout_policy(HoldRules(young_entry=7 * DAY))
    just_young = BookEntry(added_at=NOW - 7 * DAY + 1, active_at=NOW - 6 * DAY)
    d = decide(ETH, BOOKED, p=p, book=just_young)
    assert d.outcome == Outcome.HOLD and held(d) == ["hold:young_entry"]
    assert d.holds[0].message == "the address-book entry was added 604799s ago, less than 7d"
    of_age = BookEntry(added_at=NOW - 7 * DAY, active_at=NOW - 6 * DAY)
    assert decide(ETH, BOOKED, p=p, book=of_age).outcome == Outcome.ALLOW
    assert "hold:young_entry" not in rules(decide(ETH, STRANGER, p=p))  # only address-book destinations


@pytest.mark.parametrize(("period", "limit"), [(3600, 20 * ETH), (DAY, 50 * ETH)])
def test_velocity_holds_when_a_window_would_reach_its_share_and_not_one_unit_below(period, limit):
    p = payout_policy(HoldRules(velocity_share=80))
    reach = limit * 80 // 100  # 16 ETH of 20, 40 ETH of 50
    used = reach - ETH
    assert decide(ETH - 1, GOOD, p=p, customer_totals={period: used}).outcome == Outcome.ALLOW
    d = decide(ETH, GOOD, p=p, customer_totals={period: used})
    assert d.outcome == Outcome.HOLD and held(d) == ["hold:velocity"]
    assert "at least 80% of the limit of" in d.holds[0].message


def test_velocity_needs_customer_windows():
    p = payout_policy(HoldRules(velocity_share=1))
    assert decide(5 * ETH - 1, GOOD, p=p, customer=VIP).outcome == Outcome.ALLOW  # VIP: 500 ETH a day
    assert decide(5 * ETH, GOOD, p=p, customer=VIP).outcome == Outcome.HOLD  # 1 % of it
    bare = replace(p, customers=replace(p.customers, limits={}, overrides={}))
    d = decide(ETH, GOOD, p=bare)
    assert d.outcome == Outcome.ALLOW and "hold:velocity" not in rules(d)


def test_similar_to_denied_holds_on_the_same_first_and_last_four_digits_in_any_case():
    p = payout_policy(HoldRules(similar_to_denied=True))
    d = decide(ETH, LOOKALIKE, p=p)
    assert d.outcome == Outcome.HOLD and held(d) == ["hold:similar_to_denied"]
    assert d.holds[0].message == (
        f"destination {LOOKALIKE} looks like denied address {DENIED} (same first and last 4 hex digits)"
    )
    assert decide(ETH, NEAR_MISS, p=p).outcome == Outcome.ALLOW
    assert decide(ETH, STRANGER, p=p).outcome == Outcome.ALLOW


def test_two_approvals_skip_the_holds_and_the_delay_then_applies():
    p = payout_policy(HoldRules(True, 1, 10 * DAY, 1, True))
    young = BookEntry(NOW - 2 * DAY, NOW - DAY)
    ctx = {"book": young, "median_30d": 1, "customer_totals": {3600: 5 * ETH}}
    d = decide(10 * ETH, BOOKED, p=p, **ctx)
    assert d.outcome == Outcome.HOLD and d.eligible_at is None and d.route == Route.COLD
    assert d.destination == Destination.ADDRESS_BOOK
    assert held(d) == ["hold:first_payout", "hold:median", "hold:young_entry", "hold:velocity"]
    assert set(d.holds) <= set(d.failed)
    approved = decide(10 * ETH, BOOKED, p=p, approved=True, **ctx)
    assert approved.outcome == Outcome.DELAY and approved.eligible_at == NOW + 3600  # HOLD beat DELAY before
    assert approved.holds == () and approved.failed == () and "approved" in rules(approved)
    assert approved.destination == Destination.ADDRESS_BOOK


def test_approval_does_not_lift_a_refusal():
    p = payout_policy(HoldRules(first_payout=True))
    d = decide(10 * ETH + 1, STRANGER, p=p, approved=True)
    assert d.outcome == Outcome.REJECT and "unlisted_max" in failed(d) and "customer_max" in failed(d)


def test_holds_are_not_checked_when_a_rule_refuses():
    p = payout_policy(HoldRules(True, 1, 10 * DAY, 1, True))
    d = decide(2 * ETH + 1, LOOKALIKE, p=p, median_30d=1)
    assert d.outcome == Outcome.REJECT and failed(d) == ["unlisted_max"]
    assert not any(r.rule.startswith("hold") for r in d.reasons)


def test_a_policy_without_hold_rules_leaves_no_hold_reason():
    d = decide(ETH, STRANGER, paid_before=False, median_30d=1, approved=True)
    assert d.outcome == Outcome.ALLOW and not any(r.rule.startswith(("hold", "approved")) for r in d.reasons)
    assert rules(d) == [
        "asset",
        "deny_list",
        "unlisted",
        "max_per_transfer",
        "window:1h",
        "window:1d",
        "key_window:1h",
        "customer_max",
        "customer_window:1h",
        "customer_window:1d",
        "unlisted_max",
        "unlisted_window:1d",
        "route",
    ]


# -- the route -------------------------------------------------------------------------------------------------
def test_a_small_customer_payout_is_paid_hot_or_refused_never_cold():
    """Signers never pay a customer payout at or below the hot limit from the Safe (they cannot see whether the
    hot wallet paid it), so the engine never routes one there: short of hot funds, it is refused."""
    limit = ETH  # under the unlisted maximum of 2 ETH
    p = replace(P, assets={**P.assets, "ETH": replace(P.assets["ETH"], hot_limit=limit)})
    assert decide(limit, p=p, hot_free_balance=limit).route == Route.HOT
    short = decide(limit, p=p, hot_free_balance=limit - 1)
    assert short.outcome == Outcome.REJECT and failed(short) == ["route"] and short.route is None
    assert "is paid from the hot wallet only" in short.failed[0].message
    above = decide(limit + 1, p=p, hot_free_balance=0)
    assert above.outcome == Outcome.ALLOW and above.route == Route.COLD
    booked = decide(limit, BOOKED, p=p, book=ACTIVE, hot_free_balance=0)
    assert failed(booked) == ["route"]
    # the treasury's own destinations, and requests without a customer, still go cold when hot is short
    assert decide(limit, GOOD, p=p, hot_free_balance=0).route == Route.COLD
    assert decide(limit, GOOD, p=p, customer=None, hot_free_balance=0).route == Route.COLD
