"""The withdrawal service without HTTP: delays, velocity across requests, the state machine."""

from __future__ import annotations

import json
import time

import pytest

from custody.api.problems import status_of
from custody.clock import FixedClock
from custody.errors import Conflict, RateLimited
from custody.intake.apikeys import Principal, RateLimiter
from custody.intake.withdrawals import NewWithdrawal, Withdrawals
from custody.ledger import states
from custody.ledger.policy import PolicyCache
from custody.ledger.states import State
from policies.errors import CustodyError
from tests.conftest import OMNIBUS

WHO = Principal("backend", frozenset({"withdraw", "read", "cancel"}))


@pytest.fixture
def service(seeded):
    from tests.conftest import add_client

    add_client(seeded)
    return Withdrawals(seeded, PolicyCache(), FixedClock(int(time.time())))


def test_delayed_withdrawals_are_released_when_due(service):
    w, _ = service.create(WHO, "k1", NewWithdrawal("ETH", "10", OMNIBUS))
    assert w.state == State.DELAYED and w.eligible_at == service.clock.now() + 3600
    service.clock.advance(3599)
    assert service.promote_due() == 0
    service.clock.advance(1)
    assert service.promote_due() == 1
    assert service.get(WHO, w.id).state == State.QUEUED_COLD


def test_velocity_counts_earlier_withdrawals_but_not_cancelled_ones(service):
    # the test policy allows 250 ETH per hour; 100 ETH is the per-transfer maximum
    made = [service.create(WHO, f"v{i}", NewWithdrawal("ETH", "100", OMNIBUS))[0] for i in range(2)]
    over, _ = service.create(WHO, "v2", NewWithdrawal("ETH", "51", OMNIBUS))
    assert over.state == State.REJECTED and "window:1h" in over.reasons
    service.cancel(WHO, made[0].id)
    ok, _ = service.create(WHO, "v3", NewWithdrawal("ETH", "51", OMNIBUS))
    assert ok.state == State.DELAYED
    service.clock.advance(3600)  # the first two leave the window
    fresh, _ = service.create(WHO, "v4", NewWithdrawal("ETH", "100", OMNIBUS))
    assert fresh.state == State.DELAYED


def test_illegal_transitions_are_errors():
    states.check_transition(State.QUEUED_COLD, State.BATCHED)
    for current, target in [
        (State.CONFIRMED, State.CANCELLED),
        (State.REJECTED, State.QUEUED_HOT),
        (State.QUEUED_HOT, State.BATCHED),
        (State.BROADCAST, State.CANCELLED),
    ]:
        with pytest.raises(Conflict) as info:
            states.check_transition(current, target)
        assert info.value.code == "illegal_transition"


def test_rate_limiter_refuses_past_the_burst():
    limiter = RateLimiter(rate=0.001, burst=3)
    for _ in range(3):
        limiter.take("k")
    with pytest.raises(RateLimited) as info:
        limiter.take("k")
    assert status_of(info.value) == 429 and info.value.code == "rate_limited"
    limiter.take("other")  # buckets are per key


def _outcome(result) -> tuple:
    if isinstance(result, Exception):
        return ("error", result.code)
    w, created = result
    return (w.state, w.route, w.amount, created, tuple(r["rule"] for r in json.loads(w.reasons) if not r["passed"]))


def test_a_batch_decides_exactly_as_one_request_at_a_time(db_url):
    """Group commit decides many intakes in one transaction; each must see the windows, the per-key
    windows and the hot wallet's free balance as if every one before it had committed alone."""
    from sqlalchemy import delete

    from custody.intake.withdrawals import Intake
    from custody.store.db import Store
    from custody.store.models import ChainBalance, HotWallet, WindowUsage, Withdrawal
    from policies.loader import load_policy_toml
    from tests.conftest import MAKER, add_client, apply_policy, policy_toml

    now = int(time.time())
    store = Store(db_url)
    store.migrate()
    text = policy_toml(now) + '\n[api_keys.backend]\nwindows = [{ asset = "ETH", period = "1h", limit = "180" }]\n'
    apply_policy(store, load_policy_toml(text), now)
    add_client(store)
    add_client(store, "other")
    hot = "0x" + "11" * 20
    with store.transaction() as s:
        s.add(HotWallet(address=hot, chain_id=31337, next_nonce=0, created_at=now))
        s.add(ChainBalance(wallet=hot, asset="ETH", amount=12 * 10**18, block=1, updated_at=now))
    other = Principal("other", WHO.scopes)
    stranger = "0x" + "22" * 20
    plan = [  # (who, key, asset, amount, destination)
        (WHO, "a", "ETH", "4", OMNIBUS),  # hot: 12 free
        (WHO, "b", "ETH", "5", MAKER),  # hot: 8 free
        (WHO, "c", "ETH", "4", OMNIBUS),  # cold: only 3 free now
        (other, "a", "ETH", "3", OMNIBUS),  # hot: exactly the 3 left
        (WHO, "d", "ETH", "0.5", OMNIBUS),  # cold: nothing free
        (WHO, "e", "ETH", "100", OMNIBUS),  # delayed, cold; the key has used 113.5 of 180
        (WHO, "f", "ETH", "70", OMNIBUS),  # over the key's 180, within the asset's 250: rejected
        (other, "b", "ETH", "100", OMNIBUS),  # delayed: the asset has used 216.5 of 250
        (other, "c", "ETH", "40", OMNIBUS),  # over the asset's 250: rejected
        (other, "d", "ETH", "33.5", OMNIBUS),  # exactly 250: delayed
        (WHO, "g", "ETH", "1", stranger),  # not whitelisted, and the window is full: rejected
        (WHO, "a", "ETH", "4", OMNIBUS),  # the same key and request again: the first one
        (WHO, "b", "ETH", "6", MAKER),  # the same key, another request: a conflict
        (WHO, "h", "ETH", "1.0000000000000000001", OMNIBUS),  # too many decimals
        (WHO, "i", "DOGE", "1", OMNIBUS),  # unknown asset
        (WHO, "j", "ETH", "1", "0x6e340b9cffb37a989ca544e6bb780a2c78901d3F"),  # a broken checksum
    ]
    clock = FixedClock(now)
    service = Withdrawals(store, PolicyCache(), clock)
    try:
        one_by_one = []
        for who, key, asset, amount, dest in plan:
            try:
                one_by_one.append(_outcome(service.create(who, key, NewWithdrawal(asset, amount, dest))))
            except CustodyError as exc:  # compared below with the batch's per-item errors
                one_by_one.append(_outcome(exc))
        with store.transaction() as s:  # start again from nothing used
            s.execute(delete(Withdrawal))
            s.execute(delete(WindowUsage))
        batch = service.create_many([Intake(who, k, NewWithdrawal(a, x, d)) for who, k, a, x, d in plan])
        assert [_outcome(r) for r in batch] == one_by_one
        assert [o[0] for o in one_by_one[:11]] == [
            State.QUEUED_HOT,
            State.QUEUED_HOT,
            State.QUEUED_COLD,
            State.QUEUED_HOT,
            State.QUEUED_COLD,
            State.DELAYED,
            State.REJECTED,
            State.DELAYED,
            State.REJECTED,
            State.DELAYED,
            State.REJECTED,
        ]
        assert [one_by_one[i][4] for i in (6, 8, 10)] == [
            ("key_window:1h",),
            ("window:1h",),
            ("whitelist", "window:1h"),
        ]
        assert one_by_one[11][3] is False and one_by_one[12:] == [
            ("error", "idempotency_conflict"),
            ("error", "invalid_amount"),
            ("error", "unknown_asset"),
            ("error", "invalid_address"),
        ]
        with store.read() as s:
            assert s.query(Withdrawal).count() == 11  # the refused ones wrote nothing
        with store.transaction() as s:
            from custody.ledger import audit

            assert audit.verify(s).ok
    finally:
        store.dispose()


BTC_POLICY = """
[assets.BTC]
chain = "bitcoin"
network = "regtest"
decimals = 8
max_per_transfer = "10"
hot_limit = "0"
max_fee = "0.001"
max_fee_rate = 50
[[whitelist]]
address = "bcrt1qqypqxpq9qcrsszg2pvxq6rs0zqg3yyc5phstwt"
assets = ["BTC"]
label = "reserve"
active_from = {active}
"""
BTC_RESERVE = "bcrt1qqypqxpq9qcrsszg2pvxq6rs0zqg3yyc5phstwt"


def test_a_bitcoin_withdrawal_is_checked_for_its_chain_and_stored_in_canonical_form(store):
    """Issue 18: the destination is validated for the asset's chain and network from the policy, and stored in
    lowercase (the form the whitelist is in); another chain's address is address_wrong_chain."""
    from policies.loader import load_policy_toml
    from tests.conftest import add_client, apply_policy, policy_toml

    now = int(time.time())
    active = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 86400))  # as policy_toml's entries
    apply_policy(store, load_policy_toml(policy_toml(now) + BTC_POLICY.format(active=active)), now)
    add_client(store)
    service = Withdrawals(store, PolicyCache(), FixedClock(now))
    w, _ = service.create(WHO, "b1", NewWithdrawal("BTC", "0.5", BTC_RESERVE.upper()))
    assert (w.state, w.destination, w.amount) == (State.QUEUED_COLD, BTC_RESERVE, 50_000_000)  # no hot wallet
    for asset, destination, code in [
        ("BTC", OMNIBUS, "address_wrong_chain"),
        ("ETH", BTC_RESERVE, "address_wrong_chain"),
        ("BTC", "bc1qqypqxpq9qcrsszg2pvxq6rs0zqg3yyc5fcj4z3", "address_wrong_chain"),  # mainnet
        ("BTC", BTC_RESERVE[:8] + BTC_RESERVE[8:].upper(), "invalid_address"),
    ]:
        with pytest.raises(CustodyError) as info:
            service.create(WHO, f"x-{asset}-{destination}", NewWithdrawal(asset, "0.5", destination))
        assert (info.value.code, status_of(info.value)) == (code, 422), destination
