"""The withdrawal API through the real client against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from nacl.signing import SigningKey
from sqlalchemy import func, select

from custody.api.client import CustodyAPIError, CustodyClient
from custody.intake.signatures import sign_request
from custody.store.models import AuditEntry, Withdrawal
from tests.conftest import DENIED, MAKER, OMNIBUS, add_client, running_server


def client_for(server, ck) -> CustodyClient:
    return CustodyClient(server.url, ck.name, ck.key)


def raw(server, ck, method: str, path: str, body: bytes = b"", *, headers=None, ts=None, sign_key=None):
    extra = dict(headers or {})
    signed = sign_request(
        sign_key or ck.key,
        ck.name,
        int(ts if ts is not None else time.time()),
        method,
        path,
        body,
        idempotency_key=extra.pop("Idempotency-Key", ""),
    )
    return httpx.request(method, server.url + path, content=body, headers={**extra, **signed}, timeout=30)


def counts(store) -> tuple[int, int]:
    with store.transaction() as s:
        return (
            s.scalar(select(func.count()).select_from(Withdrawal)),
            s.scalar(select(func.count()).select_from(AuditEntry)),
        )


def new_key() -> str:
    return uuid.uuid4().hex


def test_create_returns_the_stored_policy_decision(server):
    ck = add_client(server.store)
    with client_for(server, ck) as c:
        w = c.create_withdrawal("ETH", "1.5", OMNIBUS, idempotency_key=new_key(), client_reference="t-1")
        assert w["state"] == "queued_cold" and w["amount"] == "1.5" and w["amount_base_units"] == str(15 * 10**17)
        d = w["decision"]
        assert d["outcome"] == "allow" and d["route"] == "cold" and d["policy_version"] == 1
        assert {r["rule"] for r in d["reasons"]} >= {"whitelist", "deny_list", "max_per_transfer", "window:1h"}
        assert c.get_withdrawal(w["id"]) == w
        rejected = c.create_withdrawal("ETH", "1", DENIED, idempotency_key=new_key())
        assert rejected["state"] == "rejected" and rejected["decision"]["outcome"] == "reject"
        assert any(r["rule"] == "deny_list" and not r["passed"] for r in rejected["decision"]["reasons"])
        delayed = c.create_withdrawal("ETH", "10", MAKER, idempotency_key=new_key())
        assert delayed["state"] == "delayed" and delayed["decision"]["eligible_at"] is not None


def test_idempotency_same_body_same_withdrawal_different_body_conflict(server):
    ck = add_client(server.store)
    key = new_key()
    with client_for(server, ck) as c:
        first = c.request(
            "POST", "/v1/withdrawals", {"asset": "ETH", "amount": "1", "destination": OMNIBUS}, {"Idempotency-Key": key}
        )
        again = c.request(
            "POST", "/v1/withdrawals", {"asset": "ETH", "amount": "1", "destination": OMNIBUS}, {"Idempotency-Key": key}
        )
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["id"] == again.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
        with pytest.raises(CustodyAPIError) as info:
            c.create_withdrawal("ETH", "2", OMNIBUS, idempotency_key=key)
        assert (info.value.status, info.value.code) == (409, "idempotency_conflict")


def test_fifty_concurrent_identical_requests_create_exactly_one(server):
    ck = add_client(server.store)
    key = new_key()

    def submit(_: int) -> tuple[int, str]:
        with client_for(server, ck) as c:
            r = c.request(
                "POST",
                "/v1/withdrawals",
                {"asset": "ETH", "amount": "0.25", "destination": OMNIBUS},
                {"Idempotency-Key": key},
            )
            return r.status_code, r.json()["id"]

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(submit, range(50)))
    assert sorted(s for s, _ in results).count(201) == 1
    assert {s for s, _ in results} == {200, 201} and len({i for _, i in results}) == 1
    with server.store.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Withdrawal).where(Withdrawal.idempotency_key == key)) == 1


def test_signature_auth(server):
    ck = add_client(server.store)
    body = json.dumps({"asset": "ETH", "amount": "1", "destination": OMNIBUS}).encode()
    h = {"Idempotency-Key": new_key(), "Content-Type": "application/json"}
    assert raw(server, ck, "GET", "/v1/ping").status_code == 200
    wrong = raw(server, ck, "POST", "/v1/withdrawals", body, headers=h, sign_key=SigningKey.generate())
    assert (wrong.status_code, wrong.json()["code"]) == (401, "bad_signature")
    old = raw(server, ck, "POST", "/v1/withdrawals", body, headers=h, ts=time.time() - 40)
    assert (old.status_code, old.json()["code"]) == (401, "expired_timestamp")
    future = raw(server, ck, "POST", "/v1/withdrawals", body, headers=h, ts=time.time() + 40)
    assert future.json()["code"] == "expired_timestamp"
    unsigned = httpx.post(server.url + "/v1/withdrawals", content=body, headers=h)
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "missing_signature")
    # the signature covers the body and the idempotency key: changing either fails
    signed = sign_request(ck.key, ck.name, int(time.time()), "POST", "/v1/withdrawals", body, h["Idempotency-Key"])
    tampered = httpx.post(server.url + "/v1/withdrawals", content=body.replace(b'"1"', b'"9"'), headers={**h, **signed})
    assert tampered.json()["code"] == "bad_signature"
    rekeyed = httpx.post(
        server.url + "/v1/withdrawals", content=body, headers={**h, **signed, "Idempotency-Key": new_key()}
    )
    assert rekeyed.json()["code"] == "bad_signature"
    # the signature covers the query string too
    signed = sign_request(ck.key, ck.name, int(time.time()), "GET", "/v1/withdrawals?limit=1", b"")
    assert httpx.get(server.url + "/v1/withdrawals?limit=2", headers=signed).json()["code"] == "bad_signature"
    # a request is accepted once
    signed = sign_request(ck.key, ck.name, int(time.time()), "POST", "/v1/withdrawals", body, h["Idempotency-Key"])
    assert httpx.post(server.url + "/v1/withdrawals", content=body, headers={**h, **signed}).status_code == 201
    replay = httpx.post(server.url + "/v1/withdrawals", content=body, headers={**h, **signed})
    assert (replay.status_code, replay.json()["code"]) == (401, "replayed_request")
    stranger = raw(server, type(ck)("nobody", ck.key), "GET", "/v1/ping")
    assert stranger.json()["code"] == "unknown_key"


def test_the_signed_path_is_percent_decoded_and_the_query_is_signed_as_sent(server):
    """docs/api.md, "Signing a request": the server verifies the path percent-decoded (as UTF-8), the query
    string byte for byte as sent, and a `?` only when a query follows it. Sent with http.client, which puts
    the request target on the wire exactly as given (httpx would normalise some escapes)."""
    ck = add_client(server.store)
    with client_for(server, ck) as c:
        w = c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key=new_key())
    url = httpx.URL(server.url)

    def send(target: str, signed_as: str) -> tuple[int, dict]:
        headers = sign_request(ck.key, ck.name, int(time.time()), "GET", signed_as, b"")
        conn = http.client.HTTPConnection(url.host, url.port, timeout=30)
        try:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    # a path with an escape (%2D is "-"): the decoded form verifies, the form as sent does not
    escaped = "/v1/withdrawals/" + w["id"].replace("-", "%2D", 1)
    status, body = send(escaped, "/v1/withdrawals/" + w["id"])
    assert status == 200 and body["id"] == w["id"]
    status, body = send(escaped, escaped)
    assert (status, body["code"]) == (401, "bad_signature")
    # escapes decode as UTF-8: %C3%A9 is signed as "é" (authenticated, then simply not found)
    assert send("/v1/withdrawals/caf%C3%A9", "/v1/withdrawals/café")[0] == 404
    assert send("/v1/withdrawals/caf%C3%A9", "/v1/withdrawals/caf%C3%A9")[1]["code"] == "bad_signature"
    # the query is signed exactly as sent, escapes and all ("%5F" is "_", "%71" is "q")
    state = w["state"]
    query = f"/v1/withdrawals?state=%{ord(state[0]):02X}{state[1:].replace('_', '%5F')}&limit=5"
    status, body = send(query, query)
    assert status == 200 and [i["id"] for i in body["items"]] == [w["id"]]
    assert send(query, f"/v1/withdrawals?state={state}&limit=5")[1]["code"] == "bad_signature"
    # an empty "?" is not part of what is signed
    assert send("/v1/ping?", "/v1/ping") == (200, {"key": ck.name})
    assert send("/v1/ping?", "/v1/ping?")[1]["code"] == "bad_signature"
    # the Python client signs by the same rule: an id that needs escaping is authenticated, then not found
    with client_for(server, ck) as c, pytest.raises(CustodyAPIError) as info:
        c.get_withdrawal("café au lait")
    assert info.value.code == "not_found"


def test_revoked_keys_are_refused(server):
    from custody.intake import apikeys

    ck = add_client(server.store)
    assert raw(server, ck, "GET", "/v1/ping").status_code == 200
    apikeys.revoke_key(server.store, ck.name, int(time.time()))
    # the daemon caches public keys, but a revocation counts from the moment it commits: the intake's own
    # transaction refuses the key it had cached
    with client_for(server, ck) as c, pytest.raises(CustodyAPIError) as info:
        c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key=new_key())
    assert info.value.code == "unknown_key"
    with server.store.read() as s:
        assert s.query(Withdrawal).count() == 0
    assert raw(server, ck, "GET", "/v1/ping").json()["code"] == "unknown_key"


def test_scopes(server):
    reader = add_client(server.store, "reader", "read")
    writer = add_client(server.store, "writer", "withdraw")
    with client_for(server, reader) as c, pytest.raises(CustodyAPIError) as info:
        c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key=new_key())
    assert (info.value.status, info.value.code) == (403, "missing_scope")
    with client_for(server, writer) as c:
        w = c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key=new_key())
        for call in (lambda: c.get_withdrawal(w["id"]), lambda: c.cancel_withdrawal(w["id"])):
            with pytest.raises(CustodyAPIError) as info:
                call()
            assert info.value.code == "missing_scope"


GOOD = {"asset": "ETH", "amount": "1", "destination": OMNIBUS}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"asset": "ETH", "amount": ', 400, "malformed_json"),
        (b"[1, 2]", 400, "malformed_json"),
        (json.dumps({**GOOD, "memo": "x"}).encode(), 422, "unknown_field"),
        (json.dumps({"asset": "ETH", "amount": "1"}).encode(), 422, "missing_field"),
        (json.dumps({**GOOD, "amount": 1}).encode(), 422, "invalid_field"),
        (json.dumps({**GOOD, "amount": "0"}).encode(), 422, "invalid_amount"),
        (json.dumps({**GOOD, "amount": "-1"}).encode(), 422, "invalid_amount"),
        (json.dumps({**GOOD, "amount": "1e3"}).encode(), 422, "invalid_amount"),
        (json.dumps({**GOOD, "amount": "abc"}).encode(), 422, "invalid_amount"),
        (json.dumps({**GOOD, "amount": "0.0000000000000000001"}).encode(), 422, "invalid_amount"),
        (json.dumps({**GOOD, "asset": "USDC", "amount": "1.0000001"}).encode(), 422, "invalid_amount"),
        (json.dumps({**GOOD, "asset": "DOGE"}).encode(), 422, "unknown_asset"),
        (json.dumps({**GOOD, "asset": "DAI"}).encode(), 422, "asset_disabled"),
        (json.dumps({**GOOD, "destination": OMNIBUS[:-1] + "F"}).encode(), 422, "invalid_address"),
        (json.dumps({**GOOD, "destination": OMNIBUS.lower()}).encode(), 422, "invalid_address"),
        (json.dumps({**GOOD, "destination": "0x1234"}).encode(), 422, "invalid_address"),
        (json.dumps({**GOOD, "client_reference": "x" * 65537}).encode(), 413, "body_too_large"),
    ],
)
def test_bad_input_gets_a_specific_code_and_writes_nothing(server, body, status, code):
    ck = add_client(server.store)
    before = counts(server.store)
    r = raw(server, ck, "POST", "/v1/withdrawals", body, headers={"Idempotency-Key": new_key()})
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert counts(server.store) == before
    # and the idempotency key was not consumed: the corrected request is accepted under it
    key = new_key()
    raw(server, ck, "POST", "/v1/withdrawals", body, headers={"Idempotency-Key": key})
    assert (
        raw(
            server, ck, "POST", "/v1/withdrawals", json.dumps(GOOD).encode(), headers={"Idempotency-Key": key}
        ).status_code
        == 201
    )


def test_missing_idempotency_key(server):
    ck = add_client(server.store)
    r = raw(server, ck, "POST", "/v1/withdrawals", json.dumps(GOOD).encode())
    assert (r.status_code, r.json()["code"]) == (422, "missing_idempotency_key")


def test_cancel_rules(server):
    ck = add_client(server.store)
    with client_for(server, ck) as c:
        queued = c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key=new_key())
        delayed = c.create_withdrawal("ETH", "20", OMNIBUS, idempotency_key=new_key())
        rejected = c.create_withdrawal("ETH", "1", DENIED, idempotency_key=new_key())
        batched = c.create_withdrawal("ETH", "2", OMNIBUS, idempotency_key=new_key())
        with server.store.transaction() as s:
            s.execute(Withdrawal.__table__.update().where(Withdrawal.id == batched["id"]).values(state="batched"))
        assert c.cancel_withdrawal(queued["id"])["state"] == "cancelled"
        assert c.cancel_withdrawal(delayed["id"])["state"] == "cancelled"
        for w in (queued, rejected, batched):
            with pytest.raises(CustodyAPIError) as info:
                c.cancel_withdrawal(w["id"])
            assert (info.value.status, info.value.code) == (409, "not_cancellable")
        with pytest.raises(CustodyAPIError) as info:
            c.cancel_withdrawal(str(uuid.uuid4()))
        assert info.value.status == 404


def test_list_pagination_is_stable_and_private_to_the_key(server):
    ck, other = add_client(server.store), add_client(server.store, "other")
    with client_for(server, ck) as c:
        made = [c.create_withdrawal("USDC", str(i + 1), OMNIBUS, idempotency_key=new_key())["id"] for i in range(7)]
        c.cancel_withdrawal(made[3])
        seen, cursor = [], None
        while True:
            page = c.list_withdrawals(cursor=cursor, limit=3)
            seen += [w["id"] for w in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == made
        assert [w["id"] for w in c.list_withdrawals(state="cancelled")["items"]] == [made[3]]
        with pytest.raises(CustodyAPIError) as info:
            c.list_withdrawals(state="bogus")
        assert info.value.code == "invalid_field"
    with client_for(server, other) as c:
        assert c.list_withdrawals()["items"] == []
        with pytest.raises(CustodyAPIError) as info:
            c.get_withdrawal(made[0])
        assert info.value.status == 404


def test_health_readiness_and_openapi(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}
    doc = httpx.get(server.url + "/openapi.json").json()
    assert {"/v1/withdrawals", "/v1/withdrawals/{withdrawal_id}", "/v1/withdrawals/{withdrawal_id}/cancel"} <= set(
        doc["paths"]
    )
    assert "requestBody" in doc["paths"]["/v1/withdrawals"]["post"]
    missing = httpx.get(server.url + "/nope")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


def test_too_many_requests_for_a_key_get_429(seeded, tmp_path):
    ck, other = add_client(seeded), add_client(seeded, "other")
    with running_server(seeded, tmp_path, rate_limit_per_second=0.01, rate_limit_burst=3) as srv:
        assert [raw(srv, ck, "GET", "/v1/ping").status_code for _ in range(3)] == [200, 200, 200]
        limited = raw(srv, ck, "GET", "/v1/ping")
        assert (limited.status_code, limited.json()["code"]) == (429, "rate_limited")
        assert int(limited.headers["Retry-After"]) >= 1
        assert raw(srv, other, "GET", "/v1/ping").status_code == 200  # each key has its own budget
