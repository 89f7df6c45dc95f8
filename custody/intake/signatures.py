"""How a client signs an API request; the server and the Python client both use these functions. The message
format itself is ``signer.apirequest.request_message`` (re-exported here): offline signers rebuild it from the
stored request of a customer payout, so it is defined once, on the side that must distrust the host.

    message = "custody-request-v1" LF timestamp LF nonce LF METHOD LF path-with-query LF idempotency-key LF
              hex(SHA-256(body))

path-with-query is the request path percent-decoded (as UTF-8), then, if the query is not empty, "?" and the
query exactly as sent (docs/api.md gives the rule in full).

The signature is Ed25519 over ``message``, sent as hex in X-Custody-Signature, with the key's name in
X-Custody-Key, the decimal unix timestamp in X-Custody-Timestamp and 16 to 64 random hex digits in
X-Custody-Nonce (the idempotency key is the Idempotency-Key header, or empty).

Why a nonce: Ed25519 signatures are deterministic, so two genuine identical requests (a client retrying
within the same second) would otherwise carry the same signature and be refused as a replay. Why the
idempotency key: it decides whether a request creates a payment, so it must not be changeable in transit.
"""

from __future__ import annotations

import os

from nacl.signing import SigningKey

from signer.apirequest import request_message as request_message  # re-exported: the daemon verifies with it

KEY_HEADER = "X-Custody-Key"
TIMESTAMP_HEADER = "X-Custody-Timestamp"
NONCE_HEADER = "X-Custody-Nonce"
SIGNATURE_HEADER = "X-Custody-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def sign_request(
    key: SigningKey,
    key_name: str,
    timestamp: int,
    method: str,
    path_with_query: str,
    body: bytes,
    idempotency_key: str = "",
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers that authenticate one request (the Idempotency-Key header too, when there is one)."""
    nonce = nonce or os.urandom(16).hex()
    message = request_message(str(timestamp), nonce, method, path_with_query, idempotency_key, body)
    headers = {
        KEY_HEADER: key_name,
        TIMESTAMP_HEADER: str(timestamp),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: key.sign(message).signature.hex(),
    }
    if idempotency_key:
        headers[IDEMPOTENCY_HEADER] = idempotency_key
    return headers
