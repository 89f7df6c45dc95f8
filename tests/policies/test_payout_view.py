"""What an admin reads of the customer-payout sections (issue 16) before signing a bundle: ``signer.policyview``
shows every field of them, diffs each one, and escapes every string from the file. (These sit with the policy
tests because the sections are the policy's; tests/signer/test_policyview.py covers the rest of the screen.)"""

from __future__ import annotations

from dataclasses import replace

import pytest
from nacl.signing import SigningKey

from policies.bundle import genesis_bytes, make_bundle, parse_genesis
from policies.model import Backend, CustomerRules, HoldRules, KeyRule, Limits, Operator, Policy, Window
from signer.policyview import describe_bundle, diff, flatten
from tests.policies.helpers import ETH, NOW, VIP, governance, payout_policy, policy

BASE = payout_policy(HoldRules(first_payout=True, velocity_share=80))
OP0, OP1 = (o.key for o in BASE.operators)
BACKEND = BASE.backends[0].key
NEW_KEY = SigningKey(bytes([50]) * 32).verify_key.encode().hex()


def changes(old: Policy, new: Policy) -> list[str]:
    return diff(flatten(old), flatten(new))


def eth(**changes: object) -> Policy:
    return replace(BASE, assets={**BASE.assets, "ETH": replace(BASE.assets["ETH"], **changes)})


def customers(**changes: object) -> Policy:
    return replace(BASE, customers=replace(BASE.customers, **changes))


def key(sources: tuple[str, ...]) -> Policy:
    return replace(BASE, api_keys={"backend": replace(BASE.api_keys["backend"], sources=sources)})


UNLISTED_ON = "+ assets.ETH.unlisted: allowed (payouts to addresses neither whitelisted nor in an address book)"


@pytest.mark.parametrize(
    ("new", "line"),
    [
        # an asset's unlisted payouts
        (eth(unlisted=None), "- assets.ETH.unlisted.max_per_transfer: 2 ETH"),
        (eth(unlisted=None), "- assets.ETH.unlisted.windows.1d: 5 ETH"),
        (
            eth(unlisted=Limits(2 * ETH, (Window(86400, 5000 * ETH),))),
            "~ assets.ETH.unlisted.windows.1d: 5 ETH -> 5000 ETH",
        ),
        (
            eth(unlisted=Limits(10**24, BASE.assets["ETH"].unlisted.windows)),
            "~ assets.ETH.unlisted.max_per_transfer: 2 ETH -> 1000000 ETH",
        ),
        (
            eth(unlisted=Limits(2 * ETH, (Window(3600, ETH), Window(86400, 5 * ETH)))),
            "+ assets.ETH.unlisted.windows.1h: 1 ETH",
        ),
        # [customers]
        (customers(address_lock=3600), "~ customers.address_lock: 1d -> 1h"),
        (customers(limits={}), "- customers.limits.ETH.max_per_transfer: 10 ETH"),
        (
            customers(limits={"ETH": Limits(10 * ETH, (Window(3600, 200 * ETH), Window(86400, 50 * ETH)))}),
            "~ customers.limits.ETH.windows.1h: 20 ETH -> 200 ETH",
        ),
        (
            customers(limits={**BASE.customers.limits, "USDC": Limits(10**6)}),
            "+ customers.limits.USDC.max_per_transfer: 1 USDC",
        ),
        (customers(overrides={}), f"- customers.overrides.{VIP}.ETH.windows.1d: 500 ETH"),
        (
            customers(overrides={**BASE.customers.overrides, "whale": {"ETH": Limits(None, (Window(60, 10**30),))}}),
            "+ customers.overrides.whale.ETH.windows.1m: 1000000000000 ETH",
        ),
        # [holds]: only the rules that are on have a line
        (
            replace(BASE, holds=HoldRules(velocity_share=80)),
            "- holds.first_payout: on (a customer's first payout to an address is held)",
        ),
        (
            replace(BASE, holds=HoldRules(True, velocity_share=95)),
            "~ holds.velocity_share: 80% (held when a customer window would reach it) -> 95% (held when a customer "
            "window would reach it)",
        ),
        (
            replace(BASE, holds=HoldRules(True, 10, velocity_share=80)),
            "+ holds.median_multiple: 10 (held at this multiple of the 30-day median)",
        ),
        (
            replace(BASE, holds=HoldRules(True, None, 7 * 86400, 80)),
            "+ holds.young_entry: 7d (held while the entry is younger)",
        ),
        (
            replace(BASE, holds=HoldRules(True, None, None, 80, True)),
            "+ holds.similar_to_denied: on (held when first and last 4 hex digits match a denied address)",
        ),
        # operators and backends, keyed by public key like the admins
        (replace(BASE, operators=(*BASE.operators, Operator("mallory", NEW_KEY))), f'+ operators.{NEW_KEY}: "mallory"'),
        (replace(BASE, operators=BASE.operators[1:]), f'- operators.{OP0}: "op0"'),
        (
            replace(BASE, operators=(Operator("mallory", OP0), BASE.operators[1])),
            f'~ operators.{OP0}: "op0" -> "mallory"',
        ),
        (replace(BASE, backends=(*BASE.backends, Backend("ops", NEW_KEY))), f'+ backends.{NEW_KEY}: "ops"'),
        (replace(BASE, backends=(Backend("backend", NEW_KEY),)), f'- backends.{BACKEND}: "backend"'),
        (replace(BASE, backends=(Backend("backend", NEW_KEY),)), f'+ backends.{NEW_KEY}: "backend"'),
        # an API key's source networks
        (key(("10.20.0.0/16",)), "+ api_keys.backend.sources: 10.20.0.0/16"),
    ],
)
def test_each_payout_field_shows_its_own_line(new, line):
    lines = changes(BASE, new)
    assert line in lines, "\n".join(lines)
    assert changes(new, BASE)  # and the way back


def test_unlisted_payouts_turned_on_show_a_line_of_their_own():
    closed = eth(unlisted=None)
    assert UNLISTED_ON in changes(closed, BASE)
    assert "+ assets.ETH.unlisted.max_per_transfer: 2 ETH" in changes(closed, BASE)


def test_source_networks_widened_or_dropped_are_shown():
    narrow = key(("10.20.0.0/16",))
    assert changes(narrow, key(("0.0.0.0/0", "10.20.0.0/16"))) == [
        "~ api_keys.backend.sources: 10.20.0.0/16 -> 0.0.0.0/0, 10.20.0.0/16"
    ]
    assert changes(narrow, key(())) == ["- api_keys.backend.sources: 10.20.0.0/16"]
    only_sources = replace(BASE, api_keys={"ops": KeyRule("ops", {}, ("2001:db8::/48",))})
    assert ("api_keys.ops.sources", "2001:db8::/48") in flatten(only_sources)
    assert ("api_keys.ops.windows", "none") in flatten(only_sources)


def test_names_and_ids_from_the_file_are_escaped():
    hostile = replace(
        BASE,
        operators=(Operator("olga\u202e", OP0), BASE.operators[1]),
        backends=(Backend("back\nend", BACKEND),),
        customers=replace(BASE.customers, overrides={"c\u2066x": {"ETH": Limits(ETH)}}),
    )
    lines = changes(BASE, hostile)
    assert f'~ operators.{OP0}: "op0" -> "olga\\u202e"' in lines
    assert f'~ backends.{BACKEND}: "backend" -> "back\\x0aend"' in lines
    assert "+ customers.overrides.c\\u2066x.ETH.max_per_transfer: 1 ETH" in lines
    assert not any(c in line for line in lines for c in "\u202e\u2066\n")


def test_a_policy_without_the_payout_sections_shows_only_the_default_lock():
    plain = policy()
    new = [path for path, _ in flatten(plain) if path.split(".")[0] in {"customers", "holds", "operators", "backends"}]
    assert new == ["customers.address_lock"]
    assert not any(".unlisted" in path or path.endswith(".sources") for path, _ in flatten(plain))


GENESIS = parse_genesis(genesis_bytes(governance(), NOW - 10 * 86400))


def test_the_review_screen_counts_operators_and_backends_and_summarises_the_rules():
    first = make_bundle(policy(), GENESIS, NOW)
    lines = describe_bundle(make_bundle(BASE, first.head(), NOW + 1), policy())
    assert "  Operators: 2 added, 0 removed, 0 changed, 2 in all" in lines
    assert "  Backends: 1 added, 0 removed, 0 changed, 1 in all" in lines
    assert "  Customer rules (CHANGED): address lock 1d, limits for 1 asset(s), overrides for 1 customer(s)" in lines
    assert "  Hold rules (CHANGED): first payout, 80% of a customer window" in lines
    assert "  Unlisted payouts: allowed for ETH" in lines
    assert "  " + UNLISTED_ON in lines
    assert f'  + operators.{OP1}: "op1"' in lines and f'  + backends.{BACKEND}: "backend"' in lines
    same = describe_bundle(make_bundle(policy(), first.head(), NOW + 1), policy())
    assert "  Hold rules (unchanged): none" in same
    assert "  Customer rules (unchanged): address lock 1d, limits for 0 asset(s), overrides for 0 customer(s)" in same
    assert "  Unlisted payouts: refused for every asset" in same
    assert "  Operators: 0 added, 0 removed, 0 changed, 0 in all" in same


def test_every_hold_rule_is_named_in_the_summary():
    every = replace(BASE, holds=HoldRules(True, 10, 7 * 86400, 80, True))
    lines = describe_bundle(make_bundle(every, GENESIS, NOW), None)
    assert (
        "  Hold rules: first payout, 10x the 30-day median, address-book entry younger than 7d, "
        "80% of a customer window, similar to a denied address"
    ) in lines


def test_default_customer_rules_are_what_an_old_policy_has():
    assert replace(policy(), customers=CustomerRules()) == policy()
