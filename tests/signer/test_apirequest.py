"""The backend's request signature, as a signer rebuilds it from a stored request: the same bytes the daemon's
client signs, and bodies read strictly (never another way than the daemon read them)."""

from __future__ import annotations

import base64
import json

import pytest
from nacl.signing import SigningKey

from custody.intake.signatures import sign_request
from signer.apirequest import (
    MAX_BODY,
    SignedRequest,
    address_body,
    decode_body,
    request_message,
    verify_signature,
    withdrawal_body,
)

KEY = SigningKey(bytes([0x21]) * 32)
PUBLIC = KEY.verify_key.encode().hex()
PAYEE = "0x1111111111111111111111111111111111111111"


def stored(method: str, path: str, body: bytes, idem: str = "k-1", at: int = 1_767_225_600) -> SignedRequest:
    headers = sign_request(KEY, "backend", at, method, path, body, idem, nonce="00" * 16)
    return SignedRequest(
        "backend", method, path, str(at), "00" * 16, idem, body, bytes.fromhex(headers["X-Custody-Signature"])
    )


def test_the_message_is_the_one_the_daemons_client_signs():
    body = b'{"asset":"ETH","amount":"1.5","destination":"0x1111111111111111111111111111111111111111"}'
    request = stored("POST", "/v1/withdrawals", body)
    assert request.verify(PUBLIC)
    assert request.message() == request_message("1767225600", "00" * 16, "post", "/v1/withdrawals", "k-1", body)
    assert request.message().split(b"\n")[:4] == [b"custody-request-v1", b"1767225600", b"0" * 32, b"POST"]
    # every signed field matters
    for field, value in (("timestamp", "1767225601"), ("idempotency_key", "k-2"), ("body", body + b" ")):
        assert not SignedRequest(**{**_fields(request), field: value}).verify(PUBLIC), field
    assert not verify_signature(PUBLIC, request.message(), bytes(64))
    assert not verify_signature("zz", request.message(), request.signature)


def _fields(request: SignedRequest) -> dict[str, object]:
    return {name: getattr(request, name) for name in SignedRequest.__slots__}


def test_the_stored_form_is_all_strings_and_the_body_in_standard_base64():
    request = stored("POST", "/v1/withdrawals", b'{"a":1}')
    doc = request.to_json()
    assert set(doc) == {"key", "method", "path", "timestamp", "nonce", "idempotency_key", "body_b64", "signature"}
    assert all(isinstance(v, str) for v in doc.values())
    assert decode_body(doc["body_b64"]) == b'{"a":1}' and doc["signature"] == request.signature.hex()
    assert (request.key, request.idempotency_key) == ("backend", "k-1") and request.time == 1_767_225_600


@pytest.mark.parametrize("text", ["eyJhIjoxfQ", "eyJh\nIjoxfQ==", "eyJhIjoxfQ==\n", "!!!!", "eyJhIjoxfR=="])
def test_base64_is_read_one_way_only(text):
    with pytest.raises(ValueError):
        decode_body(text)


def test_a_body_over_the_limit_is_refused():
    with pytest.raises(ValueError, match="over"):
        decode_body(base64.b64encode(b"x" * (MAX_BODY + 1)).decode())


def withdrawal(body: object, path: str = "/v1/withdrawals", method: str = "POST") -> SignedRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return stored(method, path, raw)


def test_a_withdrawal_body_is_read_as_the_daemon_reads_it():
    body = withdrawal({"asset": "ETH", "amount": "1.5", "destination": PAYEE, "customer": "c-1"})
    assert withdrawal_body(body).amount == "1.5" and withdrawal_body(body).customer == "c-1"
    spaced = withdrawal(
        b'{ "destination" : "%s", "amount": "1", "asset": "ETH", "client_reference": null }' % PAYEE.encode()
    )
    assert withdrawal_body(spaced).customer is None  # any JSON spelling; customer absent or null
    assert (
        withdrawal_body(withdrawal({"asset": "ETH", "amount": "1", "destination": PAYEE, "customer": None})).customer
        is None
    )


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"asset":"ETH","amount":"1","amount":"9","destination":"x"}', "duplicate key"),
        ({"asset": "ETH", "amount": "1", "destination": PAYEE, "memo": "hi"}, "does not know"),
        ({"asset": "ETH", "destination": PAYEE}, "no 'amount'"),
        ({"asset": "ETH", "amount": 1, "destination": PAYEE}, "'amount' is not a string"),
        ({"asset": "ETH", "amount": "1", "destination": PAYEE, "customer": 42}, "'customer' is not a string"),
        ([1, 2], "not a JSON object"),
        (b'{"asset":"ETH","amount":NaN}', "strict JSON"),
        (b"\xff", "strict JSON"),
        (b"[" * 100_000, "strict JSON"),
    ],
)
def test_a_withdrawal_body_that_could_be_read_two_ways_is_refused(body, why):
    with pytest.raises(ValueError, match=why):
        withdrawal_body(withdrawal(body))


def test_only_a_post_to_the_withdrawals_endpoint_is_a_withdrawal():
    body = {"asset": "ETH", "amount": "1", "destination": PAYEE}
    for method, path in (("GET", "/v1/withdrawals"), ("POST", "/v1/withdrawals?x=1"), ("POST", "/v1/withdrawals/")):
        with pytest.raises(ValueError, match="not POST /v1/withdrawals"):
            withdrawal_body(withdrawal(body, path, method))


def test_an_address_book_body_names_its_customer_in_the_path():
    body = {"asset": "ETH", "address": PAYEE, "label": "Alice", "lock": 172800}
    parsed = address_body(withdrawal(body, "/v1/customers/cust-42/addresses"))
    assert (parsed.customer, parsed.asset, parsed.address, parsed.label, parsed.lock) == (
        "cust-42",
        "ETH",
        PAYEE,
        "Alice",
        172800,
    )
    for path in ("/v1/customers/cust-42/addresses/x", "/v1/customers/a%2Fb/addresses", "/v1/customers//addresses"):
        with pytest.raises(ValueError, match="not POST"):
            address_body(withdrawal(body, path))
    for lock in (True, -1, 1.5, "1d"):
        with pytest.raises(ValueError, match="lock"):
            address_body(withdrawal({**body, "lock": lock}, "/v1/customers/cust-42/addresses"))
