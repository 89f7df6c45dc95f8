"""API keys: the exchange backend holds an Ed25519 private key; the daemon stores only the public key."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import cast

from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import VerifyKey
from sqlalchemy import Table, delete, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from custody.errors import (
    BadSignature,
    ExpiredTimestamp,
    Forbidden,
    InvalidKeyName,
    InvalidPublicKey,
    InvalidScopes,
    InvalidTimestamp,
    KeyExists,
    MissingSignature,
    NotFound,
    RateLimited,
    ReplayedRequest,
    Unauthorized,
    UnknownKey,
)
from custody.intake.groupcommit import GroupCommit
from custody.intake.signatures import request_message
from custody.ledger import audit
from custody.store.db import Store
from custody.store.models import ApiKey, RequestNonce

NONCES = cast(Table, RequestNonce.__table__)
log = logging.getLogger("custody.apikeys")

SCOPES = frozenset({"withdraw", "read", "cancel"})
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_NONCE = re.compile(r"[0-9a-f]{16,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,20}")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


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
        raise InvalidScopes(f"scopes must be a comma-separated subset of {sorted(SCOPES)}")
    return scopes


def add_key(store: Store, name: str, public_key_hex: str, scopes: frozenset[str], now: int) -> None:
    if _NAME.fullmatch(name) is None:
        raise InvalidKeyName("key names are lowercase letters, digits, '.', '_' or '-'")
    try:
        VerifyKey(bytes.fromhex(public_key_hex))
    except (ValueError, NaclValueError):
        raise InvalidPublicKey("the public key must be 64 hex digits of an Ed25519 key") from None
    try:
        with store.transaction() as s:
            s.add(ApiKey(name=name, public_key=public_key_hex.lower(), scopes=",".join(sorted(scopes)), created_at=now))
            s.flush()
            audit.append(s, now, "apikey.added", name, {"public_key": public_key_hex.lower(), "scopes": sorted(scopes)})
    except IntegrityError:
        raise KeyExists(f"an API key named {name!r} exists already") from None


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


def unknown_key() -> Unauthorized:
    return UnknownKey("unknown or revoked API key")


def replayed() -> Unauthorized:
    return ReplayedRequest("this signed request was already accepted once")


@dataclass(frozen=True)
class Seen:
    """A request whose signature verified, waiting for its nonce to be recorded."""

    principal: Principal
    digest: str
    now: int


class Authenticator:
    """Checks a request's signature, freshness and novelty.

    A key name's public key and scopes never change (keys are added and revoked, never edited or
    re-added), so they are cached after the first read. Whether the key is still unrevoked is read in the
    transaction that records the request's nonce, so a revocation takes effect at once. Nonces are
    recorded by group commit (one transaction for all the requests in flight), never before the
    signature has verified; a withdrawal intake records its nonce in its own transaction instead
    (``remember``), so the request is consumed exactly when its withdrawal commits."""

    def __init__(self, store: Store, max_skew: int, limiter: RateLimiter) -> None:
        self.store, self.max_skew, self.limiter = store, max_skew, limiter
        self.nonces: GroupCommit[Seen, None] = GroupCommit("nonces", self._remember_many)
        self._keys: dict[str, ApiKey] = {}
        self._last_prune = 0

    def authenticate(
        self, headers: dict[str, str | None], method: str, path_with_query: str, body: bytes, now: int
    ) -> Principal:
        """Check the request's signature, freshness and novelty; return who made it."""
        seen = self.verify(self.key(self.well_formed(headers, now)), headers, method, path_with_query, body, now)
        self.nonces.submit(seen).result()
        return seen.principal

    async def check(
        self, headers: dict[str, str | None], method: str, path_with_query: str, body: bytes, now: int
    ) -> Seen:
        """Everything but novelty, from the event loop (the database is only read off the loop, the first
        time a key name is seen); the caller records the nonce."""
        name = self.well_formed(headers, now)
        key = self._keys.get(name) or await run_in_threadpool(self.key, name)
        return self.verify(key, headers, method, path_with_query, body, now)

    def well_formed(self, headers: dict[str, str | None], now: int) -> str:
        """The key name, once the headers are all there and the timestamp is fresh."""
        name, stamp, signature = headers.get("key"), headers.get("timestamp"), headers.get("signature")
        nonce = headers.get("nonce")
        if not name or not stamp or not signature or not nonce:
            raise MissingSignature("the request is not signed (X-Custody-Key, -Timestamp, -Nonce and -Signature)")
        if _NONCE.fullmatch(nonce) is None:
            raise BadSignature("X-Custody-Nonce must be 16 to 64 hex digits")
        if _TIMESTAMP.fullmatch(stamp) is None:
            raise InvalidTimestamp("X-Custody-Timestamp must be the decimal unix time in seconds (1 to 20 digits 0-9)")
        if abs(int(stamp) - now) > self.max_skew:
            raise ExpiredTimestamp(
                f"the request's timestamp is more than {self.max_skew} s from the daemon's clock",
            )
        return name

    def key(self, name: str) -> ApiKey | None:
        cached = self._keys.get(name)
        if cached is not None:
            return cached
        with self.store.read() as s:
            key = s.execute(select(ApiKey).where(ApiKey.name == name)).scalar_one_or_none()
        if key is not None and key.revoked_at is None:
            self._keys[name] = key
        return key

    def verify(
        self,
        key: ApiKey | None,
        headers: dict[str, str | None],
        method: str,
        path_with_query: str,
        body: bytes,
        now: int,
    ) -> Seen:
        """Check the signature with the key, then take one token from the key's rate limit."""
        if key is None or key.revoked_at is not None:
            raise unknown_key()
        stamp, nonce, signature = headers["timestamp"] or "", headers["nonce"] or "", headers["signature"] or ""
        try:
            signed = bytes.fromhex(signature)
            VerifyKey(bytes.fromhex(key.public_key)).verify(
                request_message(stamp, nonce, method, path_with_query, headers.get("idempotency_key") or "", body),
                signed,
            )
        except (BadSignatureError, ValueError, NaclValueError):
            raise BadSignature("the request's signature does not verify") from None
        self.limiter.take(key.name)
        return Seen(Principal(key.name, frozenset(key.scopes.split(","))), hashlib.sha256(signed).hexdigest(), now)

    def remember(self, s: Session, batch: list[Seen]) -> list[Unauthorized | None]:
        """In the caller's transaction, record each request's digest once: a digest seen before (in the
        database or earlier in this batch) is a replay, and a key revoked since it was cached is refused.
        A digest another replica records at the same moment makes the transaction fail on commit."""
        names = {seen.principal.name for seen in batch}
        live = set(s.execute(select(ApiKey.name).where(ApiKey.name.in_(names), ApiKey.revoked_at.is_(None))).scalars())
        digests = [seen.digest for seen in batch]
        known = set(s.execute(select(RequestNonce.digest).where(RequestNonce.digest.in_(digests))).scalars())
        results: list[Unauthorized | None] = []
        for seen in batch:
            if seen.principal.name not in live:
                self._keys.pop(seen.principal.name, None)
                results.append(unknown_key())
            elif seen.digest in known:
                results.append(replayed())
            else:
                known.add(seen.digest)
                results.append(None)
        fresh = [{"digest": x.digest, "seen_at": x.now} for x, r in zip(batch, results, strict=True) if r is None]
        if fresh:
            s.execute(insert(NONCES), fresh)
        return results

    def prune(self, now: int) -> None:
        """Forget the nonces too old to pass the timestamp check again, at most once a minute, in a
        transaction of its own (never inside an intake's); a failure is logged and retried later."""
        if now - self._last_prune <= 60:
            return
        self._last_prune = now
        try:
            with self.store.transaction() as s:
                s.execute(delete(RequestNonce).where(RequestNonce.seen_at < now - 4 * self.max_skew))
        except OperationalError as exc:  # e.g. another replica pruning the same rows at the same moment
            log.warning("pruning request nonces failed: %s", type(exc).__name__)

    def _remember_many(self, batch: list[Seen]) -> list[Unauthorized | None]:
        """``remember`` in a transaction of its own; if another replica recorded one of these digests
        meanwhile, each is recorded again on its own."""
        try:
            with self.store.transaction() as s:
                return self.remember(s, batch)
        except IntegrityError:
            if len(batch) == 1:
                return [replayed()]
            return [result for seen in batch for result in self._remember_many([seen])]
