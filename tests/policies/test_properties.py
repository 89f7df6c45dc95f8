"""Properties that must hold for every input, not just the hand-picked boundaries."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.evaluate import BookEntry, Context, Destination, Outcome, Request, Route, evaluate
from policies.model import HoldRules
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

P = policy()
RULE = P.assets["ETH"]
amounts = st.one_of(st.integers(1, 300 * ETH), st.sampled_from([1, 5 * ETH, 5 * ETH + 1, 100 * ETH, 100 * ETH + 1]))
totals = st.dictionaries(st.sampled_from([3600, 86400]), st.integers(0, 1200 * ETH))
requests = st.builds(
    Request,
    st.sampled_from(["ETH", "USDC", "BTC"]),
    amounts,
    st.sampled_from([GOOD, LATER, DENIED, "0xdBc1b4c900Ffe48D575b5da5c638040125f65db0"]),
    st.sampled_from(["backend", "other"]),
)
contexts = st.builds(Context, st.integers(NOW - 10, NOW + 7200), totals, totals, st.integers(0, 50 * ETH))


@settings(max_examples=400, deadline=None)
@given(requests, contexts)
def test_allowed_decisions_respect_every_limit(request, context):
    decision = evaluate(P, request, context)
    if decision.outcome not in (Outcome.ALLOW, Outcome.DELAY):
        return
    assert request.asset == "ETH" and request.destination != DENIED
    assert request.amount <= RULE.max_per_transfer
    for w in RULE.windows:
        assert context.asset_totals.get(w.seconds, 0) + request.amount <= w.limit
    for w in P.api_keys["backend"].windows["ETH"] if request.api_key == "backend" else ():
        assert context.key_totals.get(w.seconds, 0) + request.amount <= w.limit
    assert P.whitelist[request.destination].active_from <= context.now
    if decision.route == Route.HOT:
        assert request.amount <= RULE.hot_limit and request.amount <= context.hot_free_balance
    assert decision == evaluate(P, request, context)


@settings(max_examples=200, deadline=None)
@given(requests, contexts)
def test_a_denied_address_is_never_allowed(request, context):
    denied = Request(request.asset, request.amount, DENIED, request.api_key)
    assert evaluate(P, denied, context).outcome not in (Outcome.ALLOW, Outcome.DELAY)


# -- customer payouts (issue 16) ---------------------------------------------------------------------------------
HOLDS = st.builds(
    HoldRules,
    st.booleans(),
    st.none() | st.integers(1, 20),
    st.none() | st.sampled_from([3600, 86400, 7 * 86400]),
    st.none() | st.integers(1, 100),
    st.booleans(),
)
PAYOUTS = payout_policy()
small_totals = st.dictionaries(st.sampled_from([3600, 86400]), st.integers(0, 60 * ETH))
books = st.none() | st.builds(
    lambda added, lock: BookEntry(added, added + lock), st.integers(NOW - 10 * 86400, NOW + 10), st.integers(0, 86400)
)
customer_requests = st.builds(
    Request,
    st.just("ETH"),
    st.one_of(st.integers(1, 30 * ETH), st.sampled_from([2 * ETH, 2 * ETH + 1, 10 * ETH, 10 * ETH + 1])),
    st.sampled_from([GOOD, LATER, DENIED, STRANGER, BOOKED, LOOKALIKE, NEAR_MISS]),
    st.sampled_from(["backend", "other"]),
    st.sampled_from([None, CUSTOMER, VIP]),
)
customer_contexts = st.builds(
    Context,
    st.integers(NOW - 10, NOW + 7200),
    small_totals,
    small_totals,
    st.integers(0, 50 * ETH),
    small_totals,
    small_totals,
    books,
    st.booleans(),
    st.booleans(),
    st.none() | st.integers(1, 5 * ETH),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(HOLDS, customer_requests, customer_contexts)
def test_a_denied_destination_is_never_allowed_or_held(holds, request, context):
    denied = Request(request.asset, request.amount, DENIED, request.api_key, request.customer)
    decision = evaluate(payout_policy(holds), denied, context)
    assert decision.outcome == Outcome.REJECT and decision.destination is None


@settings(max_examples=400, deadline=None)
@given(HOLDS, customer_requests, customer_contexts)
def test_payouts_that_go_respect_the_customer_and_unlisted_limits(holds, request, context):
    decision = evaluate(payout_policy(holds), request, context)
    if decision.outcome == Outcome.REJECT:
        assert decision.destination is None and decision.holds == ()
        return
    if request.customer is not None:
        limits = PAYOUTS.customers.limits_for(request.customer, "ETH")
        assert limits is not None
        assert limits.max_per_transfer is None or request.amount <= limits.max_per_transfer
        for w in limits.windows:
            assert context.customer_totals.get(w.seconds, 0) + request.amount <= w.limit
    if decision.destination == Destination.UNLISTED:
        unlisted = PAYOUTS.assets["ETH"].unlisted
        assert unlisted is not None and unlisted.max_per_transfer is not None
        assert request.customer is not None and context.book is None and not context.book_only
        assert request.amount <= unlisted.max_per_transfer
        for w in unlisted.windows:
            assert context.unlisted_totals.get(w.seconds, 0) + request.amount <= w.limit
    if decision.destination == Destination.ADDRESS_BOOK:
        assert context.book is not None and context.now >= context.book.active_at
    if decision.destination != Destination.WHITELIST:
        assert request.customer is not None


@settings(max_examples=400, deadline=None)
@given(HOLDS, customer_requests, customer_contexts)
def test_holds_never_turn_a_refusal_into_a_hold_and_approval_lifts_only_holds(holds, request, context):
    plain = evaluate(PAYOUTS, request, context)
    held = evaluate(payout_policy(holds), request, context)
    assert (held.outcome == Outcome.REJECT) == (plain.outcome == Outcome.REJECT)
    assert (held.outcome == Outcome.HOLD) == bool(held.holds)
    assert set(held.holds) <= set(held.failed)
    if held.outcome == Outcome.HOLD:
        assert request.customer is not None and not context.approved and held.eligible_at is None
    else:
        assert (held.outcome, held.route, held.eligible_at) == (plain.outcome, plain.route, plain.eligible_at)
    assert held.destination == plain.destination
    approved = evaluate(payout_policy(holds), request, replace(context, approved=True))
    assert (approved.outcome, approved.eligible_at) == (plain.outcome, plain.eligible_at)


@settings(max_examples=200, deadline=None)
@given(HOLDS, customer_requests, customer_contexts)
def test_without_a_customer_the_new_rules_change_nothing(holds, request, context):
    treasury = Request(request.asset, request.amount, request.destination, request.api_key)
    assert evaluate(payout_policy(holds), treasury, context)[:4] == evaluate(P, treasury, context)[:4]
