"""What an admin reads before signing a policy bundle: one line per changed field, old -> new, in the asset's
units, every string from the file escaped."""

from __future__ import annotations

from dataclasses import replace

import pytest

from policies.bundle import genesis_bytes, make_bundle, parse_genesis
from policies.model import Admin, BatchRules, DenyEntry, KeyRule, Policy, WhitelistEntry, Window
from signer.policyview import describe_bundle, diff, flatten
from tests.policies.helpers import ADMIN_KEYS, DENIED, ETH, GOOD, LATER, NOW, governance, policy

BASE = policy()
OTHER = "0x2222222222222222222222222222222222222222"
CONTRACT = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
NEW_CONTRACT = "0x6B175474E89094C44Da98b954EedeAC495271d0F"
OUTSIDER_KEY = ADMIN_KEYS[3].verify_key.encode().hex()
KEY0 = ADMIN_KEYS[0].verify_key.encode().hex()
BTC = replace(
    BASE.assets["ETH"], symbol="BTC", decimals=8, chain="bitcoin", network="regtest", hot_limit=0,
    max_per_transfer=10**9, windows=(), delay_tiers=(), max_fee=100_000, max_fee_rate=50,
)


def asset(symbol: str, **changes: object) -> Policy:
    return replace(BASE, assets={**BASE.assets, symbol: replace(BASE.assets[symbol], **changes)})


def entry(address: str, **changes: object) -> Policy:
    return replace(BASE, whitelist={**BASE.whitelist, address: replace(BASE.whitelist[address], **changes)})


def without(mapping_name: str, key: str) -> Policy:
    mapping = dict(getattr(BASE, mapping_name))
    del mapping[key]
    return replace(BASE, **{mapping_name: mapping})


def changes(old: Policy, new: Policy) -> list[str]:
    return diff(flatten(old), flatten(new))


W_GOOD, W_OTHER = f"whitelist.{GOOD}", f"whitelist.{OTHER}"


@pytest.mark.parametrize(
    ("new", "line"),
    [
        # assets: every field, changed, added and removed
        (asset("USDC", enabled=True), "~ assets.USDC.enabled: false -> true"),
        (asset("USDC", decimals=12), "~ assets.USDC.decimals: 6 -> 12"),
        (asset("USDC", decimals=12), "~ assets.USDC.max_per_transfer: 1000000 USDC -> 1 USDC"),
        (asset("USDC", contract=NEW_CONTRACT), f"~ assets.USDC.contract: {CONTRACT} -> {NEW_CONTRACT}"),
        (asset("ETH", max_per_transfer=150 * ETH), "~ assets.ETH.max_per_transfer: 100 ETH -> 150 ETH"),
        (asset("ETH", hot_limit=ETH // 2), "~ assets.ETH.hot_limit: 5 ETH -> 0.5 ETH"),
        (
            asset("ETH", windows=(Window(3600, 300 * ETH), Window(86400, 1000 * ETH))),
            "~ assets.ETH.windows.1h: 200 ETH -> 300 ETH",
        ),
        (asset("ETH", windows=(Window(3600, 200 * ETH),)), "- assets.ETH.windows.1d: 1000 ETH"),
        (
            asset("ETH", windows=(Window(60, ETH), Window(3600, 200 * ETH), Window(86400, 1000 * ETH))),
            "+ assets.ETH.windows.1m: 1 ETH",
        ),
        (asset("ETH", delay_tiers=()), "- assets.ETH.delay_tiers[10 ETH]: 1h"),
        (asset("ETH", delay_tiers=()), "- assets.ETH.delay_tiers[50 ETH]: 1d"),
        (
            asset("ETH", delay_tiers=(replace(BASE.assets["ETH"].delay_tiers[0], delay=7200),)),
            "~ assets.ETH.delay_tiers[10 ETH]: 1h -> 2h",
        ),
        (asset("ETH", hot_min=20 * ETH), "+ assets.ETH.hot_min: 20 ETH"),
        (asset("ETH", hot_max=60 * ETH), "+ assets.ETH.hot_max: 60 ETH"),
        (asset("USDC", hot_min_share=9900), "+ assets.USDC.hot_min_share: 99% of the asset's total"),
        (asset("USDC", hot_max_share=1050), "+ assets.USDC.hot_max_share: 10.5% of the asset's total"),
        (asset("ETH", auto_freeze=Window(3600, 50 * ETH)), "+ assets.ETH.auto_freeze: 50 ETH per 1h"),
        (asset("ETH", hot_topup=Window(86400, 50 * ETH)), "+ assets.ETH.hot_topup: 50 ETH per 1d"),
        (without("assets", "USDC"), "- assets.USDC.decimals: 6"),
        # a Bitcoin asset's chain and fee caps (what a batch's fee is checked against offline)
        (
            replace(BASE, assets={**BASE.assets, "BTC": BTC}),
            "+ assets.BTC.chain: bitcoin (regtest)",
        ),
        (replace(BASE, assets={**BASE.assets, "BTC": BTC}), "+ assets.BTC.max_fee: 0.001 BTC per batch transaction"),
        (replace(BASE, assets={**BASE.assets, "BTC": BTC}), "+ assets.BTC.max_fee_rate: 50 sat/vB"),
        (without("assets", "USDC"), "- assets.USDC.contract: " + CONTRACT),
        # whitelist entries
        (entry(GOOD, assets=("ETH",)), f"~ {W_GOOD}.assets: ETH, USDC -> ETH"),
        (entry(GOOD, label="omnibus B"), f'~ {W_GOOD}.label: "omnibus" -> "omnibus B"'),
        (entry(GOOD, active_from=NOW), f"~ {W_GOOD}.active_from: 2027-01-14 08:00:00 UTC -> 2027-01-15 08:00:00 UTC"),
        (entry(GOOD, hot=True), f"+ {W_GOOD}.hot: true (the hot wallet: cold payments to it are top-ups)"),
        (without("whitelist", GOOD), f'- {W_GOOD}.label: "omnibus"'),
        (without("whitelist", GOOD), f"- {W_GOOD}.active_from: 2027-01-14 08:00:00 UTC"),
        (
            replace(BASE, whitelist={**BASE.whitelist, OTHER: WhitelistEntry(OTHER, ("ETH",), "new", NOW)}),
            f'+ {W_OTHER}.label: "new"',
        ),
        # deny list
        (replace(BASE, deny={DENIED: DenyEntry(DENIED, "OFAC")}), f'~ deny.{DENIED}.note: "sanctioned" -> "OFAC"'),
        (replace(BASE, deny={}), f'- deny.{DENIED}.note: "sanctioned"'),
        (replace(BASE, deny={**BASE.deny, OTHER: DenyEntry(OTHER, "")}), f'+ deny.{OTHER}.note: ""'),
        # API keys
        (replace(BASE, api_keys={}), "- api_keys.backend.windows.ETH.1h: 150 ETH"),
        (
            replace(BASE, api_keys={"backend": KeyRule("backend", {"ETH": (Window(3600, 100 * ETH),)})}),
            "~ api_keys.backend.windows.ETH.1h: 150 ETH -> 100 ETH",
        ),
        (
            replace(BASE, api_keys={**BASE.api_keys, "ops": KeyRule("ops", {"USDC": (Window(60, 10**6),)})}),
            "+ api_keys.ops.windows.USDC.1m: 1 USDC",
        ),
        (replace(BASE, api_keys={"backend": KeyRule("backend", {})}), "+ api_keys.backend.windows: none"),
        # governance, batch rules, unfreeze
        (replace(BASE, governance=governance(quorum=3)), "~ governance.quorum: 2 -> 3"),
        (replace(BASE, governance=governance(delay=3600)), "~ governance.activation_delay: 1d -> 1h"),
        (replace(BASE, governance=governance(ADMIN_KEYS[1:])), f'- governance.admins.{KEY0}: "admin0"'),
        (replace(BASE, governance=governance(ADMIN_KEYS)), f'+ governance.admins.{OUTSIDER_KEY}: "admin3"'),
        (
            replace(BASE, governance=replace(BASE.governance, admins=(Admin("mallory", KEY0),))),
            f'~ governance.admins.{KEY0}: "admin0" -> "mallory"',
        ),
        (replace(BASE, batches=BatchRules(max_future=60)), "~ batches.max_future: 5m -> 1m"),
        (replace(BASE, batches=BatchRules(max_lifetime=86400)), "~ batches.max_lifetime: 7d -> 1d"),
        (replace(BASE, batches=BatchRules(max_nonce_gap=2)), "~ batches.max_nonce_gap: 16 -> 2"),
        (replace(BASE, unfreeze="0123456789abcdef"), "+ unfreeze: 0123456789abcdef"),
    ],
)
def test_each_field_shows_its_own_line(new, line):
    lines = changes(BASE, new)
    assert line in lines, "\n".join(lines)
    back = changes(new, BASE)  # the reverse change is shown too
    assert back and not set(back) & {line}


def test_an_unchanged_policy_shows_no_change_and_removals_stay_in_place():
    assert changes(BASE, BASE) == []
    lines = changes(BASE, without("whitelist", GOOD))
    assert [x[:2] for x in lines] == ["- "] * 3
    assert lines[0] == f"- {W_GOOD}.assets: ETH, USDC"
    whole = diff(flatten(BASE), flatten(replace(BASE, deny={})))
    assert whole == [f'- deny.{DENIED}.note: "sanctioned"']


def test_text_from_the_file_is_escaped():
    hostile = entry(GOOD, label="pay \u202eevil\u2066 here\n")
    lines = changes(BASE, hostile)
    assert lines == [f'~ {W_GOOD}.label: "omnibus" -> "pay \\u202eevil\\u2066 here\\x0a"']
    note = changes(BASE, replace(BASE, deny={DENIED: DenyEntry(DENIED, "a\u0085b\\")}))
    assert note == [f'~ deny.{DENIED}.note: "sanctioned" -> "a\\x85b\\\\"']
    renamed = replace(BASE, governance=replace(BASE.governance, admins=(Admin("x\u200by", KEY0),)))
    assert f'+ governance.admins.{KEY0}: "x\\u200by"' not in changes(BASE, renamed)
    assert f'~ governance.admins.{KEY0}: "admin0" -> "x\\u200by"' in changes(BASE, renamed)


GENESIS = parse_genesis(genesis_bytes(governance(), NOW - 10 * 86400))


def test_version_one_is_compared_with_the_genesis_admin_set():
    same = make_bundle(BASE, GENESIS, NOW)
    text = "\n".join(describe_bundle(same, GENESIS.governance, NOW + 90))
    assert "Governance (unchanged): quorum 2 of 3, activation delay 1d" in text
    assert "governance.admins" not in text
    assert "(1m 30s ago by this computer's clock)" in text
    assert "  + assets.ETH.max_per_transfer: 100 ETH" in text and f'  + {W_GOOD}.label: "omnibus"' in text
    assert "  Whitelist: 3 added, 0 removed, 0 changed, 3 in all" in text
    replaced = make_bundle(replace(BASE, governance=governance(ADMIN_KEYS[3:], quorum=1)), GENESIS, NOW)
    lines = describe_bundle(replaced, GENESIS.governance)
    assert "  Governance (CHANGED): quorum 1 of 1, activation delay 1d" in lines
    assert "  ~ governance.quorum: 2 -> 1" in lines
    assert f'  + governance.admins.{OUTSIDER_KEY}: "admin0"' in lines
    for i, key in enumerate(ADMIN_KEYS[:3]):
        assert f'  - governance.admins.{key.verify_key.encode().hex()}: "admin{i}"' in lines


def test_headlines_count_the_whole_new_policy_and_keep_unfreeze_in_capitals():
    first = make_bundle(BASE, GENESIS, NOW)
    nxt = replace(BASE, unfreeze="0123456789abcdef", whitelist={LATER: BASE.whitelist[LATER]}, api_keys={})
    lines = describe_bundle(make_bundle(nxt, first.head(), NOW + 1), BASE)
    assert "UNFREEZES: applying this bundle lifts freeze 0123456789abcdef and payments resume." in lines
    assert (
        "The new policy in all: 2 asset(s), 1 whitelist entry (no hot wallet), 1 on the deny list, 0 API key(s), "
        "quorum 2 of 3" in lines
    )
    assert "  Whitelist: 0 added, 2 removed, 0 changed, 1 in all" in lines
    assert "  API keys: 0 added, 1 removed, 0 changed, 0 in all" in lines
    assert "  Governance (unchanged): quorum 2 of 3, activation delay 1d" in lines
    assert "  Batch rules (unchanged): dated at most 5m ahead, valid at most 7d, at most 16 nonces ahead" in lines


def test_without_a_previous_policy_everything_is_listed():
    lines = describe_bundle(make_bundle(BASE, GENESIS, NOW), None)
    assert "  + governance.quorum: 2" in lines and "  + batches.max_nonce_gap: 16" in lines
    assert not any(line.startswith(("  - ", "  ~ ")) for line in lines)
