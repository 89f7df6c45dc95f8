"""Request authentication at its exact boundaries, with an explicit clock."""

from __future__ import annotations

import pytest

from custody.errors import Unauthorized
from custody.intake.apikeys import Authenticator, RateLimiter
from custody.intake.signatures import sign_request
from tests.conftest import add_client


def headers(ck, ts: int, body: bytes = b"{}", idem: str = "k") -> dict[str, str]:
    h = sign_request(ck.key, ck.name, ts, "POST", "/v1/withdrawals", body, idem)
    return {
        "key": h["X-Custody-Key"],
        "timestamp": h["X-Custody-Timestamp"],
        "nonce": h["X-Custody-Nonce"],
        "signature": h["X-Custody-Signature"],
        "idempotency_key": idem,
    }


@pytest.mark.parametrize(("offset", "ok"), [(-30, True), (30, True), (-31, False), (31, False)])
def test_timestamp_window_is_thirty_seconds_either_way(store, offset, ok):
    ck = add_client(store)
    auth = Authenticator(store, 30, RateLimiter(1000, 1000))
    now = 1_900_000_000
    h = headers(ck, now + offset)
    if ok:
        assert auth.authenticate(h, "POST", "/v1/withdrawals", b"{}", now).name == ck.name
    else:
        with pytest.raises(Unauthorized) as info:
            auth.authenticate(h, "POST", "/v1/withdrawals", b"{}", now)
        assert info.value.code == "expired_timestamp"


def test_a_malformed_nonce_or_signature_is_refused(store):
    ck = add_client(store)
    auth = Authenticator(store, 30, RateLimiter(1000, 1000))
    now = 1_900_000_000
    for broken in ({"nonce": "xyz"}, {"signature": "00"}, {"signature": "zz" * 64}, {"nonce": None}):
        with pytest.raises(Unauthorized):
            auth.authenticate({**headers(ck, now), **broken}, "POST", "/v1/withdrawals", b"{}", now)


def test_a_replay_is_refused_until_its_timestamp_is_stale_and_only_then_forgotten(store):
    from sqlalchemy import select

    from custody.store.models import RequestNonce

    ck = add_client(store)
    auth = Authenticator(store, 30, RateLimiter(1000, 1000))
    now = 1_900_000_000
    h = headers(ck, now)
    auth.authenticate(h, "POST", "/v1/withdrawals", b"{}", now)
    with pytest.raises(Unauthorized) as info:
        auth.authenticate(h, "POST", "/v1/withdrawals", b"{}", now + 30)
    assert info.value.code == "replayed_request"
    auth.prune(now + 120)  # 4 x the skew: the nonce could still be presented at now + 30, so it is kept
    with store.read() as s:
        assert len(s.execute(select(RequestNonce)).all()) == 1
    auth.prune(now + 121 + 61)
    with store.read() as s:
        assert s.execute(select(RequestNonce)).all() == []
