"""Properties that must hold for every input, not just the hand-picked boundaries."""

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.evaluate import Context, Outcome, Request, Route, evaluate
from tests.policies.helpers import DENIED, ETH, GOOD, LATER, NOW, policy

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
