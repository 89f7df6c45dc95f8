"""The batch format's customer-payout fields: written only when set, read back to the same bytes, and every
other spelling refused (an unknown key, a half-present payout, a proof on a treasury transfer)."""

from __future__ import annotations

import copy
import dataclasses
import uuid
from typing import Any

import pytest
from nacl.signing import SigningKey

from signer.apirequest import SignedRequest
from signer.batchfile import (
    BatchWithdrawal,
    parse_batch_file,
    sign_batch_body,
    withdrawal_problem,
    write_batch_file,
)
from signer.decisions import sign_decision
from signer.errors import BatchInvalid
from signer.review import assemble
from signer.safecontracts import MULTISEND_CALL_ONLY
from tests.conftest import OMNIBUS
from tests.signer.test_apirequest import stored

DAEMON = SigningKey(bytes([9]) * 32)
SAFE = "0x7d0E20C9DCFd305eba30c2198C969993795bEb61"
PAYEE = "0x1111111111111111111111111111111111111111"
OLGA = SigningKey(bytes([0x31]) * 32)


def request(body: bytes = b'{"asset":"ETH","amount":"1","destination":"%s","customer":"c-1"}' % PAYEE.encode()):
    return stored("POST", "/v1/withdrawals", body)


def customer_payout(**changes: Any) -> BatchWithdrawal:
    wid = str(uuid.uuid4())
    w = BatchWithdrawal(
        wid,
        "ETH",
        10**18,
        18,
        None,
        PAYEE,
        "Alice",
        customer="c-1",
        kind="address_book",
        request=request(),
        book_request=stored(
            "POST", "/v1/customers/c-1/addresses", b'{"asset":"ETH","address":"x","label":"Alice"}', ""
        ),
        approvals=(
            sign_decision(OLGA, "olga", wid, "approve", "called the customer", 1_767_225_000),
            sign_decision(OLGA, "piotr", wid, "approve", "line 1\nline 2 \u202e", 1_767_225_100),
        ),
    )
    return dataclasses.replace(w, **changes)


def write(*withdrawals: BatchWithdrawal) -> bytes:
    from policies.model import AssetRule, Governance, Policy

    policy = Policy(Governance((), 1, 0), {"ETH": AssetRule("ETH", True, 18, 10**30, 0)})
    batch = assemble(
        batch_id=str(uuid.UUID(int=1)),
        chain_id=31337,
        safe=SAFE,
        safe_nonce=3,
        multisend=MULTISEND_CALL_ONLY,
        policy_version=1,
        policy_hash="ab" * 32,
        created_at=1_767_225_600,
        expires_at=1_767_312_000,
        withdrawals=list(withdrawals),
        policy=policy,
    )
    return write_batch_file(batch, DAEMON)


def test_a_customer_payout_round_trips_byte_for_byte():
    w = customer_payout()
    raw = write(w, BatchWithdrawal(str(uuid.uuid4()), "ETH", 5, 18, None, OMNIBUS, "omnibus"))
    parsed = parse_batch_file(raw)
    parsed.verify_daemon_signature(DAEMON.verify_key.encode().hex())
    assert parsed.batch.withdrawals[0] == w
    assert write_batch_file(parsed.batch, DAEMON) == raw
    listed = parsed.batch.body()["withdrawals"]
    assert set(listed[1]) == {"id", "asset", "amount", "decimals", "token", "destination", "label"}  # as before
    assert listed[0]["request"] == w.request.to_json() if w.request else False
    assert listed[0]["approvals"][1] == {
        "operator": "piotr",
        "decision": "approve",
        "reason": "line 1\nline 2 \u202e",
        "at": 1_767_225_100,
        "signature": w.approvals[1].signature.hex(),
    }
    assert withdrawal_problem(w) is None


def test_a_batch_without_customer_payouts_is_what_it_always_was():
    """Format 1 still: the worked example of docs/batch-protocol.md parses and is rewritten identically
    (tests/signer/test_batch_protocol_doc.py), and nothing new appears in a treasury transfer."""
    plain = BatchWithdrawal(str(uuid.uuid4()), "ETH", 5, 18, None, OMNIBUS, "omnibus")
    assert b'"format":1' in write(plain) and b"customer" not in write(plain)


def edited(edit) -> bytes:
    raw = write(customer_payout())
    body = copy.deepcopy(parse_batch_file(raw).batch.body())
    edit(body["withdrawals"][0])
    return sign_batch_body(body, DAEMON)


BROKEN = {
    "an unknown key in a withdrawal": lambda w: w.update(memo="x"),
    "an unknown key in a request": lambda w: w["request"].update(extra="x"),
    "a request missing its nonce": lambda w: w["request"].pop("nonce"),
    "an unknown key in an approval": lambda w: w["approvals"][0].update(weight=2),
    "a customer without a kind": lambda w: w.pop("kind"),
    "a kind without a customer": lambda w: w.pop("customer"),
    "an unknown kind": lambda w: w.update(kind="friend"),
    "a customer id with a slash": lambda w: w.update(customer="a/b"),
    "a proof on a treasury transfer": lambda w: [w.pop("customer"), w.pop("kind"), w.pop("book_request")],
    "a book request on an unlisted payout": lambda w: w.update(kind="unlisted"),
    "an empty approvals list": lambda w: w.update(approvals=[]),
    "approvals out of order": lambda w: w.update(approvals=w["approvals"][::-1]),
    "one operator twice": lambda w: w.update(approvals=[w["approvals"][0]] * 2),
    "a decision that is neither": lambda w: w["approvals"][0].update(decision="maybe"),
    "an approval time as a string": lambda w: w["approvals"][0].update(at="1767225000"),
    "a reason too long": lambda w: w["approvals"][0].update(reason="x" * 1001),
    "a signature in capitals": lambda w: w["request"].update(signature=w["request"]["signature"].upper()),
    "a timestamp with a leading zero": lambda w: w["request"].update(timestamp="0" + w["request"]["timestamp"]),
    "a timestamp past 9999": lambda w: w["request"].update(timestamp="999999999999"),
    "a timestamp as a number": lambda w: w["request"].update(timestamp=1767225600),
    "a body in url-safe base64 without padding": lambda w: w["request"].update(
        body_b64=w["request"]["body_b64"].rstrip("=")
    ),
    "a nonce too short": lambda w: w["request"].update(nonce="ab"),
    "a method in lower case": lambda w: w["request"].update(method="post"),
    "a path without its slash": lambda w: w["request"].update(path="v1/withdrawals"),
    "an idempotency key with a newline": lambda w: w["request"].update(idempotency_key="a\nb"),
    "an operator name that is not a name": lambda w: w["approvals"][0].update(operator="Olga Smith"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_every_other_spelling_is_refused(name):
    with pytest.raises(BatchInvalid) as caught:
        parse_batch_file(edited(BROKEN[name]))
    assert caught.value.code == "batch_invalid", name


def test_the_exporter_learns_what_the_parser_would_refuse():
    assert "customer" in (withdrawal_problem(customer_payout(customer="a b")) or "")
    assert "only an address_book payout" in (withdrawal_problem(customer_payout(kind="unlisted")) or "")
    long_reason = customer_payout().approvals[0]
    assert withdrawal_problem(customer_payout(approvals=(dataclasses.replace(long_reason, reason="x" * 1001),)))
    bad_label = customer_payout(label="Ali\u202ece")
    assert withdrawal_problem(bad_label)


def test_request_fields_are_typed_as_the_daemon_stores_them():
    """Stored by intake as ``SignedRequest.to_json``: the batch carries the same object."""
    r = request()
    assert isinstance(r, SignedRequest)
    raw = write(customer_payout(request=r))
    assert parse_batch_file(raw).batch.withdrawals[0].request == r
