from dataclasses import replace

import pytest

from policies.bundle import (
    check_created_at,
    check_decimals,
    check_not_rollback,
    genesis_bytes,
    make_bundle,
    parse_bundle,
    parse_genesis,
    parse_signature,
    sign_bundle,
    verify_successor,
)
from policies.errors import (
    ActivationError,
    AssetRemoved,
    BundleError,
    BundleSequenceError,
    BundleTimeError,
    DecimalsChanged,
    QuorumError,
    RollbackError,
)
from policies.model import WhitelistEntry
from tests.policies.helpers import ADMIN_KEYS, GOOD, NOW, governance, policy

A, B, C, OUTSIDER = ADMIN_KEYS
GENESIS = parse_genesis(genesis_bytes(governance(), NOW - 10 * 86400))
# Entries active well after creation + 24 h, so the genesis-to-first bundle passes activation.
FIRST_POLICY = policy(whitelist={GOOD: WhitelistEntry(GOOD, ("ETH",), "omnibus", NOW + 86400)}, deny={})
FIRST = make_bundle(FIRST_POLICY, GENESIS, NOW)


def sigs(bundle, *keys):
    return [sign_bundle(bundle.hash, k) for k in keys]


def test_apply_with_quorum_and_the_encoding_round_trips():
    assert set(verify_successor(GENESIS, FIRST, sigs(FIRST, A, C))) == {
        A.verify_key.encode().hex(),
        C.verify_key.encode().hex(),
    }
    again = parse_bundle(FIRST.raw)
    assert again.hash == FIRST.hash and again.policy == FIRST.policy
    sig = sigs(FIRST, B)[0]
    assert parse_signature(sig.to_bytes()) == sig


def test_too_few_signatures():
    with pytest.raises(QuorumError, match="1 distinct admin signature"):
        verify_successor(GENESIS, FIRST, sigs(FIRST, A))


def test_the_same_admin_twice_counts_once():
    with pytest.raises(QuorumError, match="quorum is 2"):
        verify_successor(GENESIS, FIRST, sigs(FIRST, A, A))


def test_a_signature_from_a_non_admin_is_refused():
    with pytest.raises(QuorumError, match="not in the current admin set"):
        verify_successor(GENESIS, FIRST, sigs(FIRST, A, OUTSIDER))


def test_a_forged_signature_or_one_for_another_bundle_is_refused():
    other = make_bundle(FIRST_POLICY, GENESIS, NOW + 1)
    with pytest.raises(QuorumError, match="not this one"):
        verify_successor(GENESIS, FIRST, sigs(FIRST, A) + sigs(other, B))
    forged = replace(sigs(FIRST, B)[0], key=C.verify_key.encode().hex())
    with pytest.raises(QuorumError, match="does not verify"):
        verify_successor(GENESIS, FIRST, [*sigs(FIRST, A), forged])


def test_wrong_previous_hash():
    stranger = replace(GENESIS, hash="00" * 32)
    with pytest.raises(BundleSequenceError, match="previous hash"):
        verify_successor(stranger, FIRST, sigs(FIRST, A, B))


def test_skipped_and_repeated_versions():
    second = make_bundle(FIRST_POLICY, FIRST.head(), NOW + 10)
    with pytest.raises(BundleSequenceError, match="skips"):
        verify_successor(GENESIS, second, sigs(second, A, B))
    with pytest.raises(BundleSequenceError, match="repeats"):
        verify_successor(second.head(), second, sigs(second, A, B))


def test_early_whitelist_activation_is_refused_but_unchanged_entries_carry_over():
    early = FIRST_POLICY.whitelist[GOOD]
    for active_from, ok in ((NOW + 86400 - 1, False), (NOW + 86400, True)):
        p = replace(FIRST_POLICY, whitelist={GOOD: replace(early, active_from=active_from)})
        bundle = make_bundle(p, GENESIS, NOW)
        if ok:
            verify_successor(GENESIS, bundle, sigs(bundle, A, B))
        else:
            with pytest.raises(ActivationError, match="omnibus"):
                verify_successor(GENESIS, bundle, sigs(bundle, A, B))
    # The next bundle, created after the entry is already active, may keep it as it is ...
    second = make_bundle(FIRST_POLICY, FIRST.head(), NOW + 3 * 86400)
    verify_successor(FIRST.head(), second, sigs(second, A, B))
    # ... but adding an asset to it is a new permission, subject to the delay again.
    widened = replace(FIRST_POLICY, whitelist={GOOD: replace(early, assets=("ETH", "USDC"))})
    third = make_bundle(widened, FIRST.head(), NOW + 3 * 86400)
    with pytest.raises(ActivationError):
        verify_successor(FIRST.head(), third, sigs(third, A, B))


def test_a_bundle_cannot_shorten_its_own_activation_delay():
    p = replace(
        FIRST_POLICY,
        governance=governance(delay=0),
        whitelist={GOOD: WhitelistEntry(GOOD, ("ETH",), "omnibus", NOW + 60)},
    )
    bundle = make_bundle(p, GENESIS, NOW)
    with pytest.raises(ActivationError):
        verify_successor(GENESIS, bundle, sigs(bundle, A, B))


def test_an_admin_set_change_needs_the_current_set():
    new_set = replace(FIRST_POLICY, governance=governance([OUTSIDER, C], quorum=1))
    changed = make_bundle(new_set, GENESIS, NOW)
    with pytest.raises(QuorumError, match="not in the current admin set"):
        verify_successor(GENESIS, changed, sigs(changed, OUTSIDER))
    verify_successor(GENESIS, changed, sigs(changed, A, B))
    # once applied, the new set alone governs the next bundle, and the old admins no longer count
    nxt = make_bundle(new_set, changed.head(), NOW + 1)
    verify_successor(changed.head(), nxt, sigs(nxt, OUTSIDER))
    with pytest.raises(QuorumError):
        verify_successor(changed.head(), nxt, sigs(nxt, A, B))


def test_rollback_is_refused():
    second = make_bundle(FIRST_POLICY, FIRST.head(), NOW + 10)
    check_not_rollback(None, FIRST)
    check_not_rollback(FIRST.head(), second)
    with pytest.raises(RollbackError, match="older"):
        check_not_rollback(second.head(), FIRST)
    fork = make_bundle(FIRST_POLICY, GENESIS, NOW + 5)
    with pytest.raises(RollbackError, match="differs"):
        check_not_rollback(FIRST.head(), fork)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: raw.replace(b'"version":1', b'"version":1.0'),
        lambda raw: b"{ " + raw[1:],
        lambda raw: raw[:-1] + b',"extra":1}',
        lambda raw: raw.replace(b"custody-policy-bundle", b"custody-policy-genesis"),
        lambda raw: raw + b"\n",
    ],
)
def test_bundle_parsing_is_strict(mutate):
    with pytest.raises(BundleError):
        parse_bundle(mutate(FIRST.raw))


# -- decimals never change ----------------------------------------------------------------------------------
USDC = FIRST_POLICY.assets["USDC"]
SECOND_AT = NOW + 3 * 86400


def with_assets(**assets):
    return replace(FIRST_POLICY, assets={**FIRST_POLICY.assets, **assets})


def test_an_assets_decimals_may_not_change():
    bundle = make_bundle(with_assets(USDC=replace(USDC, decimals=12)), FIRST.head(), SECOND_AT)
    with pytest.raises(DecimalsChanged, match="USDC's decimals change from 6 to 12") as info:
        verify_successor(FIRST.head(), bundle, sigs(bundle, A, B))
    assert info.value.code == "asset_decimals_changed"


def test_a_contract_under_another_symbol_keeps_its_decimals():
    extra = replace(FIRST_POLICY, assets={**FIRST_POLICY.assets, "USDX": replace(USDC, symbol="USDX", decimals=18)})
    with pytest.raises(DecimalsChanged, match="as USDC it had 6"):
        check_decimals(FIRST.head(), make_bundle(extra, FIRST.head(), SECOND_AT))


def test_the_native_coin_keeps_its_decimals_under_any_symbol():
    eth = FIRST_POLICY.assets["ETH"]
    native = replace(FIRST_POLICY, assets={**FIRST_POLICY.assets, "WEI": replace(eth, symbol="WEI", decimals=0)})
    with pytest.raises(DecimalsChanged, match="the native coin"):
        check_decimals(FIRST.head(), make_bundle(native, FIRST.head(), SECOND_AT))


def test_an_asset_is_never_dropped_nor_moved_and_genesis_has_none():
    """Dropped for one bundle, a contract could come back in the next with other decimals."""
    others = {s: r for s, r in FIRST_POLICY.assets.items() if s != "USDC"}
    with pytest.raises(AssetRemoved, match="USDC is removed"):
        check_decimals(FIRST.head(), make_bundle(replace(FIRST_POLICY, assets=others), FIRST.head(), SECOND_AT))
    renamed = replace(FIRST_POLICY, assets={**others, "USDX": replace(USDC, symbol="USDX")})
    with pytest.raises(AssetRemoved):
        check_decimals(FIRST.head(), make_bundle(renamed, FIRST.head(), SECOND_AT))
    moved = with_assets(USDC=replace(USDC, contract="0x6B175474E89094C44Da98b954EedeAC495271d0F", decimals=18))
    with pytest.raises(AssetRemoved, match="moved to another chain or contract"):
        check_decimals(FIRST.head(), make_bundle(moved, FIRST.head(), SECOND_AT))
    check_decimals(GENESIS, make_bundle(moved, GENESIS, NOW))
    disabled = with_assets(USDC=replace(USDC, enabled=False))
    check_decimals(FIRST.head(), make_bundle(disabled, FIRST.head(), SECOND_AT))


# -- a bundle's date against the checker's clock ------------------------------------------------------------
@pytest.mark.parametrize(
    ("created_at", "ok"),
    [(NOW - 3600, True), (NOW - 3601, False), (NOW + 300, True), (NOW + 301, False), (NOW, True)],
)
def test_a_signer_takes_bundles_dated_within_an_hour_before_and_five_minutes_after_its_clock(created_at, ok):
    if ok:
        check_created_at(created_at, NOW)
    else:
        with pytest.raises(BundleTimeError) as info:
            check_created_at(created_at, NOW)
        assert info.value.code == "bundle_time_invalid"


def test_the_daemon_checks_only_the_future_side():
    check_created_at(NOW - 30 * 86400, NOW, max_age=None)
    with pytest.raises(BundleTimeError, match="5m ahead"):
        check_created_at(NOW + 301, NOW, max_age=None)
    with pytest.raises(BundleTimeError, match=r"2d 1h before this computer's clock"):
        check_created_at(NOW - 2 * 86400 - 3600, NOW)


def test_a_second_chain_s_native_coin_is_another_asset_and_keeps_its_network():
    """ETH and BTC are both native coins (no contract): BTC's 8 decimals are not ETH's 18 changed."""
    eth = FIRST_POLICY.assets["ETH"]
    btc = replace(eth, symbol="BTC", decimals=8, chain="bitcoin", network="regtest", hot_limit=0)
    added = replace(FIRST_POLICY, assets={**FIRST_POLICY.assets, "BTC": btc})
    check_decimals(FIRST.head(), make_bundle(added, FIRST.head(), SECOND_AT))
    second = make_bundle(added, FIRST.head(), SECOND_AT)
    moved = replace(added, assets={**added.assets, "BTC": replace(btc, network="testnet")})
    with pytest.raises(AssetRemoved, match="BTC is moved to another chain or contract"):
        check_decimals(second.head(), make_bundle(moved, second.head(), SECOND_AT + 1))
