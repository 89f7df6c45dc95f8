import hashlib
import re
import tomllib
from importlib.resources import files

import pytest

from policies.canonical import canonical_bytes
from policies.errors import PolicyFileError
from policies.loader import load_policy_toml, policy_from_canonical, policy_to_canonical
from policies.model import Window

EXAMPLE = files("policies").joinpath("examples/policy.toml").read_text()


def test_the_shipped_example_compiles_and_round_trips_through_the_canonical_form():
    policy = load_policy_toml(EXAMPLE)
    eth = policy.assets["ETH"]
    assert eth.max_per_transfer == 500 * 10**18 and eth.hot_limit == 5 * 10**18
    assert [w.seconds for w in eth.windows] == [3600, 86400]
    assert [(t.at_least, t.delay) for t in eth.delay_tiers] == [(10 * 10**18, 3600), (100 * 10**18, 86400)]
    assert policy.assets["USDC"].max_per_transfer == 10**12
    assert policy.whitelist["0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"].active_from == 4102444800
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
            edit("active_from = 2100-01-01T00:00:00Z", "active_from = 2100-01-01T00:00:00"),
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


# -- the hot wallet, top-ups, batch rules, one contract per asset -----------------------------------------------
HOT_ENTRY = """
[[whitelist]]
address = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
assets = ["ETH"]
label = "our hot wallet"
active_from = 2026-12-01T00:00:00Z
hot = true
"""
TOPUP = 'hot_max = "60"\nhot_topup = { period = "24h", limit = "40" }'


def with_hot(text: str = EXAMPLE) -> str:
    return text.replace("# Always refused", HOT_ENTRY + "\n# Always refused", 1)


def test_the_hot_wallet_and_its_top_up_limit_and_batch_rules_compile_and_round_trip():
    text = with_hot(edit('hot_max = "60"', TOPUP))
    text += '\n[batches]\nmax_future = "1m"\nmax_lifetime = "2d"\nmax_nonce_gap = 4\n'
    policy = load_policy_toml(text)
    hot = policy.hot_entry
    assert hot is not None and hot.address == "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
    topup = policy.assets["ETH"].hot_topup
    assert topup is not None and (topup.seconds, topup.limit) == (86400, 40 * 10**18)
    assert (policy.batches.max_future, policy.batches.max_lifetime, policy.batches.max_nonce_gap) == (60, 172800, 4)
    canonical = policy_to_canonical(policy)
    assert canonical["batches"] == {"max_future": 60, "max_lifetime": 172800, "max_nonce_gap": 4}
    assert canonical["assets"]["ETH"]["hot_topup"] == {"period": 86400, "limit": str(40 * 10**18)}
    assert [e.get("hot") for e in canonical["whitelist"]] == [None, None, True]
    assert policy_from_canonical(canonical) == policy
    canonical["whitelist"][0]["hot"] = False  # written only when true: one policy, one encoding
    with pytest.raises(PolicyFileError, match="only when true"):
        policy_from_canonical(canonical)


def test_default_batch_rules_are_not_written():
    explicit = load_policy_toml(EXAMPLE + '\n[batches]\nmax_future = "5m"\nmax_lifetime = "7d"\nmax_nonce_gap = 16\n')
    assert "batches" not in policy_to_canonical(explicit)
    assert explicit == load_policy_toml(EXAMPLE)


def test_bundles_made_before_the_new_fields_keep_their_bytes():
    """SHA-256 of the canonical form as the code before hot, hot_topup and [batches] wrote it: a policy that
    uses none of them must hash the same, or every signed bundle would stop verifying."""
    dated = EXAMPLE.replace("2100-01-01T00:00:00Z", "2026-12-01T00:00:00Z")  # the example as it was then
    plain = canonical_bytes(policy_to_canonical(load_policy_toml(dated)))
    assert hashlib.sha256(plain).hexdigest() == "0c62b81284e99a9437511a0da975b922c2fc14ee5e38bb291f33c08121b0c6f9"
    text = dated.replace("format = 1", 'format = 1\nunfreeze = "0123456789abcdef"', 1)
    text = text.replace('hot_limit = "5"', 'hot_limit = "5"\nauto_freeze = { period = "1h", limit = "50" }', 1)
    text = text.replace('hot_limit = "10000"', 'hot_limit = "10000"\nhot_min_share = "2.5"\nhot_max_share = "10"', 1)
    fuller = canonical_bytes(policy_to_canonical(load_policy_toml(text)))
    assert hashlib.sha256(fuller).hexdigest() == "35627059fb55417876afa1c0c7f4bd54b66e8c1c93fc90dbe098fa38da7ae845"


USDX = '\n[assets.USDX]\ndecimals = 18\ncontract = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"\n'
USDX += 'max_per_transfer = "1"\nhot_limit = "1"\n'


@pytest.mark.parametrize(
    ("text", "location", "words"),
    [
        (edit("# A destination", USDX + "\n# A destination"), "assets.USDX.contract", "already the contract of USDC"),
        (
            with_hot(edit('hot_max = "60"', TOPUP)).replace('label = "Market maker B"', 'label = "B"\nhot = true'),
            "whitelist[2].hot",
            "only one whitelist entry per chain may be the hot wallet (ethereum)",
        ),
        (with_hot(), "assets.ETH.hot_topup", "is required"),
        (
            with_hot(edit('hot_max = "60"', TOPUP.replace('"40"', '"40.000000000000000001"'))),
            "assets.ETH.hot_topup.limit",
            "at most hot_max - hot_min (40 ETH)",
        ),
        (
            with_hot(edit('hot_max = "60"', TOPUP.replace('"24h"', '"1 day"'))),
            "assets.ETH.hot_topup[0].period",
            "not a period",
        ),
        (EXAMPLE + '\n[batches]\nmax_future = "61m"\n', "batches.max_future", "at most 1h"),
        (EXAMPLE + '\n[batches]\nmax_lifetime = "31d"\n', "batches.max_lifetime", "at most 30d"),
        (EXAMPLE + "\n[batches]\nmax_nonce_gap = 0\n", "batches.max_nonce_gap", "between 1 and 256"),
        (EXAMPLE + "\n[batches]\nmax_nonce_gap = 257\n", "batches.max_nonce_gap", "between 1 and 256"),
        (EXAMPLE + "\n[batches]\nmax_gap = 3\n", "batches.max_gap", "unknown key"),
        (EXAMPLE + '\n[batches]\nmax_future = "0s"\n', "batches.max_future", "not a period"),
    ],
)
def test_hot_wallet_top_up_batch_and_contract_mistakes(text, location, words):
    with pytest.raises(PolicyFileError) as info:
        load_policy_toml(text)
    assert info.value.location == location
    assert words in info.value.message


def test_a_top_up_limit_up_to_the_band_or_with_a_share_band_is_accepted():
    assert load_policy_toml(with_hot(edit('hot_max = "60"', TOPUP))).assets["ETH"].hot_topup is not None
    # with a band in shares of the total, the limit is the treasury's to choose
    shares = re.sub(r'hot_min = "20".*\n', 'hot_min_share = "5"\n', EXAMPLE, count=1)
    big = 'hot_max_share = "10"\nhot_topup = { period = "1h", limit = "1000" }\n'
    policy = load_policy_toml(with_hot(re.sub(r'hot_max = "60".*\n', big, shares, count=1)))
    assert policy.assets["ETH"].hot_topup == Window(3600, 1000 * 10**18)


# -- labels and notes: what a person reads next to an address -----------------------------------------------
@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("\\u202E", "U+202E"),  # RIGHT-TO-LEFT OVERRIDE
        ("\\u2066", "U+2066"),  # LEFT-TO-RIGHT ISOLATE
        ("\\u200B", "U+200B"),  # ZERO WIDTH SPACE
        ("\\u0085", "U+0085"),  # NEXT LINE, a C1 control
        ("\\u2028", "U+2028"),  # LINE SEPARATOR
        ("\\u0336", "U+0336"),  # COMBINING LONG STROKE OVERLAY
        ("\\u00A0", "U+00A0"),  # NO-BREAK SPACE (only the plain space is allowed)
        ("\\u212B", "NFC"),  # ANGSTROM SIGN, which NFC turns into Å
    ],
)
def test_labels_and_notes_refuse_characters_that_change_what_the_screen_shows(bad, words):
    label = edit('label = "Customer omnibus A"', f'label = "Customer {bad} omnibus A"')
    note = edit('note = "sanctioned"', f'note = "sanctioned{bad}"')
    for text, location in ((label, "whitelist[0].label"), (note, "deny[0].note")):
        with pytest.raises(PolicyFileError) as info:
            load_policy_toml(text)
        assert info.value.location == location
        assert words in info.value.message
    canonical = policy_to_canonical(load_policy_toml(EXAMPLE))
    canonical["whitelist"][0]["label"] = tomllib.loads(f'x = "x{bad}"')["x"]
    with pytest.raises(PolicyFileError, match=re.escape(words)):
        policy_from_canonical(canonical)


def test_plain_labels_with_accents_and_punctuation_are_accepted():
    label = "Société Générale – Zürich (№ 2): “cold” 50% / #3, ok?"
    policy = load_policy_toml(edit('label = "Customer omnibus A"', f'label = "{label}"'))
    assert policy.whitelist["0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"].label == label
    with pytest.raises(PolicyFileError, match="start or end with a space"):
        load_policy_toml(edit('label = "Customer omnibus A"', 'label = "Customer omnibus A "'))
