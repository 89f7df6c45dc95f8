"""The withdrawal service without HTTP: delays, velocity across requests, the state machine."""

from __future__ import annotations

import time

import pytest

from custody import states
from custody.apikeys import Principal, RateLimiter
from custody.clock import FixedClock
from custody.errors import Conflict, RateLimited
from custody.policy import PolicyCache
from custody.withdrawals import NewWithdrawal, Withdrawals
from tests.conftest import OMNIBUS

WHO = Principal("backend", frozenset({"withdraw", "read", "cancel"}))


@pytest.fixture
def service(seeded):
    from tests.conftest import add_client

    add_client(seeded)
    return Withdrawals(seeded, PolicyCache(), FixedClock(int(time.time())))


def test_delayed_withdrawals_are_released_when_due(service):
    w, _ = service.create(WHO, "k1", NewWithdrawal("ETH", "10", OMNIBUS))
    assert w.state == states.DELAYED and w.eligible_at == service.clock.now() + 3600
    service.clock.advance(3599)
    assert service.promote_due() == 0
    service.clock.advance(1)
    assert service.promote_due() == 1
    assert service.get(WHO, w.id).state == states.QUEUED_COLD


def test_velocity_counts_earlier_withdrawals_but_not_cancelled_ones(service):
    # the test policy allows 250 ETH per hour; 100 ETH is the per-transfer maximum
    made = [service.create(WHO, f"v{i}", NewWithdrawal("ETH", "100", OMNIBUS))[0] for i in range(2)]
    over, _ = service.create(WHO, "v2", NewWithdrawal("ETH", "51", OMNIBUS))
    assert over.state == states.REJECTED and "window:1h" in over.reasons
    service.cancel(WHO, made[0].id)
    ok, _ = service.create(WHO, "v3", NewWithdrawal("ETH", "51", OMNIBUS))
    assert ok.state == states.DELAYED
    service.clock.advance(3600)  # the first two leave the window
    fresh, _ = service.create(WHO, "v4", NewWithdrawal("ETH", "100", OMNIBUS))
    assert fresh.state == states.DELAYED


def test_illegal_transitions_are_errors():
    states.check_transition(states.QUEUED_COLD, states.BATCHED)
    for current, target in [
        (states.CONFIRMED, states.CANCELLED),
        (states.REJECTED, states.QUEUED_HOT),
        (states.QUEUED_HOT, states.BATCHED),
        (states.BROADCAST, states.CANCELLED),
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
    assert info.value.status == 429 and info.value.code == "rate_limited"
    limiter.take("other")  # buckets are per key
