"""The Bitcoin batch file and its signature file: what crosses the air gap for a cold Bitcoin payment.

Defined here, on the side that must distrust them; specified byte for byte in docs/batch-protocol.md
(section 9). Batch file (canonical JSON, ``policies.canonical``):

    {"kind": "custody-btc-batch", "format": 1,
     "batch": {"id": "<uuid>", "network": "regtest", "descriptor": "<the pinned descriptor, with checksum>",
               "policy_version": 3, "policy_hash": "<sha-256 hex of the policy bundle>",
               "created_at": <unix s>, "expires_at": <unix s>,
               "withdrawals": [<the Ethereum batch's withdrawal objects (signer.batchfile), with "token": null,
                                "decimals": 8 and a Bitcoin address of the network as "destination">, …],
               "psbt": "<base64 PSBT, version 0 (BIP-174) or 2 (BIP-370)>",
               "replaces": null | "<id of the batch this one fee-bumps>"},
     "daemon_key": "<64 hex>",
     "signature": "<Ed25519, 128 hex, over b'custody-btc-batch-v1:' ‖ canonical_bytes(batch)>"}

Signature file (one owner's partial signatures):

    {"kind": "custody-btc-batch-signature", "format": 1, "batch_id": "<uuid>",
     "txid": "<the unsigned transaction's id, 64 hex, display order>", "fingerprint": "<8 hex>",
     "psbt": "<base64: the batch's PSBT, in the batch's PSBT version, with this owner's partial signatures added>"}

Every key is required (``replaces`` is written null when there is none); unknown keys are refused. The PSBT is
standard base64 with padding, decodes to a PSBT version 0 or 2 that embit reads (``decode_psbt``: the fields
BIP-370 requires, excludes or bounds for each version are checked here), and must be exactly the bytes embit
writes back for it (``canonical_psbt``): one spelling, and no field the signer did not read. What the PSBT
says is judged by ``signer.psbtreview``, not here.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Any

from embit.psbt import PSBT
from nacl.signing import SigningKey

from policies.addresses import destination as canonical_destination
from policies.canonical import canonical_bytes, parse_canonical
from policies.errors import CustodyError
from policies.loader import Reader
from signer.batchfile import MAX_WITHDRAWALS, BatchWithdrawal, read_withdrawal, sign_envelope, verify_envelope
from signer.batchfile import withdrawal_problem as _withdrawal_problem
from signer.btckeys import check_network
from signer.errors import BtcBatchInvalid

BATCH_KIND, SIGNATURE_KIND, FORMAT = "custody-btc-batch", "custody-btc-batch-signature", 1
SIGNING_DOMAIN = b"custody-btc-batch-v1:"
MAX_PSBT = 4 * 1024 * 1024  # bytes of base64
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_FINGERPRINT = re.compile(r"[0-9a-f]{8}")
BATCH_FIELDS = {
    "id",
    "network",
    "descriptor",
    "policy_version",
    "policy_hash",
    "created_at",
    "expires_at",
    "withdrawals",
    "psbt",
    "replaces",
}


@dataclass(frozen=True, slots=True)
class BtcBatch:
    id: str
    network: str
    descriptor: str
    policy_version: int
    policy_hash: str
    created_at: int
    expires_at: int
    withdrawals: tuple[BatchWithdrawal, ...]
    psbt: str  # base64, canonical (``canonical_psbt``)
    replaces: str | None = None

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "network": self.network,
            "descriptor": self.descriptor,
            "policy_version": self.policy_version,
            "policy_hash": self.policy_hash,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "withdrawals": [w.body() for w in self.withdrawals],
            "psbt": self.psbt,
            "replaces": self.replaces,
        }

    def parsed_psbt(self) -> Any:
        """A fresh embit ``PSBT`` of the batch (the caller may add signatures to it)."""
        return PSBT.parse(decode_psbt(self.psbt))


@dataclass(frozen=True, slots=True)
class BtcBatchFile:
    batch: BtcBatch
    daemon_key: str
    signature: str
    raw: bytes

    def verify_daemon_signature(self, pinned_key: str) -> None:
        verify_envelope(SIGNING_DOMAIN, self.batch.body(), self.daemon_key, self.signature, pinned_key)


def write_btc_batch_file(batch: BtcBatch, key: SigningKey) -> bytes:
    """The batch file, signed by the daemon key."""
    return sign_btc_batch_body(batch.body(), key)


def sign_btc_batch_body(body: dict[str, Any], key: SigningKey) -> bytes:
    """The batch file for ``body`` as given, signed by ``key`` (tests use it to sign edited bodies)."""
    return sign_envelope(BATCH_KIND, FORMAT, SIGNING_DOMAIN, body, key)


def parse_btc_batch_file(raw: bytes) -> BtcBatchFile:
    """The batch file, well formed (module docstring); BtcBatchInvalid otherwise. Signature not checked here."""
    r = Reader(human=False)
    try:
        doc = _document(r, raw, BATCH_KIND, {"batch", "daemon_key", "signature"})
        batch = _batch(r, doc["batch"])
        parsed = BtcBatchFile(
            batch,
            r.text(doc["daemon_key"], "daemon_key", _HEX64, "Ed25519 public key"),
            r.text(doc["signature"], "signature", _HEX128, "Ed25519 signature"),
            raw,
        )
    except BtcBatchInvalid:
        raise
    except CustodyError as exc:
        raise BtcBatchInvalid(f"not a valid Bitcoin batch file: {exc.message}") from None
    if canonical_bytes(batch.body()) != canonical_bytes(doc["batch"]):
        raise BtcBatchInvalid("the batch is not in canonical form (a number or address written another way)")
    return parsed


def _document(r: Reader, raw: bytes, kind: str, fields: set[str]) -> dict[str, Any]:
    doc = parse_canonical(raw)
    r.table(doc, "", {"kind", "format"} | fields)
    if doc["kind"] != kind:
        raise BtcBatchInvalid(f"this is a {str(doc['kind'])[:40]!r} file, not a {kind}")
    if doc["format"] != FORMAT:
        raise BtcBatchInvalid(f"unsupported {kind} format {doc['format']!r}")
    return doc  # type: ignore[no-any-return]


def _batch(r: Reader, value: Any) -> BtcBatch:
    b = r.table(value, "batch", BATCH_FIELDS)
    network = check_network(r.text(b["network"], "batch.network"))
    items = r.array(b["withdrawals"], "batch.withdrawals")
    if not 1 <= len(items) <= MAX_WITHDRAWALS:
        raise BtcBatchInvalid(f"a Bitcoin batch holds 1 to {MAX_WITHDRAWALS} withdrawals")
    address = address_reader(r, network)
    withdrawals = tuple(read_withdrawal(r, item, f"batch.withdrawals[{i}]", address) for i, item in enumerate(items))
    r.unique(list(withdrawals), lambda w: w.id, "batch.withdrawals", "withdrawal id")
    for i, w in enumerate(withdrawals):
        if w.token is not None or w.decimals != 8:
            raise BtcBatchInvalid(f"batch.withdrawals[{i}]: a Bitcoin withdrawal has token null and decimals 8")
    psbt = r.typed(b["psbt"], str, "batch.psbt")
    decode_psbt(psbt)
    replaces = b["replaces"]
    batch_id = r.text(b["id"], "batch.id", _UUID, "batch id")
    if replaces is not None:
        replaces = r.text(replaces, "batch.replaces", _UUID, "batch id")
        if replaces == batch_id:
            raise BtcBatchInvalid("batch.replaces: a batch cannot replace itself")
    return BtcBatch(
        id=batch_id,
        network=network,
        descriptor=_descriptor(r, b["descriptor"]),
        policy_version=r.count(b["policy_version"], "batch.policy_version", 0, 2**53),
        policy_hash=r.text(b["policy_hash"], "batch.policy_hash", _HEX64, "SHA-256 hex digest"),
        created_at=r.instant(b["created_at"], "batch.created_at"),
        expires_at=r.instant(b["expires_at"], "batch.expires_at"),
        withdrawals=withdrawals,
        psbt=psbt,
        replaces=replaces,
    )


def _descriptor(r: Reader, value: Any) -> str:
    text = r.typed(value, str, "batch.descriptor")
    if len(text) > 4096 or not text.isascii() or not text.isprintable():
        raise BtcBatchInvalid("batch.descriptor: at most 4096 printable ASCII characters")
    return text


def address_reader(r: Reader, network: str) -> Any:
    """Reads a withdrawal's destination: a Bitcoin address of ``network``, in its canonical spelling."""

    def read(value: Any, path: str) -> str:
        text = r.typed(value, str, path)
        try:
            canonical = canonical_destination("bitcoin", network, text)
        except CustodyError as exc:
            raise BtcBatchInvalid(f"{path}: {exc.message}") from None
        if canonical != text:
            raise BtcBatchInvalid(f"{path}: write the address as {canonical}")
        return canonical

    return read


def withdrawal_problem(w: BatchWithdrawal, network: str) -> str | None:
    """Why a Bitcoin batch's parser would refuse this withdrawal, or None (for the exporter)."""
    if w.token is not None or w.decimals != 8:
        return "a Bitcoin withdrawal has no token and 8 decimals"
    return _withdrawal_problem(w, address_reader(Reader(human=False), network))


def decode_psbt(text: str) -> bytes:
    """The PSBT's bytes, if ``text`` is its canonical base64, a valid PSBT version 0 or 2 (``psbt_problem``) and
    embit writes it back byte for byte."""
    if len(text) > MAX_PSBT:
        raise BtcBatchInvalid(f"the PSBT is longer than {MAX_PSBT} characters")
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise BtcBatchInvalid("the PSBT is not standard base64") from None
    if binascii.b2a_base64(raw, newline=False).decode() != text:
        raise BtcBatchInvalid("the PSBT is not in canonical base64")
    try:
        psbt = PSBT.parse(raw)
        again = psbt.serialize()
    except Exception:  # embit raises many kinds on malformed input (its own, ValueError, IndexError, …)
        raise BtcBatchInvalid("the PSBT does not parse") from None
    problem = psbt_problem(psbt)
    if problem is not None:
        raise BtcBatchInvalid(problem)
    if again != raw:
        raise BtcBatchInvalid(
            "the PSBT is not written the one way this signer writes it back (a field repeated, reordered or unknown)"
        )
    return raw


# BIP-370 fields embit 0.8 leaves among a scope's unknown keys (it reads the others into attributes).
GLOBAL_TX_MODIFIABLE = b"\x06"
IN_REQUIRED_TIME_LOCKTIME, IN_REQUIRED_HEIGHT_LOCKTIME = b"\x11", b"\x12"


def psbt_version(psbt: Any) -> int:
    """0 or 2: embit says None for a PSBT without PSBT_GLOBAL_VERSION (version 0)."""
    return 0 if psbt.version is None else int(psbt.version)


def psbt_problem(psbt: Any) -> str | None:
    """Why ``psbt`` (parsed by embit) is not a valid PSBT version 0 or 2, or None. BIP-370's inclusion and
    exclusion rules that embit does not enforce itself; a version 0 PSBT carrying a version 2 field embit reads
    into an attribute (tx version, locktime, counts, prevout, amount, script) is not written back the same way,
    so the canonical-bytes rule refuses it."""
    version = psbt.version
    if version not in (None, 2):
        return f"the PSBT is version {version}; this signer reads versions 0 (BIP-174) and 2 (BIP-370)"
    excluded = (IN_REQUIRED_TIME_LOCKTIME, IN_REQUIRED_HEIGHT_LOCKTIME)
    if version is None:
        if GLOBAL_TX_MODIFIABLE in psbt.unknown or any(k in inp.unknown for inp in psbt.inputs for k in excluded):
            return "the PSBT is version 0 but carries a field of version 2 (BIP-370)"
        return None
    if psbt.tx_version is None:
        return "the version 2 PSBT has no transaction version (PSBT_GLOBAL_TX_VERSION)"
    flags = psbt.unknown.get(GLOBAL_TX_MODIFIABLE)
    if flags is not None and len(flags) != 1:
        return "PSBT_GLOBAL_TX_MODIFIABLE is not one byte"
    for i, inp in enumerate(psbt.inputs):
        if inp.txid is None or inp.vout is None:
            return f"input {i} of the version 2 PSBT lacks its previous txid or output index"
        for key, what, low, high in (
            (IN_REQUIRED_TIME_LOCKTIME, "time", 500_000_000, 2**32),
            (IN_REQUIRED_HEIGHT_LOCKTIME, "height", 1, 500_000_000),
        ):
            value = inp.unknown.get(key)
            if value is not None and (len(value) != 4 or not low <= int.from_bytes(value, "little") < high):
                return f"input {i}: its required {what} locktime is not a 4-byte value in [{low}, {high})"
    for n, out in enumerate(psbt.outputs):
        if out.value is None or out.script_pubkey is None:
            return f"output {n} of the version 2 PSBT lacks its amount or script"
    return None


def canonical_psbt(text: str) -> str:
    """``text`` (base64 PSBT, such as a node's) as this signer writes it: the spelling a batch must carry."""
    try:
        return str(PSBT.from_base64(text).to_base64())
    except Exception:
        raise BtcBatchInvalid("the PSBT does not parse") from None


# -- signature files ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BtcSignature:
    batch_id: str
    txid: str
    fingerprint: str
    psbt: str

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {
                "kind": SIGNATURE_KIND,
                "format": FORMAT,
                "batch_id": self.batch_id,
                "txid": self.txid,
                "fingerprint": self.fingerprint,
                "psbt": self.psbt,
            }
        )


def parse_btc_signature_file(raw: bytes) -> BtcSignature:
    """A signature file, well formed; whose signatures they are is the daemon's (and the node's) to check."""
    r = Reader(human=False)
    try:
        doc = _document(r, raw, SIGNATURE_KIND, {"batch_id", "txid", "fingerprint", "psbt"})
        sig = BtcSignature(
            batch_id=r.text(doc["batch_id"], "batch_id", _UUID, "batch id"),
            txid=r.text(doc["txid"], "txid", _HEX64, "transaction id"),
            fingerprint=r.text(doc["fingerprint"], "fingerprint", _FINGERPRINT, "fingerprint"),
            psbt=r.typed(doc["psbt"], str, "psbt"),
        )
    except BtcBatchInvalid:
        raise
    except CustodyError as exc:
        raise BtcBatchInvalid(f"not a valid Bitcoin signature file: {exc.message}") from None
    psbt = PSBT.parse(decode_psbt(sig.psbt))
    if psbt.tx.txid().hex() != sig.txid:
        raise BtcBatchInvalid("the signature file's PSBT is not for the transaction its txid names")
    return sig
