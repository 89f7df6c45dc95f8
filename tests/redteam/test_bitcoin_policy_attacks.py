"""The compromised host (or a careless admin) against a policy with a Bitcoin asset. The host writes any bundle
it likes, as canonical JSON, and hands it to the admins' real ``signer`` CLI: it must refuse it with
``policy_invalid``, naming the field and the reason, whether to review it or to accept it with a quorum of
signatures. The admin's own file is refused by the loader with the same code and words.

Each attack aims at the rules of issue 18: every address valid for its asset's chain and network, in its one
canonical form, no spending to an address no wallet can spend from, and no hot band, top-up or automatic freeze
for the Bitcoin hot wallet (it pays up to the asset's hot_limit, and is funded by hand)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from embit import bech32

from policies.bundle import make_bundle, sign_bundle
from policies.canonical import canonical_bytes
from policies.errors import PolicyFileError
from policies.loader import load_policy_toml
from policies.model import AssetRule, Policy, WhitelistEntry
from tests.conftest import OMNIBUS
from tests.redteam.conftest import Ceremony, policy_text, refused

SAT = 10**8
PROGRAM = bytes(range(1, 21))
KEY = bytes(range(32, 64))
MAINNET_P2WPKH = bech32.encode("bc", 0, list(PROGRAM))
TESTNET_P2WPKH = bech32.encode("tb", 0, list(PROGRAM))
# a taproot program with the old bech32 checksum: BIP-350 makes it invalid, and old wallets still write it
TAPROOT_BECH32 = bech32.bech32_encode(bech32.Encoding.BECH32, "bc", [1, *bech32.convertbits(list(KEY), 8, 5)])
MIXED_CASE = MAINNET_P2WPKH[:10] + MAINNET_P2WPKH[10:].upper()
ETH_ADDRESS = "0x2222222222222222222222222222222222222222"


def btc(**fields: Any) -> AssetRule:
    rule = AssetRule(
        symbol="BTC",
        enabled=True,
        decimals=8,
        max_per_transfer=50 * SAT,
        hot_limit=0,
        chain="bitcoin",
        network="mainnet",
        max_fee=SAT // 100,
        max_fee_rate=200,
    )
    return replace(rule, **fields)


def with_btc(ceremony: Ceremony, address: str, assets: tuple[str, ...] = ("BTC",), **fields: Any) -> Policy:
    """The ceremony's policy plus a BTC asset and a whitelist entry for ``address``, written by the host."""
    v1 = ceremony.bundle.policy
    entry = WhitelistEntry(address, assets, "reserve", ceremony.bundle.created_at)
    return replace(v1, assets={**v1.assets, "BTC": btc(**fields)}, whitelist={**v1.whitelist, address: entry})


def forged(ceremony: Ceremony, policy: Policy, edit: Callable[[dict[str, Any]], None] | None = None) -> bytes:
    """The bundle the host writes for ``policy``, its canonical JSON then edited by hand."""
    raw = make_bundle(policy, ceremony.bundle.head(), int(time.time())).raw
    if edit is None:
        return raw
    document = json.loads(raw)
    edit(document["policy"])
    return canonical_bytes(document)


def refused_by_signers(ceremony: Ceremony, raw: bytes) -> str:
    """Refused on review, and refused on accept even with a quorum of admin signatures over its hash."""
    path = ceremony.file(raw, "forged-bundle.json")
    message = refused(ceremony.run("policy", "review", path), "policy_invalid")
    digest = hashlib.sha256(raw).hexdigest()
    sigs = [
        ceremony.file(sign_bundle(digest, op.approval).to_bytes(), f"forged.{i}.sig")
        for i, op in enumerate(ceremony.operators[:2])
    ]
    assert refused(ceremony.run("policy", "accept", path, *sigs), "policy_invalid") == message
    return message


@pytest.mark.parametrize(
    ("address", "words"),
    [
        (TESTNET_P2WPKH, "is a testnet or signet address, not a mainnet one"),
        (TAPROOT_BECH32, "segwit v1 with a bech32 checksum, not bech32m"),
        (MIXED_CASE, "mixes upper and lower case"),
        (ETH_ADDRESS, "is an Ethereum address, not a Bitcoin one"),
    ],
    ids=["testnet-in-mainnet", "taproot-bech32", "mixed-case", "ethereum-on-btc"],
)
def test_a_whitelisted_address_that_is_not_the_assets_is_refused(ceremony, address, words):
    message = refused_by_signers(ceremony, forged(ceremony, with_btc(ceremony, address)))
    assert message.startswith("whitelist[") and ".address: " in message and words in message, message


def test_a_bitcoin_address_on_an_ethereum_asset_is_refused(ceremony):
    v1 = ceremony.bundle.policy
    entry = WhitelistEntry(MAINNET_P2WPKH, ("ETH",), "reserve", ceremony.bundle.created_at)
    policy = replace(with_btc(ceremony, MAINNET_P2WPKH), whitelist={**v1.whitelist, MAINNET_P2WPKH: entry})
    message = refused_by_signers(ceremony, forged(ceremony, policy))
    assert "is a Bitcoin address, not an Ethereum one" in message


def test_a_bitcoin_hot_band_is_refused(ceremony):
    """A hot limit is allowed (the hot wallet's Bitcoin account pays it), but a top-up rule would have the
    rebalancer move cold coins to a hot address nobody checks: refused, even beside a hot limit."""
    policy = with_btc(ceremony, MAINNET_P2WPKH, hot_limit=SAT)
    topup = {"period": 86400, "limit": "100000000"}
    raw = forged(ceremony, policy, lambda p: p["assets"]["BTC"].update(hot_topup=topup))
    message = refused_by_signers(ceremony, raw)
    assert message.startswith("assets.BTC.hot_topup: is not allowed for a bitcoin asset: the Bitcoin hot wallet")


def test_a_bitcoin_hot_wallet_entry_is_refused(ceremony):
    """The host marks its own Bitcoin address as the hot wallet: top-ups would flow to a key it holds."""
    policy = with_btc(ceremony, MAINNET_P2WPKH)
    hot = {address: replace(e, hot=False) for address, e in policy.whitelist.items()}
    hot[MAINNET_P2WPKH] = replace(hot[MAINNET_P2WPKH], hot=True)
    message = refused_by_signers(ceremony, forged(ceremony, replace(policy, whitelist=hot)))
    assert message.endswith("BTC is a bitcoin asset: its hot wallet is funded by hand, not by cold top-ups\n"), message
    assert message.startswith("whitelist[") and ".hot: " in message
    # the Ethereum hot wallet's entry may not take BTC either: one entry, one chain
    v1 = ceremony.bundle.policy
    eth_hot = next(e for e in v1.whitelist.values() if e.hot)
    both = {**policy.whitelist, eth_hot.address: replace(eth_hot, assets=("BTC", "ETH"))}
    assert "write one entry per chain" in refused_by_signers(
        ceremony, forged(ceremony, replace(policy, whitelist=both))
    )


def test_an_entry_mixing_chains_is_refused(ceremony):
    policy = with_btc(ceremony, OMNIBUS)
    v1 = ceremony.bundle.policy
    mixed = replace(v1.whitelist[OMNIBUS], assets=("BTC", "ETH", "USDC"))
    message = refused_by_signers(
        ceremony, forged(ceremony, replace(policy, whitelist={**v1.whitelist, OMNIBUS: mixed}))
    )
    assert message.startswith("whitelist[") and "ETH is on ethereum and BTC on bitcoin mainnet" in message


def test_a_respelled_address_is_refused(ceremony):
    """Upper case is the same bech32 address, but a bundle holds one spelling: a host that respells one could
    make a deny entry miss, or show signers two entries for one address."""

    def upper(policy: dict[str, Any]) -> None:
        entry = next(e for e in policy["whitelist"] if e["address"] == MAINNET_P2WPKH)
        entry["address"] = MAINNET_P2WPKH.upper()

    message = refused_by_signers(ceremony, forged(ceremony, with_btc(ceremony, MAINNET_P2WPKH), upper))
    assert "is not in its canonical form" in message


@pytest.mark.parametrize(
    ("edit", "location", "words"),
    [
        (lambda a: a.pop("max_fee"), "assets.BTC.max_fee", "is required for a bitcoin asset"),
        (lambda a: a.pop("max_fee_rate"), "assets.BTC.max_fee_rate", "is required for a bitcoin asset"),
        (lambda a: a.update(max_fee_rate=1_000_000), "assets.BTC.max_fee_rate", "between 1 and 10000"),
        (lambda a: a.pop("network"), "assets.BTC.network", "is required for a bitcoin asset"),
        (lambda a: a.update(decimals=18), "assets.BTC.decimals", "must be 8"),
        (lambda a: a.update(hot_max="100000000"), "assets.BTC.hot_max", "no hot band, top-up or automatic freeze"),
    ],
    ids=["no-max-fee", "no-max-fee-rate", "huge-fee-rate", "no-network", "decimals", "hot-band"],
)
def test_a_bitcoin_asset_without_its_guards_is_refused(ceremony, edit, location, words):
    raw = forged(ceremony, with_btc(ceremony, MAINNET_P2WPKH), lambda p: edit(p["assets"]["BTC"]))
    message = refused_by_signers(ceremony, raw)
    assert message.startswith(f"{location}: ") and words in message, message


def test_an_ethereum_asset_written_with_its_default_chain_is_refused(ceremony):
    """A policy without Bitcoin keeps its bytes only if "chain" is never written for Ethereum: a second spelling
    of the same policy would be a second hash for the same rules."""
    raw = forged(ceremony, ceremony.bundle.policy, lambda p: p["assets"]["ETH"].update(chain="ethereum"))
    assert "assets.ETH.chain: is written only" in refused_by_signers(ceremony, raw)


# -- the admin's own file -------------------------------------------------------------------------------------
BTC_TOML = """
[assets.BTC]
chain = "bitcoin"
network = "mainnet"
decimals = 8
max_per_transfer = "50"
hot_limit = "{hot_limit}"
max_fee = "0.01"
max_fee_rate = 200
[[whitelist]]
address = "{address}"
assets = ["BTC"]
label = "reserve"
active_from = 2100-01-01T00:00:00Z
"""


@pytest.mark.parametrize(
    ("address", "hot_limit", "location", "words"),
    [
        (TESTNET_P2WPKH, "0", "whitelist[3].address", "is a testnet or signet address, not a mainnet one"),
        (TAPROOT_BECH32, "0", "whitelist[3].address", "not bech32m"),
        (MIXED_CASE, "0", "whitelist[3].address", "mixes upper and lower case"),
        (ETH_ADDRESS, "0", "whitelist[3].address", "is an Ethereum address, not a Bitcoin one"),
    ],
    ids=["testnet-in-mainnet", "taproot-bech32", "mixed-case", "ethereum-on-btc"],
)
def test_an_admin_file_with_the_same_mistakes_is_refused(address, hot_limit, location, words):
    admins = [
        ("alice", "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"),
        ("bob", "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"),
    ]
    text = policy_text(admins, int(time.time()), BTC_TOML.format(address=address, hot_limit=hot_limit))
    with pytest.raises(PolicyFileError) as caught:
        load_policy_toml(text)
    assert caught.value.code == "policy_invalid"
    assert caught.value.location == location and words in caught.value.message, caught.value.message
    assert load_policy_toml(policy_text(admins, 0, BTC_TOML.format(address=MAINNET_P2WPKH.upper(), hot_limit="0")))
    hot = load_policy_toml(policy_text(admins, 0, BTC_TOML.format(address=MAINNET_P2WPKH, hot_limit="0.5")))
    assert hot.assets["BTC"].hot_limit == 50_000_000  # paid by the hot wallet's Bitcoin account


def test_the_same_bitcoin_asset_done_right_is_accepted(ceremony):
    """The refusals above are the rules, not a refusal of Bitcoin: the honest bundle passes review and accept."""
    policy = with_btc(ceremony, MAINNET_P2WPKH)
    entry = replace(policy.whitelist[MAINNET_P2WPKH], active_from=int(time.time()) + 60)  # a new entry: not yet
    raw = forged(ceremony, replace(policy, whitelist={**policy.whitelist, MAINNET_P2WPKH: entry}))
    path = ceremony.file(raw, "honest-bundle.json")
    shown = ceremony.run("policy", "review", path)
    assert shown.exit_code == 0 and "REFUSED" not in shown.output, shown.output
    digest = hashlib.sha256(raw).hexdigest()
    sigs = [
        ceremony.file(sign_bundle(digest, op.approval).to_bytes(), f"honest.{i}.sig")
        for i, op in enumerate(ceremony.operators[:2])
    ]
    ceremony.run("policy", "accept", path, *sigs, ok=True)
