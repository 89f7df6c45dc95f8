"""docs/batch-protocol.md's worked example of a customer payout's proofs (section 2, "Customer payouts") is what
the reference implementation computes: the request message, its stored form, and an operator's decision."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from nacl.signing import SigningKey

from policies.canonical import canonical_bytes
from policies.loader import Reader
from signer.apirequest import request_message
from signer.batchfile import parse_request
from signer.decisions import decision_message

DOC = Path(__file__).parents[2] / "docs" / "batch-protocol.md"
BACKEND = SigningKey(bytes([0x21]) * 32)
OLGA = SigningKey(bytes([0x31]) * 32)
WITHDRAWAL = "00000000-0000-4000-8000-000000000003"


def _section() -> str:
    text = DOC.read_text()
    return text[text.index("### Customer payouts") : text.index("### How `safe_tx` follows")]


def _blocks() -> list[str]:
    return re.findall(r"```\n(.*?)\n```", _section(), re.S)


def test_the_worked_example_is_what_the_implementation_computes():
    layout, body, message, stored, decision, listed = _blocks()
    section = _section()
    assert layout.splitlines()[0] == "custody-request-v1" and len(layout.splitlines()) == 7
    raw = body.encode()
    assert f"the body, {len(raw)} bytes" in section
    assert BACKEND.verify_key.encode().hex() in section and OLGA.verify_key.encode().hex() in section

    expected = request_message(
        "1767225000", "00112233445566778899aabbccddeeff", "POST", "/v1/withdrawals", "payout-0001", raw
    )
    assert message.encode() == expected and message.splitlines()[-1] == hashlib.sha256(raw).hexdigest()

    request = parse_request(Reader(human=False), json.loads(stored), "request")
    assert request.body == raw and request.message() == expected
    assert request.signature == BACKEND.sign(expected).signature and request.verify(BACKEND.verify_key.encode().hex())
    assert canonical_bytes(request.to_json()).decode() == stored

    signed = decision_message(WITHDRAWAL, "approve", "called the customer", 1767225300)
    assert signed == b"custody-review-v1\x00" + decision.encode()
    assert f'"signature":"{OLGA.sign(signed).signature.hex()}"' in listed and '"operator":"olga"' in listed
