"""`custody policy propose` refuses what a signer or `policy apply` would refuse later, and `apply` refuses a
bundle dated ahead of the daemon's clock."""

from __future__ import annotations

import time

import pytest

from custody.ledger import policy as policy_service
from custody.store.db import Store
from custody.store.models import HotWallet
from policies.bundle import make_bundle, sign_bundle
from policies.errors import BundleSequenceError, BundleTimeError, DecimalsChanged, PolicyFileError
from policies.loader import load_policy_toml
from tests.conftest import ADMINS, DAY, governance_for_tests, policy_toml

HOT = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
NOW = int(time.time())


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'custody.db'}")
    s.migrate()
    with s.transaction() as session:
        policy_service.install_genesis(session, governance_for_tests(), NOW - 4 * DAY)
    yield s
    s.dispose()


def hot_policy(hot: bool) -> str:
    entry = f'[[whitelist]]\naddress = "{HOT}"\nassets = ["ETH"]\nlabel = "hot"\nactive_from = 2099-01-01T00:00:00Z\n'
    text = policy_toml(NOW, activation=NOW + 2 * DAY) + entry + ("hot = true\n" if hot else "")
    return text.replace('hot_limit = "5"', 'hot_limit = "5"\nhot_topup = { period = "24h", limit = "50" }', 1)


def register_hot_wallet(store: Store, address: str = HOT) -> None:
    with store.transaction() as s:
        s.add(HotWallet(address=address, chain_id=31337, next_nonce=0, created_at=NOW))


def test_the_daemons_own_hot_wallet_must_be_marked_hot(store):
    # before the hot worker has registered its address, the daemon cannot know it, and nothing is checked
    policy_service.propose(store, hot_policy(hot=False), NOW)
    register_hot_wallet(store)
    with pytest.raises(PolicyFileError, match="this daemon's hot wallet: its entry must say hot = true") as info:
        policy_service.propose(store, hot_policy(hot=False), NOW)
    assert info.value.location == "whitelist"
    assert policy_service.propose(store, hot_policy(hot=True), NOW).policy.hot_entry is not None


def test_propose_dates_the_bundle_now_and_refuses_a_clock_behind_the_current_bundle(store):
    policy = load_policy_toml(policy_toml(NOW, activation=NOW + 2 * DAY))
    bundle = policy_service.propose(store, policy_toml(NOW, activation=NOW + 2 * DAY), NOW)
    assert bundle.created_at == NOW and bundle.policy == policy
    with pytest.raises(BundleTimeError, match="before the current bundle's date"):
        policy_service.propose(store, policy_toml(NOW, activation=NOW + 2 * DAY), NOW - 5 * DAY)


def apply_first(store: Store, created_at: int, now: int):
    policy = load_policy_toml(policy_toml(now, activation=created_at + 2 * DAY))
    with store.read() as s:
        head, _ = policy_service.head(s)
    bundle = make_bundle(policy, head, created_at)
    return policy_service.apply(store, bundle.raw, [sign_bundle(bundle.hash, k).to_bytes() for k in ADMINS[:2]], now)


def test_apply_refuses_a_bundle_dated_ahead_but_takes_an_old_one(store):
    with pytest.raises(BundleTimeError, match="after this computer's clock"):
        apply_first(store, NOW + 301, NOW)
    # a bundle signed days ago is fine: each admin's signer checked its date when they signed
    assert apply_first(store, NOW - 3 * DAY, NOW).version == 1
    # and the next may not be dated before it (bundle_out_of_sequence, as before)
    with pytest.raises(BundleSequenceError, match="created before"):
        apply_first(store, NOW - 3 * DAY - 1, NOW)


def test_propose_refuses_changed_decimals(store):
    apply_first(store, NOW - 3 * DAY, NOW)
    text = policy_toml(NOW, activation=NOW - DAY).replace("decimals = 6", "decimals = 8")
    with pytest.raises(DecimalsChanged, match="USDC's decimals change from 6 to 8"):
        policy_service.propose(store, text, NOW)
