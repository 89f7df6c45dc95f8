"""What docs/api.md promises at the edges, against a real server: the signed target (decoded path, an empty
query dropped), no redirect for a trailing slash, the Idempotency-Key's alphabet, a malformed timestamp's own
code, the list's limits and cursor, cancel's body, the withdrawal object's fields, and the OpenAPI document's
security schemes and schemas."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from custody.intake.signatures import sign_request
from tests.conftest import OMNIBUS, seeded_server

SIGNATURE_HEADERS = {"X-Custody-Key", "X-Custody-Timestamp", "X-Custody-Nonce", "X-Custody-Signature"}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with seeded_server(tmp_path_factory.mktemp("api-exact")) as served:
        yield served


def send(srv, ck, method: str, target: str, body: bytes = b"", *, signed_target=None, idem="", headers=None):
    """Send ``target`` as the request target, byte for byte (http.client does not normalise it), signed over
    ``signed_target`` (by default the target itself)."""
    signed = sign_request(ck.key, ck.name, int(time.time()), method, signed_target or target, body, idem)
    signed.pop("Idempotency-Key", None)
    all_headers: dict[str, str | bytes] = {**signed, **(headers or {})}
    if idem and "Idempotency-Key" not in all_headers:
        all_headers["Idempotency-Key"] = idem
    where = urlsplit(srv.url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in all_headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        conn.close()


def code(answer) -> tuple[int, str]:
    status, headers, body = answer
    assert headers["content-type"] == "application/problem+json", (status, body)
    return status, json.loads(body)["code"]


def create(srv, ck, amount: str = "0.01", idem: str | None = None) -> dict:
    body = json.dumps({"asset": "ETH", "amount": amount, "destination": OMNIBUS}).encode()
    status, _, raw = send(srv, ck, "POST", "/v1/withdrawals", body, idem=idem or uuid.uuid4().hex)
    assert status == 201, raw
    return json.loads(raw)


def test_the_path_is_signed_percent_decoded_and_an_empty_query_is_dropped(api):
    srv, ck = api
    assert send(srv, ck, "GET", "/v1/ping?", signed_target="/v1/ping")[0] == 200
    assert code(send(srv, ck, "GET", "/v1/ping?", signed_target="/v1/ping?")) == (401, "bad_signature")
    # the signature verifies over the decoded path, so the answer is the route's own 404, not a 401
    decoded = send(srv, ck, "GET", "/v1/withdrawals/abc%2Ddef", signed_target="/v1/withdrawals/abc-def")
    assert code(decoded) == (404, "not_found")
    assert code(send(srv, ck, "GET", "/v1/withdrawals/abc%2Ddef")) == (401, "bad_signature")
    # the query is signed as sent, escapes kept
    kept = send(srv, ck, "GET", "/v1/withdrawals?state=queued%5Fcold")
    assert kept[0] == 200


@pytest.mark.parametrize("target", ["/v1/ping/", "/v1/withdrawals/", "/v1/balances/", "/healthz/"])
def test_a_trailing_slash_is_a_404_problem_not_a_redirect(api, target):
    srv, ck = api
    assert code(send(srv, ck, "GET", target)) == (404, "not_found")


@pytest.mark.parametrize(
    "stamp", [b"17e8", b"-1", b"+1700000000", b"1700000000.5", b"\xb2", b"1" * 21, b"0x65f0a000"], ids=repr
)
def test_a_malformed_timestamp_is_invalid_timestamp(api, stamp):
    srv, ck = api
    assert code(send(srv, ck, "GET", "/v1/ping", headers={"X-Custody-Timestamp": stamp})) == (
        401,
        "invalid_timestamp",
    )


def test_an_old_timestamp_is_still_expired(api):
    srv, ck = api
    old = sign_request(ck.key, ck.name, int(time.time()) - 3600, "GET", "/v1/ping", b"")
    answer = httpx.get(srv.url + "/v1/ping", headers=old)
    assert (answer.status_code, answer.json()["code"]) == (401, "expired_timestamp")


@pytest.mark.parametrize(
    "key",
    ["a\tb", "caf\u00c3\u00a9", "\u00e9", "x" * 129],
    ids=["inner-tab", "utf8-read-as-latin1", "non-ascii", "too-long"],
)
def test_an_idempotency_key_outside_printable_ascii_is_refused(api, key):
    srv, ck = api
    body = json.dumps({"asset": "ETH", "amount": "0.01", "destination": OMNIBUS}).encode()
    # the server reads header bytes as Latin-1, so send exactly the Latin-1 bytes of what was signed
    answer = send(
        srv, ck, "POST", "/v1/withdrawals", body, idem=key, headers={"Idempotency-Key": key.encode("latin-1")}
    )
    assert code(answer) == (422, "missing_idempotency_key")


@pytest.mark.parametrize("key", ["a", "a b", "~" * 128, "order-42/2030:03#1"])
def test_printable_ascii_idempotency_keys_are_taken(api, key):
    srv, ck = api
    body = json.dumps({"asset": "ETH", "amount": "0.01", "destination": OMNIBUS}).encode()
    status, _, raw = send(srv, ck, "POST", "/v1/withdrawals", body, idem=key)
    assert status in (200, 201), raw


def test_a_different_body_is_compared_by_its_values(api):
    srv, ck = api
    idem = uuid.uuid4().hex
    first = b'{"asset": "ETH", "amount": "0.50", "destination": "%s"}' % OMNIBUS.encode()
    reordered = b'{"destination":"%s","amount":"0.50","asset":"\\u0045TH","client_reference":null}' % OMNIBUS.encode()
    shorter = b'{"asset": "ETH", "amount": "0.5", "destination": "%s"}' % OMNIBUS.encode()
    made = send(srv, ck, "POST", "/v1/withdrawals", first, idem=idem)
    assert made[0] == 201
    again = send(srv, ck, "POST", "/v1/withdrawals", reordered, idem=idem)
    assert again[0] == 200 and again[1]["idempotent-replayed"] == "true"
    assert json.loads(again[2])["id"] == json.loads(made[2])["id"]
    assert code(send(srv, ck, "POST", "/v1/withdrawals", shorter, idem=idem)) == (409, "idempotency_conflict")


def test_the_withdrawal_object_has_every_documented_field(api):
    srv, ck = api
    w = create(srv, ck)
    assert set(w) == {
        "id",
        "state",
        "asset",
        "amount",
        "amount_base_units",
        "destination",
        "client_reference",
        "customer",
        "decision",
        "tx_hash",
        "created_at",
        "updated_at",
    }
    assert w["tx_hash"] is None
    assert set(w["decision"]) == {
        "outcome",
        "route",
        "destination_kind",
        "eligible_at",
        "policy_version",
        "policy_hash",
        "reasons",
    }


def test_the_list_limit_and_cursor(api):
    srv, ck = api
    for _ in range(3):
        create(srv, ck)
    status, _, raw = send(srv, ck, "GET", "/v1/withdrawals?limit=2")
    page = json.loads(raw)
    assert status == 200 and len(page["items"]) == 2 and page["next_cursor"]
    status, _, raw = send(srv, ck, "GET", f"/v1/withdrawals?limit=2&cursor={page['next_cursor']}")
    assert status == 200 and json.loads(raw)["items"][0]["id"] != page["items"][0]["id"]
    assert send(srv, ck, "GET", "/v1/withdrawals?limit=200")[0] == 200
    assert code(send(srv, ck, "GET", "/v1/withdrawals?limit=201")) == (422, "invalid_field")
    assert code(send(srv, ck, "GET", "/v1/withdrawals?limit=0")) == (422, "invalid_field")
    for bad in ("abc", "-1", "1" * 20, "%C2%B2", "1.5"):
        assert code(send(srv, ck, "GET", f"/v1/withdrawals?cursor={bad}")) == (422, "invalid_cursor"), bad


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"reason": "customer asked"}', (422, "unknown_field")),
        (b"[]", (400, "malformed_json")),
        (b"not json", (400, "malformed_json")),
    ],
)
def test_cancel_refuses_any_body_but_an_empty_object(api, body, expected):
    srv, ck = api
    w = create(srv, ck)
    assert code(send(srv, ck, "POST", f"/v1/withdrawals/{w['id']}/cancel", body)) == expected
    _, _, raw = send(srv, ck, "GET", f"/v1/withdrawals/{w['id']}")
    assert json.loads(raw)["state"] == w["state"]  # not cancelled


@pytest.mark.parametrize("body", [b"", b"{}", b" { } "])
def test_cancel_with_no_body_or_an_empty_object(api, body):
    srv, ck = api
    w = create(srv, ck)
    status, _, raw = send(srv, ck, "POST", f"/v1/withdrawals/{w['id']}/cancel", body)
    assert status == 200 and json.loads(raw)["state"] == "cancelled"


def test_openapi_declares_the_signature_and_complete_schemas(api):
    srv, _ = api
    doc = httpx.get(srv.url + "/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert {(s["type"], s["in"], s["name"]) for s in schemes.values()} == {
        ("apiKey", "header", h) for h in SIGNATURE_HEADERS
    }
    everything = {name: [] for name in schemes}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/v1/"):
                assert operation.get("security") == [everything], (method, path)
            else:
                assert "security" not in operation, (method, path)
    assert "security" not in doc  # the probes and /metrics are not signed
    schemas = doc["components"]["schemas"]
    withdrawal = schemas.get("WithdrawalOut") or schemas["WithdrawalOut-Output"]
    assert set(withdrawal["required"]) == set(withdrawal["properties"]) >= {"tx_hash", "decision", "state"}
    assert all("description" in p for p in withdrawal["properties"].values())
    page = schemas.get("WithdrawalPage") or schemas["WithdrawalPage-Output"]
    assert set(page["required"]) == {"items", "next_cursor"}
    problem = schemas["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "code", "detail"}
    assert all("description" in p for p in problem["properties"].values())
    cancel = doc["paths"]["/v1/withdrawals/{withdrawal_id}/cancel"]["post"]["requestBody"]
    assert cancel["required"] is False
    assert cancel["content"]["application/json"]["schema"]["additionalProperties"] is False
