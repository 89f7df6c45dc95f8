"""The compromised host (or a careless admin) against a policy with a Bitcoin asset. The host writes any bundle
it likes, as canonical JSON, and hands it to the admins' real ``signer`` CLI: it must refuse it with
``policy_invalid``, naming the field and the reason, whether to review it or to accept it with a quorum of
signatures. The admin's own file is refused by the loader with the same code and words.

Each attack aims at the rules of issue 18: every address valid for its asset's chain and network, in its one
canonical form, no spending to an address no wallet can spend from, and a hot band, top-up and automatic freeze
held to the same rules as Ethereum's (a top-up cap for the hot entry, within the band)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from embit import bech32

from policies.bundle import make_bundle, sign_bundle
from policies.canonical import canonical_bytes
from policies.errors import PolicyFileError
from policies.loader import load_policy_toml
from policies.model import AssetRule, Policy, WhitelistEntry, Window
from signer.batchfile import BatchWithdrawal
from signer.btcwallet import parse_btc_cold_wallet
from tests.conftest import OMNIBUS
from tests.redteam.conftest import DAEMON, Ceremony, policy_text, refused, refused_unsigned, stamp
from tests.redteam.test_psbt_attacks import FEE, OMNI, Host, bitcoin_keys, signed_btc
from tests.signer.btcfixtures import Spec, address_script, coin, wallet_bytes

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


def test_a_bitcoin_hot_band_without_its_top_up_cap_is_refused(ceremony):
    """A BTC band and hot entry are allowed (issue 18), but the host marks its own address as the hot wallet
    without a top-up cap, or with one wider than the band: top-ups are cold coins moved to a key it holds."""
    policy = with_btc(ceremony, MAINNET_P2WPKH, hot_limit=SAT, hot_min=SAT, hot_max=3 * SAT)
    v1 = ceremony.bundle.policy
    whitelist = {address: replace(e, hot=False) for address, e in policy.whitelist.items()}  # one hot entry
    whitelist[MAINNET_P2WPKH] = replace(whitelist[MAINNET_P2WPKH], hot=True)
    hot = replace(
        policy, whitelist=whitelist, assets={**policy.assets, "ETH": replace(v1.assets["ETH"], hot_topup=None)}
    )
    message = refused_by_signers(ceremony, forged(ceremony, hot))
    assert message.startswith("assets.BTC.hot_topup: is required: whitelist[") and "receives BTC" in message, message
    wide = replace(hot, assets={**hot.assets, "BTC": replace(hot.assets["BTC"], hot_topup=Window(86400, 3 * SAT))})
    message = refused_by_signers(ceremony, forged(ceremony, wide))
    assert message.startswith("assets.BTC.hot_topup.limit: must be at most hot_max - hot_min"), message
    # the Ethereum hot wallet's entry may not take BTC either: one entry, one chain
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
        (lambda a: a.update(hot_min="200000000", hot_max="100000000"), "assets.BTC.hot_max", "greater than hot_min"),
    ],
    ids=["no-max-fee", "no-max-fee-rate", "huge-fee-rate", "no-network", "decimals", "inverted-band"],
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


# -- top-ups of the Bitcoin hot wallet, capped offline ----------------------------------------------------------
def test_a_bitcoin_batch_topping_up_the_hot_wallet_over_its_cap_is_refused(ceremony):
    """Issue 18: the BTC hot wallet is topped up from the cold descriptor like the Ethereum one from the Safe. The
    host holds the hot key, so it would top up far more than the treasury agreed to expose: the signers' ledger
    counts every transfer to the BTC hot entry against ``hot_topup`` over its window, offline, beside the
    Ethereum hot entry (one per chain)."""

    hot_address, hot_script = address_script(0x73)
    admins = [(op.name, op.card["approval_key"]) for op in ceremony.operators]
    created = int(time.time()) - 30
    extra = f"""
[assets.BTC]
chain = "bitcoin"
network = "regtest"
decimals = 8
max_per_transfer = "10"
hot_limit = "0.5"
hot_min = "1"
hot_max = "3"
hot_topup = {{ period = "24h", limit = "1" }}
max_fee = "0.0005"
max_fee_rate = 50
[[whitelist]]
address = "{OMNI}"
assets = ["BTC"]
label = "btc omnibus"
active_from = {stamp(created)}
[[whitelist]]
address = "{hot_address}"
assets = ["BTC"]
label = "btc hot wallet"
active_from = {stamp(created)}
hot = true
"""
    policy = load_policy_toml(policy_text(admins, created, extra))
    # two hot wallets, one per chain: the Ethereum one (capped at 50 ETH a day) and the Bitcoin one
    assert sorted(e.assets for e in policy.whitelist.values() if e.hot) == [("BTC",), ("ETH",)]
    v1 = make_bundle(policy, ceremony.bundle, created)
    path = ceremony.file(v1.raw, "bundle-btc-hot.json")
    sigs = [
        ceremony.file(sign_bundle(v1.hash, op.approval).to_bytes(), f"btc-hot.{i}.sig")
        for i, op in enumerate(ceremony.operators[:2])
    ]

    raw = wallet_bytes(bitcoin_keys(ceremony), 2, DAEMON.verify_key.encode().hex())
    wallet_file = ceremony.file(raw, "btc-cold-wallet.json")
    ceremony.run("policy", "accept", path, *sigs, ok=True)
    ceremony.run("cold", "pin", wallet_file, "--yes", "--keystore", ceremony.operators[0].keystore, ok=True)
    host = Host(ceremony, parse_btc_cold_wallet(raw), v1)

    def top_up(amount: int) -> bytes:
        w = BatchWithdrawal(str(uuid.uuid4()), "BTC", amount, 8, None, hot_address, "btc hot wallet")
        value = SAT * 2
        spec = Spec(host.wallet, [coin(host.wallet, value)], [(hot_script, amount)], (0, value - amount - FEE))
        return host.write(host.batch([w], spec.build(), created=int(time.time()) - 10))

    signed_btc(host.sign(top_up(8 * SAT // 10))[0])  # 0.8 of the 1 BTC a day: signed, and recorded as a top-up
    message = refused_unsigned(ceremony, top_up(3 * SAT // 10), "batch_topup_over_limit")  # 1.1 over the day
    assert "top-ups of the hot wallet would reach 1.1" in message, message
