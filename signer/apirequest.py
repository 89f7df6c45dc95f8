"""The exchange backend's signed API request: how its signature message is built, and what a stored request
says. Defined here, on the offline side, because both sides must compute the same bytes: the daemon checks
every request with it (``custody.intake.apikeys``), and each signer checks again, from the copy of the request
that a cold batch carries, that the backend really asked for the customer payout it is about to sign.

The message the backend signs with its Ed25519 key (docs/api.md; docs/batch-protocol.md section 2):

    message = "custody-request-v1" LF timestamp LF nonce LF METHOD LF path-with-query LF idempotency-key LF
              hex(SHA-256(body))

path-with-query is the request path percent-decoded (as UTF-8), then, if the query is not empty, "?" and the
query exactly as sent. timestamp is the decimal unix time exactly as sent in X-Custody-Timestamp, nonce the
16 to 64 hex digits of X-Custody-Nonce, idempotency-key the Idempotency-Key header (or empty).

A stored request (``withdrawals.request``, ``address_book.request``, and in a batch file) is the JSON object
``{"key", "method", "path", "timestamp", "nonce", "idempotency_key", "body_b64", "signature"}``, every value a
string: the API key's name, the method, path-with-query, the three headers as sent, the body in standard
base64 (with padding) and the signature in lowercase hex. ``SignedRequest.to_json`` writes exactly that.

The bodies a signer reads (each parsed strictly: one JSON object, no duplicate or unknown key, every value of
its type; anything else is refused rather than read another way than the daemon read it):

    POST /v1/withdrawals                     {"asset", "amount", "destination", "customer"?, "client_reference"?}
    POST /v1/customers/{customer}/addresses  {"asset", "address", "label", "lock"?}

Nothing here opens a socket or reads a clock; verifying is a pure function of the request and a public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import VerifyKey

DOMAIN = b"custody-request-v1"
WITHDRAWAL_PATH = "/v1/withdrawals"
CUSTOMER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
_ADDRESSES_PATH = re.compile(r"/v1/customers/(?P<customer>[A-Za-z0-9][A-Za-z0-9._:@-]{0,63})/addresses")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
MAX_BODY = 8192  # far above any body a signer reads (the daemon's own limit is max_body_bytes, 64 KiB)


def request_message(
    timestamp: str, nonce: str, method: str, path_with_query: str, idempotency_key: str, body: bytes
) -> bytes:
    """The bytes the backend's Ed25519 key signs for one request (see the module docstring)."""
    return b"\n".join(
        [
            DOMAIN,
            timestamp.encode("ascii"),
            nonce.encode("ascii"),
            method.upper().encode("ascii"),
            path_with_query.encode("utf-8"),
            idempotency_key.encode("utf-8"),
            hashlib.sha256(body).hexdigest().encode("ascii"),
        ]
    )


def verify_signature(public_key_hex: str, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public_key_hex``'s Ed25519 signature of ``message``."""
    try:
        VerifyKey(bytes.fromhex(public_key_hex)).verify(message, signature)
    except (BadSignatureError, NaclValueError, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """One request as the backend sent it, with its signature: enough to check the signature again later."""

    key: str  # the API key's name (a policy backend's name)
    method: str
    path: str  # path-with-query, as signed
    timestamp: str  # X-Custody-Timestamp exactly as sent
    nonce: str
    idempotency_key: str
    body: bytes
    signature: bytes  # 64 bytes

    @property
    def time(self) -> int:
        return int(self.timestamp)

    def message(self) -> bytes:
        return request_message(self.timestamp, self.nonce, self.method, self.path, self.idempotency_key, self.body)

    def verify(self, public_key_hex: str) -> bool:
        return verify_signature(public_key_hex, self.message(), self.signature)

    def to_json(self) -> dict[str, str]:
        return {
            "key": self.key,
            "method": self.method,
            "path": self.path,
            "timestamp": self.timestamp,
            "nonce": self.nonce,
            "idempotency_key": self.idempotency_key,
            "body_b64": base64.b64encode(self.body).decode("ascii"),
            "signature": self.signature.hex(),
        }


def decode_body(text: str) -> bytes:
    """Standard base64 with padding, written exactly one way; ValueError otherwise."""
    try:
        body = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("is not standard base64") from None
    if base64.b64encode(body).decode("ascii") != text:
        raise ValueError("is not base64 written the standard way (padding, no line breaks)")
    if len(body) > MAX_BODY:
        raise ValueError(f"holds a body over {MAX_BODY} bytes")
    return body


# -- the bodies --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WithdrawalBody:
    asset: str
    amount: str  # decimal string in the asset's units, as sent
    destination: str
    customer: str | None


@dataclass(frozen=True, slots=True)
class AddressBody:
    customer: str  # from the path
    asset: str
    address: str
    label: str
    lock: int | None  # seconds, when the backend asked for a longer lock than the policy's


def withdrawal_body(request: SignedRequest) -> WithdrawalBody:
    """The body of a signed ``POST /v1/withdrawals``; ValueError says what is wrong."""
    if request.method != "POST" or request.path != WITHDRAWAL_PATH:
        raise ValueError(f"it is a request to {request.method} {request.path[:80]!r}, not POST {WITHDRAWAL_PATH}")
    doc = _object(request.body, {"asset", "amount", "destination"}, {"customer", "client_reference"})
    for name in ("asset", "amount", "destination"):
        _string(doc, name)
    for name in ("customer", "client_reference"):
        _string(doc, name, optional=True)
    return WithdrawalBody(doc["asset"], doc["amount"], doc["destination"], doc.get("customer"))


def address_body(request: SignedRequest) -> AddressBody:
    """The body of a signed ``POST /v1/customers/{customer}/addresses``; ValueError says what is wrong."""
    match = _ADDRESSES_PATH.fullmatch(request.path)
    if request.method != "POST" or match is None:
        raise ValueError(
            f"it is a request to {request.method} {request.path[:80]!r}, not POST /v1/customers/{{customer}}/addresses"
        )
    doc = _object(request.body, {"asset", "address", "label"}, {"lock"})
    for name in ("asset", "address", "label"):
        _string(doc, name)
    lock = doc.get("lock")
    if lock is not None and (type(lock) is not int or not 0 <= lock < 2**53):
        raise ValueError("its lock is not a whole number of seconds")
    return AddressBody(match["customer"], doc["asset"], doc["address"], doc["label"], lock)


def _object(body: bytes, required: set[str], optional: set[str]) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
        if _depth(text) > 1:  # every body read here is flat; deep nesting can crash the C decoder (a segfault)
            raise ValueError("nested values")
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"its body is not one strict JSON object ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise ValueError("its body is not a JSON object")
    unknown = sorted(set(doc) - required - optional)
    if unknown:
        raise ValueError(f"its body has a field a signer does not know: {unknown[0][:40]!r}")
    missing = sorted(required - set(doc))
    if missing:
        raise ValueError(f"its body has no {missing[0]!r}")
    return doc


def _string(doc: dict[str, Any], name: str, *, optional: bool = False) -> None:
    """``doc[name]`` is a string (or, when ``optional``, absent or null, as the daemon's schema takes it)."""
    value = doc.get(name)
    if optional and value is None:
        return
    if not isinstance(value, str):
        raise ValueError(f"its body's {name!r} is not a string")


def _depth(text: str) -> int:
    """How deep brackets nest outside strings, measured before any decoder sees them."""
    depth = deepest = 0
    for char in _STRING.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
