"""The batch file and the signature file: the only things that cross the air gap for a cold payment.

Defined here, on the side that must distrust them; specified byte for byte in docs/batch-protocol.md.

Batch file (canonical JSON, see ``policies.canonical``):

    {"kind": "custody-cold-batch", "format": 1,
     "batch": {
        "id": "<uuid>", "chain_id": 1, "safe": "0x…", "safe_nonce": 7, "multisend": "0x…",
        "policy_version": 3, "policy_hash": "<sha-256 hex of the policy bundle>",
        "created_at": <unix s>, "expires_at": <unix s>,
        "withdrawals": [{"id": "<uuid>", "asset": "USDC", "amount": "<base units>", "decimals": 6,
                         "token": "0x…" | null, "destination": "0x…", "label": "<whitelist label>",
                         # a customer payout only (each key present only when set; see below):
                         "customer": "<customer id>", "kind": "whitelist" | "address_book" | "unlisted",
                         "request": REQUEST, "book_request": REQUEST, "approvals": [APPROVAL, …]}, …],
        "safe_tx": {"to": "0x…", "value": "<wei>", "data": "0x…", "operation": 0 | 1,
                    "safe_tx_gas": "0", "base_gas": "0", "gas_price": "0",
                    "gas_token": "0x0…0", "refund_receiver": "0x0…0", "nonce": 7},
        "safe_tx_hash": "0x<64 hex>"},
     "daemon_key": "<Ed25519 public key, 64 hex>",
     "signature": "<Ed25519 signature, 128 hex, over b'custody-batch-v1:' ‖ canonical_bytes(batch)>"}

A customer payout (a withdrawal with a ``customer``) says which kind of destination the daemon found
(``kind``), and carries the proofs that a signer re-checks (``signer.payouts``): ``request``, the exchange
backend's signed ``POST /v1/withdrawals``; ``book_request``, only with kind ``address_book``, the backend's
signed POST that added the address-book entry; ``approvals``, only if it was held, the operators' signed
decisions, sorted by operator name, at least one. A treasury transfer (no ``customer``) has none of these
keys, so a batch without customer payouts is byte for byte what it was before they existed (format 1 still):

    REQUEST  = {"key", "method", "path", "timestamp", "nonce", "idempotency_key", "body_b64", "signature"}
               (every value a string; ``signer.apirequest``)
    APPROVAL = {"operator": "<name>", "decision": "approve" | "reject", "reason": "<text>", "at": <unix s>,
                "signature": "<128 hex>"}   (``signer.decisions``)

Signature file (one owner's approval of one batch):

    {"kind": "custody-batch-signature", "format": 1, "batch_id": "<uuid>", "chain_id": 1, "safe": "0x…",
     "safe_nonce": 7, "safe_tx_hash": "0x…", "owner": "0x…", "signature": "0x<r ‖ s ‖ v, 130 hex>"}

Amounts are strings of base units (they pass 2^53); counts and times are integers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import SigningKey, VerifyKey

from policies.bundle import read_document
from policies.canonical import canonical_bytes
from policies.errors import CustodyError
from policies.loader import LAST_INSTANT, Reader
from policies.units import parse_base_units
from signer.apirequest import CUSTOMER, SignedRequest, decode_body
from signer.decisions import APPROVE, MAX_REASON, REJECT, Decision
from signer.errors import BatchInvalid, BatchSignatureInvalid
from signer.safetx import SafeTx, SignatureInvalid, recover_owner, safe_tx_hash

BATCH_KIND, SIGNATURE_KIND, FORMAT = "custody-cold-batch", "custody-batch-signature", 1
SIGNING_DOMAIN = b"custody-batch-v1:"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_HASH = re.compile(r"0x[0-9a-f]{64}")
_SYMBOL = re.compile(r"[A-Z0-9]{1,16}")
_DATA = re.compile(r"0x(?:[0-9a-f]{2})*")
_KEY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # API keys, backends, operators (policies.reading.NAME)
_METHOD = re.compile(r"[A-Z]{1,16}")
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,11}")
_NONCE = re.compile(r"[0-9a-f]{16,64}")
MAX_WITHDRAWALS = 500
MAX_APPROVALS = 16
KINDS = ("whitelist", "address_book", "unlisted")


@dataclass(frozen=True, slots=True)
class BatchWithdrawal:
    id: str
    asset: str
    amount: int
    decimals: int
    token: str | None
    destination: str
    label: str
    # A customer payout only; see the module docstring.
    customer: str | None = None
    kind: str | None = None  # what the daemon found; the signer judges for itself (signer.payouts)
    request: SignedRequest | None = None
    book_request: SignedRequest | None = None
    approvals: tuple[Decision, ...] = ()

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "asset": self.asset,
            "amount": str(self.amount),
            "decimals": self.decimals,
            "token": self.token,
            "destination": self.destination,
            "label": self.label,
        }
        if self.customer is not None:
            out["customer"] = self.customer
        if self.kind is not None:
            out["kind"] = self.kind
        if self.request is not None:
            out["request"] = self.request.to_json()
        if self.book_request is not None:
            out["book_request"] = self.book_request.to_json()
        if self.approvals:
            out["approvals"] = [a.to_json() for a in self.approvals]
        return out


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    chain_id: int
    safe: str
    safe_nonce: int
    multisend: str
    policy_version: int
    policy_hash: str
    created_at: int
    expires_at: int
    withdrawals: tuple[BatchWithdrawal, ...]
    safe_tx: SafeTx
    safe_tx_hash: bytes

    def body(self) -> dict[str, Any]:
        tx = self.safe_tx
        return {
            "id": self.id,
            "chain_id": self.chain_id,
            "safe": self.safe,
            "safe_nonce": self.safe_nonce,
            "multisend": self.multisend,
            "policy_version": self.policy_version,
            "policy_hash": self.policy_hash,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "withdrawals": [w.body() for w in self.withdrawals],
            "safe_tx": {
                "to": tx.to,
                "value": str(tx.value),
                "data": "0x" + tx.data.hex(),
                "operation": tx.operation,
                "safe_tx_gas": str(tx.safe_tx_gas),
                "base_gas": str(tx.base_gas),
                "gas_price": str(tx.gas_price),
                "gas_token": tx.gas_token,
                "refund_receiver": tx.refund_receiver,
                "nonce": tx.nonce,
            },
            "safe_tx_hash": "0x" + self.safe_tx_hash.hex(),
        }

    def hash_matches(self) -> bool:
        return safe_tx_hash(self.chain_id, self.safe, self.safe_tx) == self.safe_tx_hash


@dataclass(frozen=True, slots=True)
class BatchFile:
    batch: Batch
    daemon_key: str
    signature: str
    raw: bytes

    def verify_daemon_signature(self, pinned_key: str) -> None:
        verify_envelope(SIGNING_DOMAIN, self.batch.body(), self.daemon_key, self.signature, pinned_key)


def verify_envelope(domain: bytes, body: dict[str, Any], daemon_key: str, signature: str, pinned_key: str) -> None:
    """A batch file's envelope (either chain's): signed by the pinned daemon key, over ``domain`` and the
    canonical body; BatchSignatureInvalid otherwise."""
    if daemon_key != pinned_key:
        raise BatchSignatureInvalid(
            f"the batch is signed by daemon key {daemon_key[:16]}…, not the pinned {pinned_key[:16]}…"
        )
    try:
        VerifyKey(bytes.fromhex(pinned_key)).verify(domain + canonical_bytes(body), bytes.fromhex(signature))
    except (BadSignatureError, NaclValueError):
        raise BatchSignatureInvalid("the daemon's signature over the batch is not valid") from None


def sign_envelope(kind: str, fmt: int, domain: bytes, body: dict[str, Any], key: SigningKey) -> bytes:
    """A batch file (either chain's) for ``body`` as given, signed by the daemon ``key`` over ``domain``."""
    signature = key.sign(domain + canonical_bytes(body)).signature.hex()
    return canonical_bytes(
        {
            "kind": kind,
            "format": fmt,
            "batch": body,
            "daemon_key": key.verify_key.encode().hex(),
            "signature": signature,
        }
    )


def write_batch_file(batch: Batch, key: SigningKey) -> bytes:
    return sign_batch_body(batch.body(), key)


def sign_batch_body(body: dict[str, Any], key: SigningKey) -> bytes:
    """The batch file for ``body`` as given, signed by the daemon key (tests use it to sign edited bodies)."""
    return sign_envelope(BATCH_KIND, FORMAT, SIGNING_DOMAIN, body, key)


def parse_batch_file(raw: bytes) -> BatchFile:
    doc = read_document(raw, BATCH_KIND, {"batch", "daemon_key", "signature"}, BatchInvalid)
    r = Reader(human=False)
    try:
        batch = _batch(r, doc["batch"])
        parsed = BatchFile(
            batch,
            r.text(doc["daemon_key"], "daemon_key", _HEX64, "Ed25519 public key"),
            r.text(doc["signature"], "signature", _HEX128, "Ed25519 signature"),
            raw,
        )
    except CustodyError as exc:
        raise BatchInvalid(f"not a valid batch file: {exc.message}") from None
    except ValueError as exc:  # a value too large for its ABI word
        raise BatchInvalid(f"not a valid batch file: {exc}") from None
    if canonical_bytes(batch.body()) != canonical_bytes(doc["batch"]):
        raise BatchInvalid("the batch is not in canonical form (a number or address written another way)")
    return parsed


def _batch(r: Reader, value: Any) -> Batch:
    b = r.table(
        value,
        "batch",
        {
            "id",
            "chain_id",
            "safe",
            "safe_nonce",
            "multisend",
            "policy_version",
            "policy_hash",
            "created_at",
            "expires_at",
            "withdrawals",
            "safe_tx",
            "safe_tx_hash",
        },
    )
    items = r.array(b["withdrawals"], "batch.withdrawals")
    if len(items) > MAX_WITHDRAWALS:
        raise BatchInvalid(f"a batch holds at most {MAX_WITHDRAWALS} withdrawals")
    withdrawals = tuple(_withdrawal(r, item, f"batch.withdrawals[{i}]") for i, item in enumerate(items))
    r.unique(list(withdrawals), lambda w: w.id, "batch.withdrawals", "withdrawal id")
    return Batch(
        id=r.text(b["id"], "batch.id", _UUID, "batch id"),
        chain_id=r.count(b["chain_id"], "batch.chain_id", 1, 2**53),
        safe=r.address(b["safe"], "batch.safe"),
        safe_nonce=r.count(b["safe_nonce"], "batch.safe_nonce", 0, 2**53),
        multisend=r.address(b["multisend"], "batch.multisend"),
        policy_version=r.count(b["policy_version"], "batch.policy_version", 0, 2**53),
        policy_hash=r.text(b["policy_hash"], "batch.policy_hash", _HEX64, "SHA-256 hex digest"),
        created_at=r.instant(b["created_at"], "batch.created_at"),
        expires_at=r.instant(b["expires_at"], "batch.expires_at"),
        withdrawals=withdrawals,
        safe_tx=_safe_tx(r, b["safe_tx"]),
        safe_tx_hash=bytes.fromhex(r.text(b["safe_tx_hash"], "batch.safe_tx_hash", _HASH, "hash")[2:]),
    )


def _withdrawal(
    r: Reader, value: Any, path: str, destination: Callable[[Any, str], str] | None = None
) -> BatchWithdrawal:
    """One withdrawal object; ``destination`` reads its address (default: an EIP-55 Ethereum address; a
    Bitcoin batch passes its network's reader, ``signer.btcbatch``)."""
    read_destination = destination or r.address
    w = r.table(
        value,
        path,
        {"id", "asset", "amount", "decimals", "token", "destination", "label"},
        {"customer", "kind", "request", "book_request", "approvals"},
    )
    customer = None if "customer" not in w else r.text(w["customer"], f"{path}.customer", CUSTOMER, "customer id")
    kind = None if "kind" not in w else r.text(w["kind"], f"{path}.kind")
    if kind is not None and kind not in KINDS:
        raise BatchInvalid(f"{path}.kind: must be one of {', '.join(KINDS)}")
    if (customer is None) != (kind is None):
        raise BatchInvalid(f"{path}: a customer payout has both customer and kind, a treasury transfer neither")
    if customer is None and any(k in w for k in ("request", "book_request", "approvals")):
        raise BatchInvalid(f"{path}: request, book_request and approvals belong to a customer payout only")
    if "book_request" in w and kind != "address_book":
        raise BatchInvalid(f"{path}.book_request: only an address_book payout carries one")
    approvals: tuple[Decision, ...] = ()
    if "approvals" in w:
        items = r.array(w["approvals"], f"{path}.approvals")
        if not 1 <= len(items) <= MAX_APPROVALS:
            raise BatchInvalid(f"{path}.approvals: 1 to {MAX_APPROVALS} decisions (absent when it was not held)")
        approvals = tuple(_approval(r, a, f"{path}.approvals[{i}]") for i, a in enumerate(items))
        names = [a.operator for a in approvals]
        if names != sorted(set(names)):
            raise BatchInvalid(f"{path}.approvals: one decision per operator, sorted by operator name")
    return BatchWithdrawal(
        id=r.text(w["id"], f"{path}.id", _UUID, "withdrawal id"),
        asset=r.text(w["asset"], f"{path}.asset", _SYMBOL, "asset symbol"),
        amount=r.amount(w["amount"], 0, f"{path}.amount"),
        decimals=r.count(w["decimals"], f"{path}.decimals", 0, 36),
        token=None if w["token"] is None else r.address(w["token"], f"{path}.token"),
        destination=read_destination(w["destination"], f"{path}.destination"),
        label=r.label(w["label"], f"{path}.label"),
        customer=customer,
        kind=kind,
        request=None if "request" not in w else parse_request(r, w["request"], f"{path}.request"),
        book_request=None if "book_request" not in w else parse_request(r, w["book_request"], f"{path}.book_request"),
        approvals=approvals,
    )


read_withdrawal = _withdrawal


def parse_request(r: Reader, value: Any, path: str) -> SignedRequest:
    """A stored signed request (``signer.apirequest``), every field checked; BatchInvalid otherwise."""
    q = r.table(
        value, path, {"key", "method", "path", "timestamp", "nonce", "idempotency_key", "body_b64", "signature"}
    )
    idempotency_key = r.text(q["idempotency_key"], f"{path}.idempotency_key")
    if len(idempotency_key) > 128 or not idempotency_key.isprintable():
        raise BatchInvalid(f"{path}.idempotency_key: at most 128 printable characters")
    body_b64 = r.typed(q["body_b64"], str, f"{path}.body_b64")
    try:
        body = decode_body(body_b64)
    except ValueError as exc:
        raise BatchInvalid(f"{path}.body_b64: {exc}") from None
    request = SignedRequest(
        key=r.text(q["key"], f"{path}.key", _KEY_NAME, "API key name"),
        method=r.text(q["method"], f"{path}.method", _METHOD, "HTTP method"),
        path=r.text(q["path"], f"{path}.path"),
        timestamp=r.text(q["timestamp"], f"{path}.timestamp", _TIMESTAMP, "unix time in decimal"),
        nonce=r.text(q["nonce"], f"{path}.nonce", _NONCE, "nonce (16 to 64 hex digits)"),
        idempotency_key=idempotency_key,
        body=body,
        signature=bytes.fromhex(r.text(q["signature"], f"{path}.signature", _HEX128, "Ed25519 signature")),
    )
    if not request.path.startswith("/"):
        raise BatchInvalid(f"{path}.path: must start with /")
    if request.time > LAST_INSTANT:
        raise BatchInvalid(f"{path}.timestamp: after 9999-12-31")
    return request


def _approval(r: Reader, value: Any, path: str) -> Decision:
    a = r.table(value, path, {"operator", "decision", "reason", "at", "signature"})
    decision = r.text(a["decision"], f"{path}.decision")
    if decision not in (APPROVE, REJECT):
        raise BatchInvalid(f"{path}.decision: must be {APPROVE} or {REJECT}")
    reason = r.typed(a["reason"], str, f"{path}.reason")
    if len(reason) > MAX_REASON:
        raise BatchInvalid(f"{path}.reason: at most {MAX_REASON} characters")
    return Decision(
        operator=r.text(a["operator"], f"{path}.operator", _KEY_NAME, "operator name"),
        decision=decision,
        reason=reason,
        at=r.instant(a["at"], f"{path}.at"),
        signature=bytes.fromhex(r.text(a["signature"], f"{path}.signature", _HEX128, "Ed25519 signature")),
    )


def withdrawal_problem(w: BatchWithdrawal, destination: Callable[[Any, str], str] | None = None) -> str | None:
    """Why the parser would refuse this withdrawal in a batch file, or None: the exporter leaves such a
    withdrawal out instead of writing a file that every signer refuses whole. ``destination`` as for
    ``read_withdrawal`` (a Bitcoin batch's: ``signer.btcbatch.withdrawal_problem``)."""
    body = w.body()
    try:
        parsed = _withdrawal(Reader(human=False), body, "withdrawal", destination)
    except CustodyError as exc:
        return exc.message
    except ValueError as exc:
        return str(exc)
    if canonical_bytes(parsed.body()) != canonical_bytes(body):
        return "it would not be written in canonical form"
    return None


def _safe_tx(r: Reader, value: Any) -> SafeTx:
    path = "batch.safe_tx"
    t = r.table(
        value,
        path,
        {
            "to",
            "value",
            "data",
            "operation",
            "safe_tx_gas",
            "base_gas",
            "gas_price",
            "gas_token",
            "refund_receiver",
            "nonce",
        },
    )
    data = r.typed(t["data"], str, f"{path}.data")
    if _DATA.fullmatch(data) is None:
        raise BatchInvalid(f"{path}.data: must be 0x followed by lowercase hex bytes")
    return SafeTx(
        to=r.address(t["to"], f"{path}.to"),
        value=_units(t["value"], f"{path}.value"),
        data=bytes.fromhex(data[2:]),
        operation=r.count(t["operation"], f"{path}.operation", 0, 1),
        nonce=r.count(t["nonce"], f"{path}.nonce", 0, 2**53),
        safe_tx_gas=_units(t["safe_tx_gas"], f"{path}.safe_tx_gas"),
        base_gas=_units(t["base_gas"], f"{path}.base_gas"),
        gas_price=_units(t["gas_price"], f"{path}.gas_price"),
        gas_token=r.address(t["gas_token"], f"{path}.gas_token"),
        refund_receiver=r.address(t["refund_receiver"], f"{path}.refund_receiver"),
    )


def _units(value: Any, path: str) -> int:
    try:
        number = parse_base_units(value)
    except CustodyError as exc:
        raise BatchInvalid(f"{path}: {exc.message}") from None
    if number >= 2**256:
        raise BatchInvalid(f"{path}: does not fit in a uint256")
    return number


# -- signature files ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OwnerSignature:
    batch_id: str
    chain_id: int
    safe: str
    safe_nonce: int
    safe_tx_hash: bytes
    owner: str
    signature: bytes

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {
                "kind": SIGNATURE_KIND,
                "format": FORMAT,
                "batch_id": self.batch_id,
                "chain_id": self.chain_id,
                "safe": self.safe,
                "safe_nonce": self.safe_nonce,
                "safe_tx_hash": "0x" + self.safe_tx_hash.hex(),
                "owner": self.owner,
                "signature": "0x" + self.signature.hex(),
            }
        )

    def recovered_owner(self) -> str:
        """The address that really made the signature; refuses a file whose ``owner`` claims otherwise."""
        try:
            owner = recover_owner(self.safe_tx_hash, self.signature)
        except SignatureInvalid as exc:
            raise BatchInvalid(f"signature file of {self.owner}: {exc}") from None
        if owner != self.owner:
            raise BatchInvalid(f"the signature file claims owner {self.owner} but was signed by {owner}")
        return owner


def parse_signature_file(raw: bytes) -> OwnerSignature:
    fields = {"batch_id", "chain_id", "safe", "safe_nonce", "safe_tx_hash", "owner", "signature"}
    doc = read_document(raw, SIGNATURE_KIND, fields, BatchInvalid)
    r = Reader(human=False)
    try:
        sig = OwnerSignature(
            batch_id=r.text(doc["batch_id"], "batch_id", _UUID, "batch id"),
            chain_id=r.count(doc["chain_id"], "chain_id", 1, 2**53),
            safe=r.address(doc["safe"], "safe"),
            safe_nonce=r.count(doc["safe_nonce"], "safe_nonce", 0, 2**53),
            safe_tx_hash=bytes.fromhex(r.text(doc["safe_tx_hash"], "safe_tx_hash", _HASH, "hash")[2:]),
            owner=r.address(doc["owner"], "owner"),
            signature=bytes.fromhex(
                r.text(doc["signature"], "signature", re.compile(r"0x[0-9a-f]{130}"), "owner signature")[2:]
            ),
        )
    except CustodyError as exc:
        raise BatchInvalid(f"not a valid signature file: {exc.message}") from None
    if sig.to_bytes() != raw:
        raise BatchInvalid("the signature file is not in canonical form")
    return sig
