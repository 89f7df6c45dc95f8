"""Bitcoin assets in the policy: the chain fields, addresses checked per chain, the canonical form that leaves
Ethereum-only bundles as they were, and the decisions."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from importlib.resources import files

import pytest
from embit import bech32

from policies.canonical import canonical_bytes
from policies.errors import PolicyFileError
from policies.evaluate import BookEntry, Context, Destination, Outcome, Request, Route, evaluate, static_failures
from policies.loader import load_policy_toml, policy_from_canonical, policy_to_canonical
from policies.model import CustomerRules, DenyEntry, HoldRules, Limits, Operator, Window

EXAMPLE = files("policies").joinpath("examples/policy.toml").read_text()
SAT = 10**8
NOW = 4_200_000_000  # after the example's entries activate (2100)


def regtest(version: int, fill: int, size: int = 20) -> str:
    return str(bech32.encode("bcrt", version, [fill] * size))


RESERVE = regtest(0, 0x11)  # P2WPKH
TAPROOT = regtest(1, 0x22, 32)
DENIED_BTC = regtest(0, 0x33, 32)  # P2WSH
STRANGER = regtest(0, 0x44)
MAINNET = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
ETH_ADDRESS = "0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f"

BTC = """
[assets.BTC]
chain = "bitcoin"
network = "regtest"
decimals = 8
max_per_transfer = "50"
hot_limit = "0"
max_fee = "0.01"
max_fee_rate = 200
windows = [{ period = "24h", limit = "100" }]
delay_tiers = [{ at_least = "10", delay = "1h" }]
"""
ENTRIES = f"""
[[whitelist]]
address = "{RESERVE}"
assets = ["BTC"]
label = "reserve"
active_from = 2100-01-01T00:00:00Z

[[whitelist]]
address = "{TAPROOT.upper()}"
assets = ["BTC"]
label = "taproot vault"
active_from = 2100-01-01T00:00:00Z

[[deny]]
address = "{DENIED_BTC}"
note = "sanctioned"
"""


def with_btc(asset: str = BTC, entries: str = ENTRIES) -> str:
    return EXAMPLE + asset + entries


def refused(text: str) -> PolicyFileError:
    with pytest.raises(PolicyFileError) as caught:
        load_policy_toml(text)
    assert caught.value.code == "policy_invalid"
    return caught.value


# -- the model and the canonical form -------------------------------------------------------------------------
def test_a_bitcoin_asset_may_be_paid_hot():
    """The daemon's hot wallet has a Bitcoin account: a hot limit routes small withdrawals to it."""
    policy = load_policy_toml(with_btc(BTC.replace('hot_limit = "0"', 'hot_limit = "0.1"')))
    assert policy.assets["BTC"].hot_limit == SAT // 10


def test_a_bitcoin_asset_compiles_and_round_trips():
    policy = load_policy_toml(with_btc())
    btc = policy.assets["BTC"]
    assert (btc.chain, btc.network, btc.decimals) == ("bitcoin", "regtest", 8)
    assert (btc.max_fee, btc.max_fee_rate, btc.hot_limit, btc.contract) == (SAT // 100, 200, 0, None)
    assert policy.assets["ETH"].chain == "ethereum" and policy.assets["ETH"].network is None
    canonical = policy_to_canonical(policy)
    assert {k: canonical["assets"]["BTC"][k] for k in ("chain", "network", "max_fee", "max_fee_rate")} == {
        "chain": "bitcoin",
        "network": "regtest",
        "max_fee": "1000000",
        "max_fee_rate": 200,
    }
    assert not {"chain", "network", "max_fee", "max_fee_rate"} & set(canonical["assets"]["ETH"])
    assert policy_from_canonical(canonical) == policy
    # the uppercase (QR code) spelling is kept in its canonical, lowercase form
    assert policy.whitelist[TAPROOT].label == "taproot vault" and TAPROOT.upper() not in policy.whitelist


def test_a_policy_without_bitcoin_keeps_its_bytes():
    """The hash of the shipped example as the engine computed it before chains existed: bundles, vectors and
    signatures made then stay valid."""
    canonical = policy_to_canonical(load_policy_toml(EXAMPLE))
    assert not any({"chain", "network", "max_fee", "max_fee_rate"} & set(a) for a in canonical["assets"].values())
    digest = hashlib.sha256(canonical_bytes(canonical)).hexdigest()
    assert digest == "3e2143131b8275f50592cb4e0a13671fda98b2bdfbb9024068aaa08a38b1cfdf"


def test_the_canonical_form_writes_chain_fields_only_for_bitcoin():
    canonical = policy_to_canonical(load_policy_toml(with_btc()))
    canonical["assets"]["ETH"]["chain"] = "ethereum"
    with pytest.raises(PolicyFileError, match=r"assets\.ETH\.chain: is written only"):
        policy_from_canonical(canonical)
    canonical = policy_to_canonical(load_policy_toml(with_btc()))
    taproot = next(e for e in canonical["whitelist"] if e["address"] == TAPROOT)
    taproot["address"] = TAPROOT.upper()
    with pytest.raises(PolicyFileError, match="not in its canonical form"):  # the host may not respell it
        policy_from_canonical(canonical)


@pytest.mark.parametrize(
    ("old", "new", "location", "words"),
    [
        ("decimals = 8", "decimals = 18", "assets.BTC.decimals", "must be 8"),
        ('network = "regtest"\n', "", "assets.BTC.network", "is required"),
        ('network = "regtest"', 'network = "main"', "assets.BTC.network", "unknown network"),
        ('max_fee = "0.01"\n', "", "assets.BTC.max_fee", "is required"),
        ('max_fee = "0.01"', 'max_fee = "0"', "assets.BTC.max_fee", "greater than zero"),
        ('max_fee = "0.01"', 'max_fee = "0.000000001"', "assets.BTC.max_fee", "more than 8 decimal"),
        ("max_fee_rate = 200\n", "", "assets.BTC.max_fee_rate", "is required"),
        ("max_fee_rate = 200", "max_fee_rate = 0", "assets.BTC.max_fee_rate", "between 1 and 10000"),
        ("max_fee_rate = 200", "max_fee_rate = 20000", "assets.BTC.max_fee_rate", "between 1 and 10000"),
        ("max_fee_rate = 200", 'max_fee_rate = "200"', "assets.BTC.max_fee_rate", "must be int"),
        ('chain = "bitcoin"', 'chain = "litecoin"', "assets.BTC.chain", "unknown chain"),
        ('hot_limit = "0"', f'hot_limit = "0"\ncontract = "{ETH_ADDRESS}"', "assets.BTC.contract", "no contract"),
        ('hot_limit = "0"', 'hot_limit = "0"\nhot_min = "2"\nhot_max = "1"', "assets.BTC.hot_max", "greater than"),
        (
            'hot_limit = "0"',
            'hot_limit = "0"\nhot_max = "1"\nhot_max_share = "5"',
            "assets.BTC.hot_max_share",
            "not both",
        ),
    ],
)
def test_bitcoin_asset_mistakes_name_their_location(old, new, location, words):
    assert old in BTC
    error = refused(with_btc(BTC.replace(old, new, 1)))
    assert error.location == location and words in error.message, error.message


@pytest.mark.parametrize("key", ['network = "regtest"', 'max_fee = "0.01"', "max_fee_rate = 5"])
def test_an_ethereum_asset_takes_no_bitcoin_fields(key):
    error = refused(EXAMPLE.replace("decimals = 18", f"decimals = 18\n{key}", 1))
    assert error.location == f"assets.ETH.{key.split()[0]}" and "only for a bitcoin asset" in error.message


def test_one_native_asset_per_chain_and_network():
    second = BTC.replace("[assets.BTC]", "[assets.XBT]")
    error = refused(with_btc(BTC + second))
    assert error.location == "assets.XBT.contract" and "BTC already is" in error.message
    other_network = second.replace('network = "regtest"', 'network = "signet"')
    assert load_policy_toml(with_btc(BTC + other_network)).assets["XBT"].network == "signet"


# -- addresses per chain ----------------------------------------------------------------------------------------
def entry(address: str, assets: str = '"BTC"', hot: bool = False) -> str:
    extra = "hot = true\n" if hot else ""
    when = "2100-01-01T00:00:00Z"
    return f'[[whitelist]]\naddress = "{address}"\nassets = [{assets}]\nlabel = "x"\nactive_from = {when}\n{extra}'


@pytest.mark.parametrize(
    ("address", "assets", "location", "words"),
    [
        (MAINNET, '"BTC"', "whitelist[2].address", "is a mainnet address, not a regtest one"),
        (ETH_ADDRESS, '"BTC"', "whitelist[2].address", "is an Ethereum address, not a Bitcoin one"),
        (RESERVE, '"ETH"', "whitelist[2].address", "is a Bitcoin address, not an Ethereum one"),
        (RESERVE, '"BTC", "ETH"', "whitelist[2].assets[1]", "write one entry per chain"),
        (ETH_ADDRESS, '"ETH", "BTC"', "whitelist[2].assets[1]", "write one entry per chain"),
        (RESERVE[:6] + RESERVE[6:].upper(), '"BTC"', "whitelist[2].address", "mixes upper and lower case"),
    ],
)
def test_a_whitelist_address_is_checked_for_the_chain_of_its_assets(address, assets, location, words):
    error = refused(with_btc(entries=entry(address, assets)))
    assert error.location == location and words in error.message, error.message


BAND = 'hot_limit = "0"\nhot_min = "1"\nhot_max = "3"\nhot_topup = { period = "24h", limit = "2" }\n'
FREEZE = 'auto_freeze = { period = "24h", limit = "5" }\n'


def test_a_bitcoin_asset_has_the_hot_band_top_up_and_automatic_freeze_of_an_ethereum_one():
    """Issue 18: sweeps to the cold descriptor, top-ups from it, and the outflow freeze work for BTC as for ETH."""
    policy = load_policy_toml(with_btc(BTC.replace('hot_limit = "0"\n', BAND + FREEZE, 1), entry(RESERVE, hot=True)))
    rule = policy.assets["BTC"]
    assert (rule.hot_min, rule.hot_max) == (SAT, 3 * SAT)
    assert rule.hot_topup == Window(86400, 2 * SAT) and rule.auto_freeze == Window(86400, 5 * SAT)
    assert policy.hot_entry is not None and policy.hot_entry.address == RESERVE
    shares = load_policy_toml(with_btc(BTC.replace('hot_limit = "0"', 'hot_limit = "0"\nhot_max_share = "5"', 1)))
    assert shares.assets["BTC"].hot_max_share == 500
    assert policy_from_canonical(policy_to_canonical(policy)) == policy  # the band round-trips through a bundle


def test_one_hot_wallet_entry_per_chain():
    """Ethereum's hot wallet and Bitcoin's are each whitelisted as such; a second one on the same chain is refused
    (which transfers are top-ups, and so capped by ``hot_topup``, must be unambiguous)."""
    eth_topup = EXAMPLE.replace('hot_max = "60"', 'hot_topup = { period = "24h", limit = "40" }\nhot_max = "60"', 1)
    btc = BTC.replace('hot_limit = "0"\n', BAND, 1)
    eth_hot = "0x" + "12" * 20
    policy = load_policy_toml(eth_topup + btc + entry(RESERVE, hot=True) + entry(eth_hot, '"ETH"', hot=True))
    assert policy.is_hot(RESERVE) and policy.is_hot(eth_hot) and not policy.is_hot(STRANGER)
    error = refused(eth_topup + btc + entry(RESERVE, hot=True) + entry(TAPROOT, hot=True))
    assert error.location == "whitelist[3].hot" and "only one whitelist entry per chain" in error.message


def test_a_bitcoin_hot_wallet_entry_keeps_the_top_up_rules():
    """The hot entry takes BTC only with a top-up cap (a compromised host holds the hot key), and within the band."""
    error = refused(with_btc(entries=entry(RESERVE, hot=True)))
    assert error.location == "assets.BTC.hot_topup" and "is required" in error.message
    over = BAND.replace('limit = "2"', 'limit = "2.5"')
    error = refused(with_btc(BTC.replace('hot_limit = "0"\n', over, 1), entry(RESERVE, hot=True)))
    assert error.location == "assets.BTC.hot_topup.limit" and "at most hot_max - hot_min" in error.message


def test_a_deny_entry_may_be_an_address_of_any_chain_the_policy_uses():
    deny = f'[[deny]]\naddress = "{DENIED_BTC.upper()}"\n'
    policy = load_policy_toml(with_btc(entries=deny))
    assert set(policy.deny) == {"0xE52d9C508C502347344D8C07Ad91Cbd6068Afc75", DENIED_BTC}
    error = refused(with_btc(entries=f'[[deny]]\naddress = "{MAINNET}"\n'))
    assert error.location == "deny[1].address" and "is a mainnet address, not a regtest one" in error.message
    error = refused(EXAMPLE + deny)  # no bitcoin asset: no bitcoin address
    assert error.location == "deny[1].address" and "is a Bitcoin address, not an Ethereum one" in error.message
    error = refused(with_btc(entries='[[deny]]\naddress = "bc1 nonsense"\n'))
    assert error.location == "deny[1].address" and "not an Ethereum address" in error.message
    assert "not a valid bech32 address" in error.message


# -- decisions --------------------------------------------------------------------------------------------------
POLICY = load_policy_toml(with_btc())


def decide(destination: str, amount: int = SAT, customer: str | None = None, **ctx: object):
    context = Context(now=NOW, hot_free_balance=10**30, **ctx)  # type: ignore[arg-type]
    return evaluate(POLICY, Request("BTC", amount, destination, "backend", customer), context)


def test_a_whitelisted_bitcoin_withdrawal_goes_cold():
    d = decide(RESERVE)
    assert d.outcome == Outcome.ALLOW and d.route == Route.COLD
    assert [r.rule for r in d.reasons] == ["asset", "deny_list", "whitelist", "max_per_transfer", "window:1d", "route"]
    assert decide(TAPROOT, 10 * SAT).outcome == Outcome.DELAY
    assert decide(RESERVE, 50 * SAT + 1).failed[0].rule == "max_per_transfer"


def test_destinations_are_compared_in_canonical_form():
    assert decide(TAPROOT.upper()).outcome == Outcome.ALLOW
    denied = decide(DENIED_BTC.upper())
    assert denied.outcome == Outcome.REJECT and [r.rule for r in denied.failed] == ["deny_list", "whitelist"]


@pytest.mark.parametrize(
    ("destination", "words"),
    [
        (ETH_ADDRESS, "is an Ethereum address"),
        (MAINNET, "is a mainnet address, not a regtest one"),
        (RESERVE[:6] + RESERVE[6:].upper(), "mixes upper and lower case"),
        ("", "not a Bitcoin address"),
    ],
)
def test_a_destination_of_another_chain_is_refused_first(destination, words):
    d = decide(destination)
    assert d.outcome == Outcome.REJECT and [r.rule for r in d.reasons] == ["asset", "destination"]
    assert "not a bitcoin regtest address" in d.reasons[1].message and words in d.reasons[1].message
    assert [r.rule for r in static_failures(POLICY, "BTC", SAT, destination, NOW)] == ["destination"]


def test_a_bitcoin_destination_for_an_ethereum_asset_is_refused():
    d = evaluate(POLICY, Request("ETH", 1, RESERVE, "backend"), Context(now=NOW))
    assert [r.rule for r in d.failed] == ["destination"] and "not a ethereum address" in d.failed[0].message


def test_customer_payouts_work_for_bitcoin():
    btc = replace(POLICY.assets["BTC"], unlisted=Limits(SAT, (Window(86400, 2 * SAT),)))
    operators = (Operator("op0", "11" * 32), Operator("op1", "22" * 32))
    policy = replace(
        POLICY,
        assets={**POLICY.assets, "BTC": btc},
        customers=CustomerRules(limits={"BTC": Limits(SAT // 2, ())}),
        holds=HoldRules(similar_to_denied=True),
        operators=operators,
    )
    policy = replace(policy, deny={**policy.deny, DENIED_BTC: DenyEntry(DENIED_BTC, "sanctioned")})

    def payout(destination: str, amount: int = SAT // 4, **ctx: object):
        context = Context(now=NOW, **ctx)  # type: ignore[arg-type]
        return evaluate(policy, Request("BTC", amount, destination, "backend", "cust-1"), context)

    unlisted = payout(STRANGER.upper())
    assert unlisted.outcome == Outcome.ALLOW and unlisted.destination == Destination.UNLISTED
    assert unlisted.route == Route.COLD
    assert payout(STRANGER, SAT // 2 + 1).failed[0].rule == "customer_max"
    booked = payout(STRANGER, book=BookEntry(NOW - 10, NOW - 5))
    assert booked.destination == Destination.ADDRESS_BOOK and booked.outcome == Outcome.ALLOW
    # a look-alike of a denied bech32 address: the same 4 characters after "bcrt1q" and the same last 4 (only
    # the rule's strings are compared, so the look-alikes here need no valid checksum)
    body = STRANGER[len("bcrt1q") :]
    twin = "bcrt1q" + body[:4] + "q" * (len(body) - 8) + body[-4:]
    prefix_only = "bcrt1q" + "qqqq" + body[4:]  # shares what every regtest P2WPKH address shares, and the tail
    for denied, held in ((twin, True), (prefix_only, False)):
        policy = replace(policy, deny={denied: DenyEntry(denied, "sanctioned")})
        decision = payout(STRANGER)
        assert (decision.outcome == Outcome.HOLD) is held, decision.reasons
        if held:
            assert [r.rule for r in decision.holds] == ["hold:similar_to_denied"]
