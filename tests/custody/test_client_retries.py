"""CustodyClient's retries, against an in-memory transport (httpx.MockTransport): what it sends again, how
often, for how long, and what it does not retry. The real outages are in tests/integration/test_db_outages.py."""

from __future__ import annotations

import time

import httpx
import pytest
from nacl.signing import SigningKey

from custody.api.client import MAX_WAIT, RETRY_BUDGET, CustodyAPIError, CustodyClient, backoff
from tests.conftest import OMNIBUS

UNAVAILABLE = {"code": "database_unavailable", "detail": "the database is unavailable; retry"}
CREATED = {"id": "w-1", "state": "queued_cold"}


def client(answers, budget: float = RETRY_BUDGET) -> tuple[CustodyClient, list[httpx.Request]]:
    """A client whose n-th request gets ``answers[n]`` (a response or an exception); the last repeats."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen) - 1, len(answers) - 1)]
        if isinstance(answer, Exception):
            raise answer
        return answer

    transport = httpx.MockTransport(handler)
    c = CustodyClient("http://custody.test", "backend", SigningKey.generate(), retry_budget=budget, transport=transport)
    return c, seen


def test_the_default_budget_outlasts_a_database_restart():
    assert RETRY_BUDGET >= 60


def test_a_503_is_sent_again_freshly_signed_with_the_same_idempotency_key():
    answers = [httpx.Response(503, json=UNAVAILABLE)] * 3 + [httpx.Response(201, json=CREATED)]
    c, seen = client(answers)
    assert c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key="order-7") == CREATED
    assert len(seen) == 4
    assert {r.headers["Idempotency-Key"] for r in seen} == {"order-7"}
    assert len({r.headers["X-Custody-Nonce"] for r in seen}) == 4  # each attempt signed afresh
    assert len({r.headers["X-Custody-Signature"] for r in seen}) == 4
    assert {r.content for r in seen} == {seen[0].content}  # the same body


def test_a_lost_answer_is_sent_again():
    c, seen = client([httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.Response(201, json=CREATED)])
    assert c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key="k")["id"] == "w-1"
    assert len(seen) == 3


def test_retries_stop_when_the_budget_is_spent():
    c, seen = client([httpx.Response(503, json=UNAVAILABLE)], budget=1.0)
    started = time.monotonic()
    with pytest.raises(CustodyAPIError) as caught:
        c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key="k")
    elapsed = time.monotonic() - started
    assert caught.value.status == 503 and caught.value.code == "database_unavailable"
    assert 1.0 <= elapsed < 1.0 + 0.5, elapsed  # the last attempt is made at the deadline, not after it
    assert 4 <= len(seen) <= 8, len(seen)  # 0.1, 0.2, 0.4 s … (jittered): a handful of attempts, not a flood

    c, seen = client([httpx.ConnectError("refused")], budget=0.3)
    with pytest.raises(httpx.ConnectError):
        c.get_withdrawal("w-1")
    assert len(seen) >= 2


def test_what_is_not_retried():
    no_policy = {"code": "no_active_policy", "detail": "no policy"}
    c, seen = client([httpx.Response(503, json=no_policy)])  # waiting does not apply a policy
    with pytest.raises(CustodyAPIError, match="no_active_policy"):
        c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key="k")
    assert len(seen) == 1
    for status in (400, 409, 422, 500):
        c, seen = client([httpx.Response(status, json={"code": "x", "detail": ""})])
        with pytest.raises(CustodyAPIError):
            c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key="k")
        assert len(seen) == 1, status
    c, seen = client([httpx.Response(503, json=UNAVAILABLE)])
    with pytest.raises(CustodyAPIError):
        c.cancel_withdrawal("w-1")  # a retry after a lost answer would be refused: not cancellable
    assert len(seen) == 1
    c, seen = client([httpx.Response(503, json=UNAVAILABLE), httpx.Response(201, json=CREATED)])
    with pytest.raises(CustodyAPIError):
        c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key="k", retries=0)  # a caller's own cap
    assert len(seen) == 1


def test_a_proxy_without_a_replica_behind_it_is_retried():
    answers = [
        httpx.Response(502, text="Bad Gateway"),
        httpx.Response(504, text="<html>"),
        httpx.Response(200, json={}),
    ]
    c, seen = client(answers)
    assert c.balances() == {}
    assert len(seen) == 3


def test_backoff_grows_is_jittered_and_honours_retry_after():
    for attempt in range(12):
        ceiling = min(MAX_WAIT, 0.1 * 2**attempt)
        waits = [backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 100  # jittered: clients turned away together come back apart
    assert backoff(0, retry_after=1.0) >= 1.0
