from importlib.resources import files

import pytest

from policies.errors import PolicyFileError
from policies.loader import load_policy_toml, policy_from_canonical, policy_to_canonical

EXAMPLE = files("policies").joinpath("examples/policy.toml").read_text()


def test_the_shipped_example_compiles_and_round_trips_through_the_canonical_form():
    policy = load_policy_toml(EXAMPLE)
    eth = policy.assets["ETH"]
    assert eth.max_per_transfer == 500 * 10**18 and eth.hot_limit == 5 * 10**18
    assert [w.seconds for w in eth.windows] == [3600, 86400]
    assert [(t.at_least, t.delay) for t in eth.delay_tiers] == [(10 * 10**18, 3600), (100 * 10**18, 86400)]
    assert policy.assets["USDC"].max_per_transfer == 10**12
    assert policy.whitelist["0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"].active_from == 1796083200
    assert policy.governance.quorum == 2 and policy.governance.activation_delay == 86400
    assert policy_from_canonical(policy_to_canonical(policy)) == policy
    shared = load_policy_toml(
        edit('hot_limit = "10000"', 'hot_limit = "10000"\nhot_min_share = "2.5"\nhot_max_share = "10"')
    )
    assert (shared.assets["USDC"].hot_min_share, shared.assets["USDC"].hot_max_share) == (250, 1000)
    assert policy_from_canonical(policy_to_canonical(shared)) == shared


def edit(old: str, new: str) -> str:
    assert old in EXAMPLE
    return EXAMPLE.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "location", "words"),
    [
        (edit("enabled = true", "enabled = true\nspeed = 3"), "assets.ETH.speed", "unknown key"),
        (edit("decimals = 18", 'decimals = "18"'), "assets.ETH.decimals", "must be int"),
        (
            edit('max_per_transfer = "500"', 'max_per_transfer = "-5"'),
            "assets.ETH.max_per_transfer",
            "not a plain decimal",
        ),
        (edit('max_per_transfer = "500"', "max_per_transfer = 500.0"), "assets.ETH.max_per_transfer", "decimal string"),
        (
            edit('hot_limit = "5"', 'hot_limit = "5.0000000000000000001"'),
            "assets.ETH.hot_limit",
            "more than 18 decimal",
        ),
        (
            edit('{ period = "1h", limit = "200" }', '{ period = "1h", limit = "0" }'),
            "assets.ETH.windows[0].limit",
            "greater than zero",
        ),
        (
            edit('{ period = "24h", limit = "1000" }', '{ period = "60m", limit = "1000" }'),
            "assets.ETH.windows[1]",
            "duplicate period",
        ),
        (edit('period = "1h"', 'period = "1 hour"'), "assets.ETH.windows[0].period", "not a period"),
        (
            edit("0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f", "0x6e340b9cFFb37A989ca544e6BB780A2C78901d3F"),
            "whitelist[0].address",
            "wrong EIP-55 checksum",
        ),
        (
            edit("0x4bF5122f344554C53BdE2EbB8CD2b7E3D1600ad6", "0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"),
            "whitelist[1]",
            "duplicate address",
        ),
        (edit('assets = ["ETH"]', 'assets = ["BTC"]'), "whitelist[1].assets[0]", "unknown asset BTC"),
        (
            edit("active_from = 2026-12-01T00:00:00Z", "active_from = 2026-12-01T00:00:00"),
            "whitelist[0].active_from",
            "time zone",
        ),
        (edit("quorum = 2", "quorum = 4"), "governance.quorum", "between 1 and 3"),
        (edit('name = "bob"', 'name = "alice"'), "governance.admins[1]", "duplicate admin name"),
        (edit("format = 1", "format = 2"), "format", "unsupported format"),
        (
            edit('{ asset = "ETH", period', '{ asset = "DOGE", period'),
            "api_keys.backend.windows[0].asset",
            "unknown asset",
        ),
        (edit('contract = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"', ""), "assets.USDC.contract", "native coin"),
        (edit('hot_limit = "5"', 'hot_limit = "5"\nhot_max_share = "12"'), "assets.ETH.hot_max_share", "not both"),
        (
            edit('hot_limit = "10000"', 'hot_limit = "10000"\nhot_max_share = "101"'),
            "assets.USDC.hot_max_share",
            "at most 100",
        ),
        (
            edit('hot_limit = "10000"', 'hot_limit = "10000"\nhot_min_share = "9"\nhot_max_share = "8.5"'),
            "assets.USDC.hot_max_share",
            "greater than hot_min_share",
        ),
        ("format = 1\n[assets\n", "toml", ""),
    ],
)
def test_mistakes_are_reported_with_their_location(text, location, words):
    with pytest.raises(PolicyFileError) as info:
        load_policy_toml(text)
    assert info.value.location == location
    assert words in info.value.message


def test_canonical_form_must_be_sorted():
    canonical = policy_to_canonical(load_policy_toml(EXAMPLE))
    canonical["whitelist"].reverse()
    with pytest.raises(PolicyFileError, match="canonical order"):
        policy_from_canonical(canonical)


def test_auto_freeze_and_unfreeze_round_trip_and_stay_out_of_policies_without_them():
    plain = policy_to_canonical(load_policy_toml(EXAMPLE))
    assert "unfreeze" not in plain and all("auto_freeze" not in a for a in plain["assets"].values())
    text = edit("format = 1", 'format = 1\nunfreeze = "0123456789abcdef"')
    text = text.replace('hot_limit = "5"', 'hot_limit = "5"\nauto_freeze = { period = "1h", limit = "50" }', 1)
    policy = load_policy_toml(text)
    assert policy.unfreeze == "0123456789abcdef"
    assert (policy.assets["ETH"].auto_freeze.seconds, policy.assets["ETH"].auto_freeze.limit) == (3600, 50 * 10**18)
    assert policy_from_canonical(policy_to_canonical(policy)) == policy
    with pytest.raises(PolicyFileError, match="unfreeze"):
        load_policy_toml(edit("format = 1", 'format = 1\nunfreeze = "nope"'))


def test_the_signer_review_says_a_bundle_unfreezes_in_capitals():
    from policies.bundle import genesis_bytes, make_bundle, parse_genesis
    from signer.policyview import describe_bundle
    from tests.conftest import governance_for_tests

    policy = load_policy_toml(edit("format = 1", 'format = 1\nunfreeze = "0123456789abcdef"'))
    bundle = make_bundle(policy, parse_genesis(genesis_bytes(governance_for_tests(), 0)), 10)
    assert any("UNFREEZES" in line and "0123456789abcdef" in line for line in describe_bundle(bundle, None))
