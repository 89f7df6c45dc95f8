"""API keys: the exchange backend holds an Ed25519 private key; the daemon stores only the public key."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import VerifyKey
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from custody import audit
from custody.errors import Conflict, Forbidden, InvalidRequest, NotFound, RateLimited, Unauthorized
from custody.signing import request_message
from custody.store.db import Store
from custody.store.models import ApiKey, RequestNonce

# The built-in key that owns rebalancing withdrawals (sweeps and top-ups); revoked from birth (migration 0003).
REBALANCER = "custody-rebalancer"

SCOPES = frozenset({"withdraw", "read", "cancel"})
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_NONCE = re.compile(r"[0-9a-f]{16,64}")


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"API key {self.name!r} lacks the {scope!r} scope")


def parse_scopes(text: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = sorted(scopes - SCOPES)
    if unknown or not scopes:
        raise InvalidRequest(f"scopes must be a comma-separated subset of {sorted(SCOPES)}", code="invalid_scopes")
    return scopes


def add_key(store: Store, name: str, public_key_hex: str, scopes: frozenset[str], now: int) -> None:
    if _NAME.fullmatch(name) is None:
        raise InvalidRequest("key names are lowercase letters, digits, '.', '_' or '-'", code="invalid_name")
    try:
        VerifyKey(bytes.fromhex(public_key_hex))
    except (ValueError, NaclValueError):
        raise InvalidRequest(
            "the public key must be 64 hex digits of an Ed25519 key", code="invalid_public_key"
        ) from None
    try:
        with store.transaction() as s:
            s.add(ApiKey(name=name, public_key=public_key_hex.lower(), scopes=",".join(sorted(scopes)), created_at=now))
            s.flush()
            audit.append(s, now, "apikey.added", name, {"public_key": public_key_hex.lower(), "scopes": sorted(scopes)})
    except IntegrityError:
        raise Conflict(f"an API key named {name!r} exists already", code="key_exists") from None


def revoke_key(store: Store, name: str, now: int) -> None:
    with store.transaction() as s:
        key = s.execute(select(ApiKey).where(ApiKey.name == name).with_for_update()).scalar_one_or_none()
        if key is None:
            raise NotFound(f"no API key named {name!r}")
        if key.revoked_at is None:
            key.revoked_at = now
            audit.append(s, now, "apikey.revoked", name, {})


def list_keys(store: Store) -> list[ApiKey]:
    with store.read() as s:
        return list(s.execute(select(ApiKey).order_by(ApiKey.name)).scalars())


class RateLimiter:
    """A token bucket per key, in this process. Each replica limits on its own."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        with self._lock:
            now = time.monotonic()
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                raise RateLimited(f"too many requests for API key {key!r}", retry_after=max(1, int(1 / self.rate) + 1))
            self._buckets[key] = (tokens - 1, now)


class Authenticator:
    def __init__(self, store: Store, max_skew: int, limiter: RateLimiter) -> None:
        self.store, self.max_skew, self.limiter = store, max_skew, limiter
        self._last_prune = 0

    def authenticate(
        self, headers: dict[str, str | None], method: str, path_with_query: str, body: bytes, now: int
    ) -> Principal:
        """Check the request's signature, freshness and novelty; return who made it."""
        name, stamp, signature = headers.get("key"), headers.get("timestamp"), headers.get("signature")
        nonce = headers.get("nonce")
        if not name or not stamp or not signature or not nonce:
            raise Unauthorized(
                "the request is not signed (X-Custody-Key, -Timestamp, -Nonce and -Signature)", code="missing_signature"
            )
        if _NONCE.fullmatch(nonce) is None:
            raise Unauthorized("X-Custody-Nonce must be 16 to 64 hex digits", code="bad_signature")
        if not stamp.isdigit() or abs(int(stamp) - now) > self.max_skew:
            raise Unauthorized(
                f"the request's timestamp is more than {self.max_skew} s from the daemon's clock",
                code="expired_timestamp",
            )
        with self.store.read() as s:
            key = s.execute(select(ApiKey).where(ApiKey.name == name)).scalar_one_or_none()
        if key is None or key.revoked_at is not None:
            raise Unauthorized("unknown or revoked API key", code="unknown_key")
        try:
            VerifyKey(bytes.fromhex(key.public_key)).verify(
                request_message(stamp, nonce, method, path_with_query, headers.get("idempotency_key") or "", body),
                bytes.fromhex(signature),
            )
        except (BadSignatureError, ValueError, NaclValueError):
            raise Unauthorized("the request's signature does not verify", code="bad_signature") from None
        self._remember(signature, now)
        self.limiter.take(key.name)
        return Principal(key.name, frozenset(key.scopes.split(",")))

    def _remember(self, signature: str, now: int) -> None:
        digest = hashlib.sha256(bytes.fromhex(signature)).hexdigest()
        try:
            with self.store.transaction() as s:
                s.add(RequestNonce(digest=digest, seen_at=now))
        except IntegrityError:
            raise Unauthorized("this signed request was already accepted once", code="replayed_request") from None
        if now - self._last_prune > 60:
            self._last_prune = now
            with self.store.transaction() as s:
                s.execute(delete(RequestNonce).where(RequestNonce.seen_at < now - 4 * self.max_skew))
