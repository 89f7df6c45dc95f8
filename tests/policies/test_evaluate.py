from dataclasses import replace

import pytest

from policies.evaluate import Context, Outcome, Request, Route, evaluate, window_totals
from tests.policies.helpers import DENIED, ETH, GOOD, LATER, NOW, policy

P = policy()


def decide(
    amount: int, destination: str = GOOD, asset: str = "ETH", now: int = NOW, key: str = "backend", **ctx: object
) -> object:
    return evaluate(P, Request(asset, amount, destination, key), Context(now=now, **ctx))  # type: ignore[arg-type]


def failed_rules(decision) -> list[str]:
    return [r.rule for r in decision.failed]


def test_small_whitelisted_transfer_is_allowed_and_every_rule_gives_a_reason():
    d = decide(1 * ETH, hot_free_balance=10 * ETH)
    assert d.outcome == Outcome.ALLOW and d.route == Route.HOT and d.eligible_at == NOW
    assert [r.rule for r in d.reasons] == [
        "asset",
        "deny_list",
        "whitelist",
        "max_per_transfer",
        "window:1h",
        "window:1d",
        "key_window:1h",
        "route",
    ]
    assert all(r.passed and r.message for r in d.reasons)


def test_unknown_and_disabled_assets_are_rejected():
    assert failed_rules(decide(1, asset="DOGE")) == ["asset"]
    d = decide(1, asset="USDC")
    assert d.outcome == Outcome.REJECT and "disabled" in d.reasons[0].message


def test_max_per_transfer_boundary():
    assert decide(100 * ETH).outcome == Outcome.DELAY
    d = decide(100 * ETH + 1)
    assert d.outcome == Outcome.REJECT and failed_rules(d) == ["max_per_transfer"]


def test_whitelist_activation_boundary():
    entry_time = NOW + 3600
    assert failed_rules(decide(ETH, LATER, now=entry_time - 1)) == ["whitelist"]
    assert decide(ETH, LATER, now=entry_time).outcome == Outcome.ALLOW
    assert decide(ETH, LATER, now=entry_time + 1).outcome == Outcome.ALLOW


def test_destination_not_whitelisted_or_not_for_this_asset():
    stranger = "0xdBc1b4c900Ffe48D575b5da5c638040125f65db0"
    assert failed_rules(decide(ETH, stranger)) == ["whitelist"]
    p = policy(assets={**P.assets, "USDC": replace(P.assets["USDC"], enabled=True)})
    d = evaluate(p, Request("USDC", 10, LATER, "backend"), Context(now=NOW + 7200))
    assert failed_rules(d) == ["whitelist"] and "does not allow USDC" in d.failed[0].message


def test_deny_list_beats_the_whitelist():
    d = decide(ETH, DENIED)
    assert d.outcome == Outcome.REJECT and failed_rules(d) == ["deny_list"] and "sanctioned" in d.failed[0].message


def test_asset_window_boundary():
    assert decide(ETH, asset_totals={3600: 199 * ETH}).outcome == Outcome.ALLOW
    d = decide(ETH + 1, asset_totals={3600: 199 * ETH})
    assert failed_rules(d) == ["window:1h"]
    assert failed_rules(decide(ETH, asset_totals={86400: 999 * ETH + 1})) == ["window:1d"]


def test_key_window_boundary_and_keys_without_limits():
    assert decide(ETH, key_totals={3600: 149 * ETH}).outcome == Outcome.ALLOW
    assert failed_rules(decide(ETH, key_totals={3600: 149 * ETH + 1})) == ["key_window:1h"]
    assert decide(ETH, key="other", key_totals={3600: 10**30}).outcome == Outcome.ALLOW


def test_window_totals_straddling_the_edge():
    events = [(NOW - 3600, 5), (NOW - 3599, 7), (NOW, 11), (NOW + 1, 13)]
    assert window_totals(events, NOW, [3600, 86400]) == {3600: 18, 86400: 23}
    # one second later the event at the old edge of the window has dropped out of the 1 h window
    assert window_totals(events, NOW + 1, [3600]) == {3600: 24}


def test_delay_tiers_at_their_boundaries():
    assert decide(10 * ETH - 1).outcome == Outcome.ALLOW
    d = decide(10 * ETH)
    assert d.outcome == Outcome.DELAY and d.eligible_at == NOW + 3600
    assert decide(50 * ETH - 1).eligible_at == NOW + 3600
    assert decide(50 * ETH).eligible_at == NOW + 86400


def test_route_hot_only_within_hot_limit_and_free_balance():
    assert decide(5 * ETH, hot_free_balance=5 * ETH).route == Route.HOT
    assert decide(5 * ETH + 1, hot_free_balance=100 * ETH).route == Route.COLD
    assert decide(5 * ETH, hot_free_balance=5 * ETH - 1).route == Route.COLD


def test_all_failures_are_reported_at_once():
    d = decide(101 * ETH, DENIED, asset_totals={3600: 200 * ETH})
    assert set(failed_rules(d)) == {"deny_list", "max_per_transfer", "window:1h"}
    assert d.route is None and d.eligible_at is None


@pytest.mark.parametrize("amount", [1, ETH, 20 * ETH])
def test_decisions_are_deterministic(amount):
    assert decide(amount, hot_free_balance=ETH) == decide(amount, hot_free_balance=ETH)
