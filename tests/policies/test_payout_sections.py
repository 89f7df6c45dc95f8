"""The customer-payout sections of a policy file (issue 16): what is accepted, every refusal with its location,
the canonical form they round-trip through, and the bytes of policies without them, which must not change."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from policies.bundle import genesis_bytes, make_bundle, parse_bundle, parse_genesis
from policies.canonical import canonical_bytes
from policies.errors import PolicyFileError
from policies.loader import load_policy_toml, policy_from_canonical, policy_to_canonical
from policies.model import Backend, CustomerRules, HoldRules, Limits, Operator, Window
from tests.fuzzing import FUZZ, only_our_errors
from tests.policies.helpers import NOW, governance
from tests.policies.test_fuzz_loader import edited

# The shipped example without its commented-out payout sections (whose lines the edits below must not hit).
EXAMPLE = files("policies").joinpath("examples/policy.toml").read_text().split("# Customer payouts", 1)[0]
ETH, USDC = 10**18, 10**6
OLGA, PETER, BACKEND, OTHER = (SigningKey(bytes([i]) * 32).verify_key.encode().hex() for i in (21, 22, 23, 24))
UNLISTED = 'unlisted = { max_per_transfer = "1", windows = [{ period = "24h", limit = "5" }] }'
SOURCES = 'sources = ["2001:DB8::/48", "10.20.0.0/16", "192.0.2.7"]'
CUSTOMERS = """
[customers]
address_lock = "12h"
[customers.limits.ETH]
max_per_transfer = "10"
windows = [{ period = "24h", limit = "50" }]
[customers.limits.USDC]
windows = [{ period = "24h", limit = "5000" }, { period = "1h", limit = "1000" }]
[customers.overrides."cust-42".ETH]
max_per_transfer = "100"
windows = [{ period = "24h", limit = "500" }]
[customers.overrides."acme:desk@eu.1".USDC]
max_per_transfer = "2500.5"
"""
HOLDS = """
[holds]
first_payout = true
median_multiple = 10
young_entry = "7d"
velocity_share = 80
similar_to_denied = true
"""
PEOPLE = f"""
[[operators]]
name = "peter"
key = "{PETER}"
[[operators]]
name = "olga"
key = "{OLGA}"
[[backends]]
name = "backend"
key = "{BACKEND}"
"""


def full(
    customers: str = CUSTOMERS,
    holds: str = HOLDS,
    people: str = PEOPLE,
    unlisted: str = UNLISTED,
    sources: str = SOURCES,
) -> str:
    """The shipped example with every payout section: ETH allows unlisted payouts, the backend key its sources."""
    text = EXAMPLE.replace('hot_max = "60"', f'hot_max = "60"\n{unlisted}', 1)
    text = text.replace("[api_keys.backend]\n", f"[api_keys.backend]\n{sources}\n", 1)
    return text + customers + holds + people


def test_every_payout_section_compiles():
    p = load_policy_toml(full())
    assert p.assets["ETH"].unlisted == Limits(ETH, (Window(86400, 5 * ETH),))
    assert p.assets["USDC"].unlisted is None
    assert p.api_keys["backend"].sources == ("10.20.0.0/16", "192.0.2.7/32", "2001:db8::/48")
    assert p.customers == CustomerRules(
        address_lock=12 * 3600,
        limits={
            "ETH": Limits(10 * ETH, (Window(86400, 50 * ETH),)),
            "USDC": Limits(None, (Window(3600, 1000 * USDC), Window(86400, 5000 * USDC))),
        },
        overrides={
            "cust-42": {"ETH": Limits(100 * ETH, (Window(86400, 500 * ETH),))},
            "acme:desk@eu.1": {"USDC": Limits(2_500_500_000)},
        },
    )
    assert p.customers.limits_for("cust-42", "ETH") == Limits(100 * ETH, (Window(86400, 500 * ETH),))
    assert p.customers.limits_for("cust-42", "USDC") == p.customers.limits["USDC"]  # override is per asset
    assert p.customers.limits_for("someone", "ETH") == p.customers.limits["ETH"]
    assert p.holds == HoldRules(True, 10, 7 * 86400, 80, True)
    assert p.operators == (Operator("olga", OLGA), Operator("peter", PETER))  # sorted by name
    assert p.backends == (Backend("backend", BACKEND),)


def test_the_payout_sections_round_trip_through_the_canonical_form_and_a_bundle():
    p = load_policy_toml(full())
    canonical = policy_to_canonical(p)
    assert policy_from_canonical(canonical) == p
    assert policy_from_canonical(json.loads(canonical_bytes(canonical))) == p
    assert canonical["assets"]["ETH"]["unlisted"] == {
        "max_per_transfer": str(ETH),
        "windows": [{"period": 86400, "limit": str(5 * ETH)}],
    }
    assert "unlisted" not in canonical["assets"]["USDC"]
    assert canonical["api_keys"]["backend"]["sources"] == ["10.20.0.0/16", "192.0.2.7/32", "2001:db8::/48"]
    assert canonical["customers"]["address_lock"] == 43200
    assert canonical["customers"]["overrides"]["acme:desk@eu.1"] == {
        "USDC": {"max_per_transfer": "2500500000", "windows": []}
    }
    assert canonical["holds"] == {
        "first_payout": True,
        "median_multiple": 10,
        "young_entry": 604800,
        "velocity_share": 80,
        "similar_to_denied": True,
    }
    assert canonical["operators"] == [{"name": "olga", "key": OLGA}, {"name": "peter", "key": PETER}]
    assert canonical["backends"] == [{"name": "backend", "key": BACKEND}]
    genesis = parse_genesis(genesis_bytes(governance(), NOW - 86400))
    bundle = make_bundle(p, genesis, NOW)
    assert parse_bundle(bundle.raw).policy == p


@pytest.mark.parametrize(
    "text",
    [
        EXAMPLE + '\n[customers]\naddress_lock = "24h"\n',  # the default lock, written out
        EXAMPLE + "\n[customers]\n",
        EXAMPLE + "\n[holds]\nfirst_payout = false\nsimilar_to_denied = false\n",
    ],
)
def test_defaults_written_out_change_no_byte_of_the_canonical_form(text):
    plain = canonical_bytes(policy_to_canonical(load_policy_toml(EXAMPLE)))
    assert canonical_bytes(policy_to_canonical(load_policy_toml(text))) == plain


def test_a_policy_without_the_new_sections_writes_none_of_their_keys():
    canonical = policy_to_canonical(load_policy_toml(EXAMPLE))
    assert not {"customers", "holds", "operators", "backends"} & set(canonical)
    assert all("unlisted" not in a for a in canonical["assets"].values())
    assert all(set(k) == {"windows"} for k in canonical["api_keys"].values())


def edit(old: str, new: str, text: str | None = None) -> str:
    text = full() if text is None else text
    assert old in text, old
    return text.replace(old, new, 1)


KEY_OFF_CURVE = "02" + "00" * 31
KEY_SMALL_ORDER = "00" * 32


@pytest.mark.parametrize(
    ("text", "location", "words"),
    [
        # [customers]
        (edit('address_lock = "12h"', 'address_lock = "0s"'), "customers.address_lock", "not a period"),
        (edit('address_lock = "12h"', 'address_lock = "3651d"'), "customers.address_lock", "at most 3650d"),
        (edit('address_lock = "12h"', "address_lock = 43200"), "customers.address_lock", "not a period"),
        (edit("address_lock", "lock"), "customers.lock", "unknown key"),
        (edit("[customers.limits.USDC]", "[customers.limits.DOGE]"), "customers.limits.DOGE", "unknown asset DOGE"),
        (
            edit('windows = [{ period = "24h", limit = "5000" }, { period = "1h", limit = "1000" }]', ""),
            "customers.limits.USDC",
            "must set max_per_transfer or windows",
        ),
        (edit('max_per_transfer = "10"', 'max_per_transfer = "0"'), "customers.limits.ETH.max_per_transfer", "zero"),
        (
            edit('max_per_transfer = "10"', 'max_per_transfer = "0.0000000000000000001"'),
            "customers.limits.ETH.max_per_transfer",
            "more than 18 decimal",
        ),
        (
            edit('{ period = "1h", limit = "1000" }', '{ period = "1d", limit = "1000" }'),
            "customers.limits.USDC.windows[1]",
            "duplicate period",
        ),
        (
            edit('max_per_transfer = "10"', 'max_per_transfer = "10"\nspeed = 1'),
            "customers.limits.ETH.speed",
            "unknown",
        ),
        (edit('"cust-42"', '"cust 42"'), "customers.overrides.cust 42", "customer ids are 1 to 64"),
        (edit('"cust-42"', '"-cust"'), "customers.overrides.-cust", "customer ids are 1 to 64"),
        (edit('"cust-42"', '"' + "c" * 65 + '"'), "customers.overrides." + "c" * 65, "customer ids are 1 to 64"),
        (edit('"cust-42".ETH]', '"cust-42".BTC]'), "customers.overrides.cust-42.BTC", "unknown asset BTC"),
        (
            edit(
                '[customers.overrides."cust-42".ETH]',
                '[customers.overrides."cust-43"]\n[customers.overrides."cust-42".ETH]',
            ),
            "customers.overrides.cust-43",
            "must name at least one asset",
        ),
        # an asset's unlisted limits
        (
            edit(UNLISTED, 'unlisted = { max_per_transfer = "1" }'),
            "assets.ETH.unlisted.windows",
            "is required",
        ),
        (
            edit(UNLISTED, 'unlisted = { max_per_transfer = "1", windows = [] }'),
            "assets.ETH.unlisted.windows",
            "at least one window",
        ),
        (
            edit(UNLISTED, 'unlisted = { windows = [{ period = "24h", limit = "5" }] }'),
            "assets.ETH.unlisted.max_per_transfer",
            "is required",
        ),
        (edit(UNLISTED, "unlisted = true"), "assets.ETH.unlisted", "must be a table"),
        (
            edit('limit = "5" }] }', 'limit = "-5" }] }'),
            "assets.ETH.unlisted.windows[0].limit",
            "not a plain decimal",
        ),
        # [holds]
        (edit("median_multiple = 10", "median_multiple = 0"), "holds.median_multiple", "between 1 and 1000"),
        (edit("median_multiple = 10", "median_multiple = 1001"), "holds.median_multiple", "between 1 and 1000"),
        (edit("velocity_share = 80", "velocity_share = 101"), "holds.velocity_share", "between 1 and 100"),
        (edit("velocity_share = 80", "velocity_share = 0"), "holds.velocity_share", "between 1 and 100"),
        (edit("velocity_share = 80", 'velocity_share = "80"'), "holds.velocity_share", "must be int"),
        (edit("velocity_share = 80", "velocity_share = 80.5"), "holds.velocity_share", "must be int"),
        (edit('young_entry = "7d"', 'young_entry = "7 days"'), "holds.young_entry", "not a period"),
        (edit("first_payout = true", 'first_payout = "yes"'), "holds.first_payout", "must be bool"),
        (edit("similar_to_denied = true", "similar_to_denied = 1"), "holds.similar_to_denied", "must be bool"),
        (edit("first_payout = true", "first_payouts = true"), "holds.first_payouts", "unknown key"),
        (
            full(people=f'[[operators]]\nname = "olga"\nkey = "{OLGA}"\n'),
            "holds",
            "needs at least two [[operators]]",
        ),
        (full(people=""), "holds", "needs at least two [[operators]]"),
        # [[operators]] and [[backends]]
        (edit('name = "peter"', 'name = "olga"'), "operators[1]", "duplicate operator name olga"),
        (edit(f'key = "{PETER}"', f'key = "{OLGA}"'), "operators[1]", "duplicate operator key"),
        (edit(f'key = "{PETER}"', f'key = "{PETER.upper()}"'), "operators[0].key", "Ed25519 public key (64 hex"),
        (edit(f'key = "{PETER}"', f'key = "{PETER[:-2]}"'), "operators[0].key", "Ed25519 public key (64 hex"),
        (edit(f'key = "{PETER}"', f'key = "{KEY_OFF_CURVE}"'), "operators[0].key", "not a point of the curve"),
        (edit(f'key = "{PETER}"', f'key = "{KEY_SMALL_ORDER}"'), "operators[0].key", "not a point of the curve"),
        (edit('name = "peter"', 'name = "Peter"'), "operators[0].name", "not a valid operator name"),
        (edit(f'key = "{PETER}"\n', ""), "operators[0].key", "is required"),
        (edit(f'key = "{PETER}"', f'key = "{PETER}"\nrole = "boss"'), "operators[0].role", "unknown key"),
        (edit('name = "backend"', 'name = "back end"'), "backends[0].name", "not a valid backend name"),
        (edit(f'key = "{BACKEND}"', f'key = "{KEY_OFF_CURVE}"'), "backends[0].key", "not a point of the curve"),
        (
            full(people=PEOPLE + f'[[backends]]\nname = "backend"\nkey = "{OTHER}"\n'),
            "backends[1]",
            "duplicate backend name backend",
        ),
        (
            full(people=PEOPLE + f'[[backends]]\nname = "ops"\nkey = "{BACKEND}"\n'),
            "backends[1]",
            "duplicate backend key",
        ),
        (
            edit(f'key = "{PETER}"', f'key = "{BACKEND}"'),
            "operators[1].key",  # sorted by name: olga, peter
            "is also the key of backend backend",
        ),
        (EXAMPLE + '\noperators = [{ name = "olga", key = "x" }]\n', "api_keys.backend.operators", "unknown key"),
        # an API key's sources
        (edit(SOURCES, 'sources = ["10.20.1.0/16"]'), "api_keys.backend.sources[0]", "has host bits set"),
        (edit(SOURCES, 'sources = ["10.20.0.0/33"]'), "api_keys.backend.sources[0]", "10.20.0.0/16 or 2001:db8"),
        (edit(SOURCES, 'sources = ["10.20.0.0/16", "example.com"]'), "api_keys.backend.sources[1]", "network"),
        (edit(SOURCES, 'sources = ["2001:db8::1/48"]'), "api_keys.backend.sources[0]", "has host bits set"),
        (edit(SOURCES, 'sources = ["fe80::%eth0/64"]'), "api_keys.backend.sources[0]", "zone"),
        (edit(SOURCES, "sources = []"), "api_keys.backend.sources", "at least one network"),
        (edit(SOURCES, 'sources = "10.20.0.0/16"'), "api_keys.backend.sources", "must be list"),
        (edit(SOURCES, "sources = [167772160]"), "api_keys.backend.sources[0]", "must be str"),
        (
            edit(SOURCES, 'sources = ["10.20.0.0/16", "10.20.0.0/255.255.0.0"]'),
            "api_keys.backend.sources[1]",
            "duplicate network 10.20.0.0/16",
        ),
        # admins are held to the same key check
        (
            EXAMPLE.replace("8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c", KEY_OFF_CURVE),
            "governance.admins[0].key",
            "not a point of the curve",
        ),
    ],
)
def test_payout_section_mistakes_are_reported_with_their_location(text, location, words):
    with pytest.raises(PolicyFileError) as info:
        load_policy_toml(text)
    assert info.value.location == location, info.value.message
    assert words in info.value.message


def canonical_of(text: str | None = None) -> dict:
    return policy_to_canonical(load_policy_toml(text or full()))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda c: c.update(customers={"address_lock": 86400, "limits": {}, "overrides": {}}), "differs from the def"),
        (lambda c: c["customers"].pop("overrides"), "customers.overrides: is required"),
        (lambda c: c["customers"].update(address_lock="12h"), "must be int"),
        (lambda c: c.update(holds=dict.fromkeys(c["holds"])), "holds.first_payout: must be bool"),
        (lambda c: c["holds"].pop("young_entry"), "holds.young_entry: is required"),
        (
            lambda c: c["holds"].update(
                first_payout=False, median_multiple=None, young_entry=None, velocity_share=None, similar_to_denied=False
            ),
            "holds: is written only when a hold rule is on",
        ),
        (lambda c: c.update(backends=[]), "backends: is written only when not empty"),
        (lambda c: c["operators"].reverse(), "canonical order"),
        (lambda c: c["api_keys"]["backend"].update(sources=["2001:DB8::/48"]), "not in normal form (2001:db8::/48)"),
        (lambda c: c["api_keys"]["backend"]["sources"].reverse(), "canonical order"),
        (lambda c: c["api_keys"]["backend"].update(sources=[]), "at least one network"),
        (lambda c: c["assets"]["ETH"]["unlisted"].pop("max_per_transfer"), "max_per_transfer: is required"),
        (lambda c: c["assets"]["ETH"]["unlisted"].update(max_per_transfer="1.5"), "not an amount in base units"),
        (
            lambda c: c["customers"]["limits"]["USDC"].update(max_per_transfer=None),
            "max_per_transfer: None is not an amount",
        ),
    ],
)
def test_the_canonical_form_has_one_spelling(change, words):
    canonical = canonical_of()
    change(canonical)
    with pytest.raises(PolicyFileError) as info:
        policy_from_canonical(canonical)
    assert words in str(info.value)


FULL = full()


@FUZZ
@given(edited(FULL))
def test_fuzzed_payout_files_give_a_policy_or_a_policy_error(text):
    only_our_errors(load_policy_toml, text)


@FUZZ
@given(edited(json.dumps(policy_to_canonical(load_policy_toml(FULL))).replace(",", ",\n")))
def test_fuzzed_canonical_payout_sections_give_a_policy_or_a_policy_error(text):
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return
    only_our_errors(policy_from_canonical, data)


@given(st.sampled_from(["10.0.0.0/8", "0.0.0.0/0", "::/0", "2001:db8:0:0:0:0:0:0/32", "::ffff:10.0.0.0/104"]))
def test_any_valid_network_round_trips_in_its_normal_form(network):
    p = load_policy_toml(edit(SOURCES, f'sources = ["{network}"]'))
    assert policy_from_canonical(policy_to_canonical(p)) == p
