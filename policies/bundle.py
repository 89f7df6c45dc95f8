"""Policy bundles: a policy, its version and the hash of the bundle before it, signed by a quorum of admins.

Wire form (canonical JSON, see ``policies.canonical``; the bundle hash is SHA-256 of exactly these bytes):

    {"kind": "custody-policy-bundle", "format": 1, "version": n, "previous_hash": "<64 hex>",
     "created_at": <unix seconds>, "policy": <policy_to_canonical(policy)>}

The chain starts at a genesis document written once by ``custody init``; it fixes the first admin set:

    {"kind": "custody-policy-genesis", "format": 1, "created_at": <unix seconds>,
     "governance": {"admins": [...], "quorum": m, "activation_delay": seconds}}

An admin's signature is Ed25519 over b"custody-policy-bundle-v1:" + the 32 hash bytes (domain-separated so
it can never be replayed as a signature over anything else). Signature files are canonical JSON too:

    {"kind": "custody-policy-signature", "format": 1, "bundle_hash": "<64 hex>", "key": "<64 hex>",
     "signature": "<128 hex>"}

Bundle n+1 is valid on top of head n only if every rule in ``verify_successor`` holds; those rules are
what keep a compromised online host from loosening the policy by itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import SigningKey, VerifyKey

from policies.canonical import canonical_bytes, parse_canonical
from policies.errors import (
    ActivationError,
    AssetRemoved,
    BundleError,
    BundleSequenceError,
    BundleTimeError,
    CustodyError,
    DecimalsChanged,
    QuorumError,
    RollbackError,
)
from policies.loader import FORMAT, Reader, policy_from_canonical, policy_to_canonical
from policies.model import AssetRule, Governance, Policy, WhitelistEntry
from policies.text import when

SIGNATURE_DOMAIN = b"custody-policy-bundle-v1:"
# How far a bundle's created_at may be from the clock of whoever checks it. An admin's signer refuses a bundle
# dated more than MAX_AGE before its own clock, so created_at (from which activation delays run) is vouched for
# by every honest signer to within an hour; anyone refuses one dated more than MAX_FUTURE after its clock.
MAX_AGE = 3600
MAX_FUTURE = 300
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")


@dataclass(frozen=True, slots=True)
class Head:
    """What the next bundle is checked against: the newest applied (or verified) bundle, or the genesis."""

    version: int
    hash: str
    created_at: int
    governance: Governance
    whitelist: Mapping[str, WhitelistEntry]
    assets: Mapping[str, AssetRule] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Bundle:
    version: int
    previous_hash: str
    created_at: int
    policy: Policy
    raw: bytes

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def head(self) -> Head:
        return Head(
            self.version, self.hash, self.created_at, self.policy.governance, self.policy.whitelist, self.policy.assets
        )


@dataclass(frozen=True, slots=True)
class BundleSignature:
    bundle_hash: str
    key: str
    signature: str

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {
                "kind": "custody-policy-signature",
                "format": FORMAT,
                "bundle_hash": self.bundle_hash,
                "key": self.key,
                "signature": self.signature,
            }
        )


# -- genesis ----------------------------------------------------------------------------------------
def genesis_bytes(governance: Governance, created_at: int) -> bytes:
    return canonical_bytes(
        {
            "kind": "custody-policy-genesis",
            "format": FORMAT,
            "created_at": created_at,
            "governance": {
                "admins": [{"name": a.name, "key": a.key} for a in governance.admins],
                "quorum": governance.quorum,
                "activation_delay": governance.activation_delay,
            },
        }
    )


def parse_genesis(raw: bytes) -> Head:
    doc = _document(raw, "custody-policy-genesis", {"created_at", "governance"})
    reader = Reader(human=False)
    governance = reader.governance(doc["governance"])
    created_at = reader.instant(doc["created_at"], "created_at")
    if genesis_bytes(governance, created_at) != raw:
        raise BundleError("genesis document is not in canonical form")
    return Head(0, hashlib.sha256(raw).hexdigest(), created_at, governance, {})


# -- bundles ----------------------------------------------------------------------------------------
def make_bundle(policy: Policy, head: Head, created_at: int) -> Bundle:
    raw = canonical_bytes(
        {
            "kind": "custody-policy-bundle",
            "format": FORMAT,
            "version": head.version + 1,
            "previous_hash": head.hash,
            "created_at": created_at,
            "policy": policy_to_canonical(policy),
        }
    )
    return Bundle(head.version + 1, head.hash, created_at, policy, raw)


def parse_bundle(raw: bytes) -> Bundle:
    doc = _document(raw, "custody-policy-bundle", {"version", "previous_hash", "created_at", "policy"})
    reader = Reader(human=False)
    version = reader.count(doc["version"], "version", 1, 2**53)
    previous = reader.text(doc["previous_hash"], "previous_hash", _HEX64, "SHA-256 hex digest")
    created_at = reader.instant(doc["created_at"], "created_at")
    return Bundle(version, previous, created_at, policy_from_canonical(doc["policy"]), raw)


def _document(raw: bytes, kind: str, fields: set[str]) -> dict[str, Any]:
    return read_document(raw, kind, fields, BundleError)


def read_document(
    raw: bytes, kind: str, fields: set[str], error: type[CustodyError], fmt: int = FORMAT
) -> dict[str, Any]:
    """A canonical JSON document of ``kind`` with exactly ``fields`` besides kind and format; else ``error``."""
    try:
        doc = parse_canonical(raw)
        reader = Reader(human=False)
        reader.table(doc, "", {"kind", "format"} | fields)
    except CustodyError as exc:
        raise error(f"not a valid {kind} file: {exc.message}") from None
    if doc["kind"] != kind:
        raise error(f"this is a {str(doc['kind'])[:40]!r} file, not a {kind}")
    if doc["format"] != fmt:
        raise error(f"unsupported {kind} format {doc['format']!r}")
    return doc  # type: ignore[no-any-return]


# -- signatures -------------------------------------------------------------------------------------
def sign_bundle(bundle_hash: str, key: SigningKey) -> BundleSignature:
    signed = key.sign(SIGNATURE_DOMAIN + bytes.fromhex(bundle_hash))
    return BundleSignature(bundle_hash, key.verify_key.encode().hex(), signed.signature.hex())


def parse_signature(raw: bytes) -> BundleSignature:
    doc = _document(raw, "custody-policy-signature", {"bundle_hash", "key", "signature"})
    reader = Reader(human=False)
    try:
        return BundleSignature(
            reader.text(doc["bundle_hash"], "bundle_hash", _HEX64, "SHA-256 hex digest"),
            reader.text(doc["key"], "key", _HEX64, "Ed25519 public key"),
            reader.text(doc["signature"], "signature", _HEX128, "Ed25519 signature"),
        )
    except CustodyError as exc:
        raise BundleError(f"not a valid signature file: {exc.message}") from None


def signature_is_valid(sig: BundleSignature) -> bool:
    try:
        VerifyKey(bytes.fromhex(sig.key)).verify(
            SIGNATURE_DOMAIN + bytes.fromhex(sig.bundle_hash), bytes.fromhex(sig.signature)
        )
    except (BadSignatureError, NaclValueError):
        return False
    return True


def check_sequence(head: Head, bundle: Bundle) -> None:
    """The order rule: ``bundle`` is exactly the next version after ``head``, names head's hash as its
    previous one, and was not created before head. The daemon applies it with the signatures
    (``verify_successor``); a signer applies it before any signature exists."""
    if bundle.version != head.version + 1:
        what = "repeats" if bundle.version <= head.version else "skips"
        raise BundleSequenceError(
            f"bundle version {bundle.version} {what} a version: the next must be {head.version + 1}"
        )
    if bundle.previous_hash != head.hash:
        raise BundleSequenceError(
            f"bundle names previous hash {bundle.previous_hash}, but the current one is {head.hash}"
        )
    if bundle.created_at < head.created_at:
        raise BundleSequenceError("bundle was created before the bundle it replaces")


def verify_successor(head: Head, bundle: Bundle, signatures: Sequence[BundleSignature]) -> tuple[str, ...]:
    """Check that ``bundle`` may follow ``head``; return the admin keys whose signatures counted.

    - it follows head (``check_sequence``);
    - every signature is over this bundle's hash and valid, by a key in head's admin set (so a change of
      the admin set is approved by the current set, never by the new one alone);
    - the distinct signing admins reach head's quorum;
    - every whitelist entry that is new or changed becomes active no earlier than the bundle's creation
      plus the activation delay (the larger of the old and new delay, so a bundle cannot shorten its own).
    """
    check_sequence(head, bundle)
    admins = head.governance.admin_keys
    counted: list[str] = []
    for sig in signatures:
        if sig.bundle_hash != bundle.hash:
            raise QuorumError(f"a signature by {sig.key[:16]}… is for bundle {sig.bundle_hash[:16]}…, not this one")
        if sig.key not in admins:
            raise QuorumError(f"a signature is by {sig.key[:16]}…, which is not in the current admin set")
        if not signature_is_valid(sig):
            raise QuorumError(f"the signature by {sig.key[:16]}… does not verify")
        if sig.key not in counted:
            counted.append(sig.key)
    if len(counted) < head.governance.quorum:
        raise QuorumError(f"{len(counted)} distinct admin signature(s); the quorum is {head.governance.quorum}")
    check_activations(head, bundle)
    check_decimals(head, bundle)
    return tuple(counted)


def check_decimals(head: Head, bundle: Bundle) -> None:
    """A token's decimals never change on chain, so neither may the policy's: not for an asset that keeps its
    symbol, and not for a contract (or a chain's native coin) that reappears under another symbol. Otherwise
    "1 USDC" on a review screen could pay 10^12 base units. What an asset is: its chain, network and contract
    (None for the native coin), so ETH and BTC, both native coins, are two things."""

    def identity(r: AssetRule) -> tuple[str, str | None, str | None]:
        return r.chain, r.network, r.contract

    for symbol, kept in sorted(head.assets.items()):
        after = bundle.policy.assets.get(symbol)
        # An asset stays, with its chain and contract, for ever (disable it instead): were it dropped for one
        # bundle, its contract could come back in the next with other decimals, and no bundle pair would show it.
        if after is None or identity(after) != identity(kept):
            raise AssetRemoved(
                f"{symbol} is {'removed' if after is None else 'moved to another chain or contract'}; an asset keeps "
                "its symbol, chain and contract for good: set enabled = false, and add a token under a new symbol"
            )
    old = {identity(r): (s, r.decimals) for s, r in head.assets.items()}
    for symbol, rule in sorted(bundle.policy.assets.items()):
        before = head.assets.get(symbol)
        if before is not None and identity(before) == identity(rule) and before.decimals != rule.decimals:
            raise DecimalsChanged(f"{symbol}'s decimals change from {before.decimals} to {rule.decimals}")
        known = old.get(identity(rule))
        if known is not None and known[1] != rule.decimals:
            what = f"the native coin of {rule.chain}" if rule.contract is None else f"contract {rule.contract}"
            raise DecimalsChanged(f"{symbol} gives {what} {rule.decimals} decimals; as {known[0]} it had {known[1]}")


def check_activations(head: Head, bundle: Bundle) -> None:
    """Every whitelist entry that is new or changed against ``head`` must activate no earlier than the
    bundle's creation plus the larger of the old and new activation delays."""
    delay = max(head.governance.activation_delay, bundle.policy.governance.activation_delay)
    earliest = bundle.created_at + delay
    for address, entry in bundle.policy.whitelist.items():
        before = head.whitelist.get(address)
        unchanged = before is not None and (before.assets, before.active_from) == (entry.assets, entry.active_from)
        if not unchanged and entry.active_from < earliest:
            raise ActivationError(
                f"whitelist entry {entry.label!r} ({address}) activates at {entry.active_from}, "
                f"before the earliest allowed {earliest} (creation + {delay} s)"
            )


def check_created_at(created_at: int, now: int, *, max_age: int | None = MAX_AGE, max_future: int = MAX_FUTURE) -> None:
    """A bundle's date against the checker's own clock ``now``: at most ``max_future`` seconds ahead of it
    and, unless ``max_age`` is None, at most ``max_age`` seconds behind it.

    The signer checks both before an admin signs, so a quorum with one honest admin vouches that created_at is
    no earlier than that admin's signing time minus ``max_age``: the host cannot date a bundle in the past to
    make the activation delay of its new whitelist entries run out before anyone approved them. The daemon
    checks only the future side when it applies a bundle: one dated ahead would block every later bundle,
    whose dates may not go back."""
    clock = f"this computer's clock ({when(now)})"
    if created_at - now > max_future:
        raise BundleTimeError(
            f"the bundle is dated {when(created_at)}, {describe_duration(created_at - now)} after {clock}; "
            f"at most {describe_duration(max_future)} ahead is accepted: check both clocks"
        )
    if max_age is not None and now - created_at > max_age:
        raise BundleTimeError(
            f"the bundle is dated {when(created_at)}, {describe_duration(now - created_at)} before {clock}; "
            f"at most {describe_duration(max_age)} is accepted, because whitelist activation delays run from "
            "that date: ask for a freshly proposed bundle (or check this computer's clock)"
        )


def describe_duration(seconds: int) -> str:
    """A rough duration for people: at most two units, such as "2d 3h" or "5m"."""
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (size == 1 and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def check_not_rollback(newest: Head | None, bundle: Bundle) -> None:
    """The signer's rule: never go back to a bundle older than the newest one it has verified."""
    if newest is None:
        return
    if bundle.version < newest.version:
        raise RollbackError(f"bundle version {bundle.version} is older than version {newest.version}, already verified")
    if bundle.version == newest.version and bundle.hash != newest.hash:
        raise RollbackError(
            f"bundle version {bundle.version} differs from the version {newest.version} already verified"
        )
