"""Who may use the console: one-time login tokens, sessions and CSRF tokens.

Signing in (as Jupyter does): `custody console login --operator NAME --key FILE` checks that NAME is one of the
active policy's ``[[operators]]`` and that FILE holds that operator's private key (the key the quorum declared
for review decisions), then stores the SHA-256 of a fresh random token, valid ``token_ttl`` seconds, and prints a
URL carrying it. Opening the URL and pressing "Sign in" spends the token (one UPDATE that only an unused,
unexpired token passes, so two replicas cannot both accept it) and starts a session: another random token, in an
HttpOnly, SameSite=Strict cookie (Secure over https), stored hashed, valid ``session_ttl`` seconds and only while
the operator is still in the active policy. The sign-in is in the audit log.

Against login CSRF (another site posting its own valid token so that an operator's browser ends up signed in
under someone else's name), opening the link also sets a nonce in a SameSite=Strict cookie and puts an HMAC of
it in the page's form; the sign-in POST needs both, and is refused before the token is spent otherwise.

The CSRF token of a session is an HMAC of the session's own token: it is never stored, cannot be computed from
the database (which holds only the session token's hash), and is checked in constant time.

Trust, honestly: whoever can run `custody` commands with the daemon's configuration can write the database, so
the key check does not stop the host's administrator; it stops anyone else from signing in under an operator's
name, and it records which operator key opened each session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from nacl.signing import SigningKey
from sqlalchemy import update
from sqlalchemy.orm import Session

from custody.console.errors import (
    CsrfRefused,
    LoginTokenExpired,
    LoginTokenInvalid,
    LoginTokenUsed,
    NotSignedIn,
    OperatorKeyMismatch,
)
from custody.errors import NoActivePolicy, UnknownOperator
from custody.ledger import audit
from custody.ledger.policy import PolicyCache
from custody.store.db import Store
from custody.store.models import ConsoleLoginToken, ConsoleSession

TOKEN_TTL = 300  # seconds a sign-in URL stays usable
SESSION_TTL = 8 * 3600  # seconds a session lasts, whatever the activity
COOKIE = "custody_console"
LOGIN_COOKIE = "custody_console_login"  # the sign-in confirmation page's nonce (against login CSRF)
MAX_TOKEN = 128  # characters: anything longer is not one of ours


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def csrf_token(session_token: str) -> str:
    """The session's CSRF token: bound to it, derivable only from the cookie's secret."""
    return hmac.new(session_token.encode("utf-8"), b"custody-console-csrf", hashlib.sha256).hexdigest()


def check_csrf(session_token: str, given: str | None) -> None:
    if not given or not hmac.compare_digest(csrf_token(session_token), given):
        raise CsrfRefused("this form's CSRF token is missing or not this session's: reload the page and try again")


def login_confirmation(nonce: str) -> str:
    """The confirmation page's form field: bound to the nonce in its SameSite=Strict cookie, so a sign-in form
    posted from another site (which gets neither the cookie nor the page) is refused: nobody can sign an
    operator's browser in under another name (login CSRF)."""
    return hmac.new(nonce.encode("utf-8"), b"custody-console-login", hashlib.sha256).hexdigest()


def check_login_confirmation(nonce: str | None, given: str | None) -> None:
    if not nonce or len(nonce) > MAX_TOKEN or not given or not hmac.compare_digest(login_confirmation(nonce), given):
        raise CsrfRefused("sign in from the sign-in link's own page: open the link again and press Sign in")


def operator_for_key(store: Store, policies: PolicyCache, name: str, key: SigningKey) -> str:
    """The policy's operator ``name``, if ``key`` is that operator's private key."""
    with store.read() as s:
        try:
            operators = policies.get(s).policy.operators
        except NoActivePolicy:
            operators = ()
    declared = next((o for o in operators if o.name == name), None)
    if declared is None:
        names = ", ".join(sorted(o.name for o in operators)) or "none"
        raise UnknownOperator(f"{name!r} is not one of the active policy's operators (declared: {names})")
    if key.verify_key.encode().hex() != declared.key:
        raise OperatorKeyMismatch(f"this key is not the one the policy declares for operator {name!r}")
    return declared.name


def issue_token(store: Store, operator: str, now: int, ttl: int = TOKEN_TTL) -> str:
    """A new one-time sign-in token for ``operator`` (checked by the caller); only its hash is stored."""
    token = secrets.token_urlsafe(32)
    with store.transaction() as s:
        s.add(ConsoleLoginToken(hash=digest(token), operator=operator, created_at=now, expires_at=now + ttl))
        audit.append(s, now, "console.login_issued", operator, {"operator": operator, "expires_at": now + ttl})
    return token


def peek_token(store: Store, token: str, now: int) -> str:
    """The operator a token would sign in, without spending it (the confirmation page); refused as redeem would."""
    with store.read() as s:
        row = s.get(ConsoleLoginToken, digest(token)) if 0 < len(token) <= MAX_TOKEN else None
        _check_row(row, now)
        assert row is not None
        return row.operator


def _check_row(row: ConsoleLoginToken | None, now: int) -> None:
    if row is None:
        raise LoginTokenInvalid("this sign-in link is not one this console issued: run `custody console login`")
    if row.used_at is not None:
        raise LoginTokenUsed("this sign-in link was used already: each signs in once; run `custody console login`")
    if now >= row.expires_at:
        raise LoginTokenExpired("this sign-in link has expired: run `custody console login` for a new one")


@dataclass(frozen=True)
class Signed:
    """A signed-in request: who, and the session's token (to check and make CSRF tokens)."""

    operator: str
    token: str
    expires_at: int

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


def redeem(store: Store, policies: PolicyCache, token: str, now: int, ttl: int = SESSION_TTL) -> Signed:
    """Spend a login token and start a session, in one transaction; the sign-in goes to the audit log."""
    if not 0 < len(token) <= MAX_TOKEN:
        raise LoginTokenInvalid("this sign-in link is not one this console issued: run `custody console login`")
    hashed = digest(token)
    session_token = secrets.token_urlsafe(32)
    with store.transaction() as s:
        spent = s.execute(
            update(ConsoleLoginToken)
            .where(
                ConsoleLoginToken.hash == hashed,
                ConsoleLoginToken.used_at.is_(None),
                ConsoleLoginToken.expires_at > now,
            )
            .values(used_at=now)
        )
        if spent.rowcount != 1:  # type: ignore[attr-defined]
            _check_row(s.get(ConsoleLoginToken, hashed), now)
            raise LoginTokenUsed("this sign-in link was used already")  # spent by someone else meanwhile
        operator = s.get_one(ConsoleLoginToken, hashed).operator
        _require_operator(s, policies, operator)
        row = ConsoleSession(hash=digest(session_token), operator=operator, created_at=now, expires_at=now + ttl)
        s.add(row)
        audit.append(
            s,
            now,
            "console.signin",
            operator,
            {"operator": operator, "session": row.hash[:16], "expires_at": now + ttl},
        )
    return Signed(operator, session_token, now + ttl)


def _require_operator(s: Session, policies: PolicyCache, operator: str) -> None:
    try:
        names = {o.name for o in policies.get(s).policy.operators}
    except NoActivePolicy:
        names = set()
    if operator not in names:
        raise NotSignedIn(f"{operator!r} is no longer one of the active policy's operators")


def session_for(store: Store, policies: PolicyCache, token: str | None, now: int) -> Signed:
    """The session a cookie names, if it is live and its operator is still in the active policy."""
    if not token or len(token) > MAX_TOKEN:
        raise NotSignedIn("not signed in")
    with store.read() as s:
        row = s.get(ConsoleSession, digest(token))
        if row is None or row.ended_at is not None or now >= row.expires_at:
            raise NotSignedIn("the session has ended: sign in again")
        _require_operator(s, policies, row.operator)
        return Signed(row.operator, token, row.expires_at)


def sign_out(store: Store, signed: Signed, now: int) -> None:
    with store.transaction() as s:
        row = s.get(ConsoleSession, digest(signed.token))
        if row is not None and row.ended_at is None:
            row.ended_at = now
            audit.append(s, now, "console.signout", row.operator, {"operator": row.operator, "session": row.hash[:16]})
