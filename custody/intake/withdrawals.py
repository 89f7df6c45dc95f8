"""Withdrawal intake and the client-facing transitions. One database transaction per use case."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from custody.clock import Clock
from custody.errors import (
    AssetDisabled,
    Conflict,
    IdempotencyBusy,
    IdempotencyConflict,
    InvalidCursor,
    InvalidField,
    NotABackend,
    NotCancellable,
    NotFound,
    Unauthorized,
    UnknownAsset,
)
from custody.intake.addressbook import check_customer
from custody.intake.apikeys import Principal, Seen
from custody.intake.context import Ask, Facts, Running, asset_context, backends, with_customer
from custody.ledger import audit, states, usage
from custody.ledger.policy import Active, PolicyCache
from custody.ledger.positions import hot_reading
from custody.ledger.states import State
from custody.ledger.transitions import move
from custody.store.db import Store, advisory_lock
from custody.store.models import Withdrawal
from policies.addresses import destination
from policies.canonical import canonical_bytes, canonical_hash
from policies.errors import CustodyError
from policies.evaluate import Context, Decision, Destination, Outcome, Request, Route, evaluate
from policies.units import parse_amount

MAX_PAGE = 200
# Destinations only a policy backend may ask to pay (the treasury whitelist is every withdrawing key's).
CURSOR = re.compile(r"[0-9]{1,19}")  # what next_cursor is (a position); any other text is invalid_cursor
CUSTOMER_DESTINATIONS = frozenset({Destination.ADDRESS_BOOK, Destination.UNLISTED})
TABLE = cast(Table, Withdrawal.__table__)
COLUMNS = [c for c in TABLE.columns if c.key != "seq"]


@dataclass(frozen=True)
class NewWithdrawal:
    """The request as the client sent it: strings, validated only against the active policy."""

    asset: str
    amount: str
    destination: str
    client_reference: str | None = None
    customer: str | None = None

    def digest(self) -> str:
        body = {
            "asset": self.asset,
            "amount": self.amount,
            "destination": self.destination,
            "client_reference": self.client_reference,
        }
        if self.customer is not None:  # absent, the digest is the one stored before customers existed
            body["customer"] = self.customer
        return canonical_hash(body)


@dataclass(frozen=True)
class SignedRequest:
    """The backend's request exactly as it signed it (``custody.intake.signatures``): kept with every
    withdrawal whose destination is not on the treasury whitelist, so that an offline signer can verify that
    the backend asked for it. Every field is the text that was signed, unchanged (a timestamp keeps its digits
    as sent), and the body its exact bytes."""

    key: str
    method: str
    path: str  # the path with its query, as signed
    timestamp: str
    nonce: str
    idempotency_key: str
    body: bytes
    signature: str  # hex, as sent (stored in lowercase)

    def to_json(self) -> str:
        """The stored form (``signer.apirequest``): canonical JSON, every value a string, the body in standard
        base64 and the signature in lowercase hex."""
        doc = {
            "key": self.key,
            "method": self.method,
            "path": self.path,
            "timestamp": self.timestamp,
            "nonce": self.nonce,
            "idempotency_key": self.idempotency_key,
            "body_b64": base64.b64encode(self.body).decode("ascii"),
            "signature": self.signature.lower(),
        }
        return canonical_bytes(doc).decode("utf-8")


def state_after(decision: Decision) -> State:
    if decision.outcome == Outcome.REJECT:
        return State.REJECTED
    if decision.outcome == Outcome.HOLD:
        return State.HELD
    if decision.outcome == Outcome.DELAY:
        return State.DELAYED
    return State.QUEUED_HOT if decision.route == Route.HOT else State.QUEUED_COLD


Entries = list[tuple[str, str, dict[str, Any]]]


def record(s: Session, made: tuple[Withdrawal, Entries], now: int) -> Withdrawal:
    """Write a withdrawal from ``new_withdrawal`` and its audit entries in the caller's transaction."""
    w, entries = made
    s.add(w)
    s.flush()
    if usage.counts(w.state):
        usage.add(s, [(w.asset, w.api_key, w.created_at, w.amount)])
        usage.add_scoped(
            s, [(scope, w.asset, w.created_at, w.amount) for scope in usage.scopes(w.customer, w.destination_kind)]
        )
    audit.append_all(s, now, entries)
    return w


def new_withdrawal(
    *,
    api_key: str,
    idempotency_key: str,
    request_hash: str,
    asset: str,
    amount: int,
    decimals: int,
    destination: str,
    decision: Decision,
    version: int,
    policy_hash: str,
    now: int,
    client_reference: str | None = None,
    customer: str | None = None,
    request: str | None = None,
) -> tuple[Withdrawal, Entries]:
    """A new withdrawal in the state its decision leads to, and the two audit entries that record it.
    ``request`` is the backend's signed request (``SignedRequest.to_json``), kept only if the destination is
    not on the treasury whitelist."""
    state = state_after(decision)
    kind = decision.destination
    w = Withdrawal(
        id=str(uuid.uuid4()),
        api_key=api_key,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        asset=asset,
        amount=amount,
        decimals=decimals,
        destination=destination,
        client_reference=client_reference,
        state=state,
        route=decision.route,
        outcome=decision.outcome,
        reasons=json.dumps([{"rule": r.rule, "passed": r.passed, "message": r.message} for r in decision.reasons]),
        eligible_at=decision.eligible_at,
        policy_version=version,
        policy_hash=policy_hash,
        created_at=now,
        updated_at=now,
        customer=customer,
        destination_kind=kind,
        request=request if kind != Destination.WHITELIST else None,
    )
    received: dict[str, Any] = {
        "to": State.RECEIVED,
        "api_key": api_key,
        "idempotency_key": idempotency_key,
        "asset": asset,
        "amount": str(amount),
        "decimals": decimals,  # so an auditor or a webhook receiver can read the amount in the asset's units
        "destination": destination,
        "policy_hash": policy_hash,
    }
    decided: dict[str, Any] = {
        "from": State.RECEIVED,
        "to": state,
        "route": decision.route,
        "failed": [r.rule for r in decision.failed],
        "eligible_at": decision.eligible_at,
    }
    if customer is not None:  # entries of withdrawals without one keep their shape
        received["customer"] = customer
    if kind is not None:
        decided["destination_kind"] = kind
    return w, [("withdrawal.received", w.id, received), (f"withdrawal.{state}", w.id, decided)]


@dataclass(frozen=True)
class Intake:
    """One request for a new withdrawal, as the API hands it to ``Withdrawals.create_many``."""

    who: Principal
    idempotency_key: str
    request: NewWithdrawal
    request_id: str = "-"
    seen: Seen | None = None  # the signed request, whose nonce this intake's transaction records
    signed: SignedRequest | None = None  # what was signed, kept for a destination not on the whitelist


Created = tuple[Withdrawal, bool]


class _Checked(NamedTuple):
    """An intake whose request is well formed under the active policy, not yet decided."""

    item: Intake
    digest: str
    decimals: int
    amount: int
    destination: str
    customer: str | None


def _check(active: Active, item: Intake, digest: str) -> _Checked:
    req = item.request
    customer = None if req.customer is None else check_customer(req.customer)
    rule = active.policy.assets.get(req.asset)
    if rule is None:
        raise UnknownAsset(f"asset {req.asset[:16]!r} is not known to the active policy")
    if not rule.enabled:
        raise AssetDisabled(f"asset {req.asset} is disabled by the active policy")
    amount = parse_amount(req.amount, rule.decimals)
    # The canonical form for the asset's chain (bech32 lowercase for Bitcoin): the policy's addresses are in it.
    # Another chain's or network's address is address_wrong_chain.
    canonical = destination(rule.chain, rule.network, req.destination)
    return _Checked(item, digest, rule.decimals, amount, canonical, customer)


Remember = Callable[[Session, list[Seen]], list[Unauthorized | None]]


class Withdrawals:
    def __init__(self, store: Store, policies: PolicyCache, clock: Clock, remember: Remember | None = None) -> None:
        """``remember`` records the nonces of intakes that carry their signed request (``Intake.seen``)."""
        self.store, self.policies, self.clock, self.remember = store, policies, clock, remember

    def create(self, who: Principal, idempotency_key: str, req: NewWithdrawal) -> Created:
        """Return the withdrawal for this idempotency key, creating it if it is new (then True)."""
        result = self.create_many([Intake(who, idempotency_key, req)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def create_many(self, items: list[Intake]) -> list[Created | CustodyError]:
        """Take many intakes in one transaction, in order, each decided as if the ones before it had
        committed alone; an item's refusal is its result and does not stop the others. If another replica
        inserted one of these idempotency keys first, each item is taken again on its own."""
        for _ in range(5):
            try:
                with self.store.transaction() as s:
                    return self._intake(s, items)
            except IntegrityError:
                if len(items) > 1:
                    return [result for item in items for result in self.create_many([item])]
                continue  # another replica inserted this key first: read it on the next pass
        return [IdempotencyBusy("the idempotency key is being used concurrently; retry")]

    def _intake(self, s: Session, items: list[Intake]) -> list[Created | CustodyError]:
        """Check what needs no lock first (replays, the customer, the asset, the amount, the address), then
        take the assets' intake locks and decide the rest in order against the windows and the free balance;
        the customers' facts are read once for the whole group (``custody.intake.context``), and not at all
        when no request names a customer."""
        refused = self._replays(s, items)
        known = self._by_keys(s, {(i.who.name, i.idempotency_key) for i in items})
        active: Active | None = None
        results: list[Created | CustodyError | _Checked] = []
        for item, refusal in zip(items, refused, strict=True):
            key, digest = (item.who.name, item.idempotency_key), item.request.digest()
            if refusal is not None:
                results.append(refusal)
                continue
            try:
                existing = known.get(key)
                if existing is not None:
                    results.append((self._same_request(existing, digest), False))
                    continue
                active = active or self.policies.get(s)
                results.append(_check(active, item, digest))
            except CustodyError as exc:
                results.append(exc)
        checked = [r for r in results if isinstance(r, _Checked)]
        if not checked:
            return results  # type: ignore[return-value]  # no _Checked left in it
        assert active is not None
        assets = sorted({c.item.request.asset for c in checked})
        # the worker writes these, not intake
        readings = {asset: hot_reading(s, active.policy.assets[asset]) for asset in assets}
        for asset in assets:
            advisory_lock(s, f"intake:{asset}")
        now = self.clock.now()
        bases: dict[tuple[str, str], Context] = {}
        running = Running()
        asks = [Ask(c.customer, c.item.request.asset, c.destination) for c in checked if c.customer is not None]
        # the customers' facts, for the whole group at once; a group without customers reads nothing more
        facts = Facts.read(s, active.policy, asks, now) if asks else None
        allowed: set[str] | None = None  # the group's keys that are backends, read when first needed
        rows: list[dict[str, Any]] = []
        entries: Entries = []
        for i, c in enumerate(results):
            if not isinstance(c, _Checked):
                continue
            who, asset = c.item.who.name, c.item.request.asset
            existing = known.get((who, c.item.idempotency_key))  # the same key earlier in this batch
            if existing is not None:
                try:
                    results[i] = (self._same_request(existing, c.digest), False)
                except Conflict as exc:
                    results[i] = exc
                continue
            base = bases.get((asset, who))
            if base is None:
                base = bases[(asset, who)] = asset_context(s, active.policy, who, asset, now, readings[asset])
            context = running.context(base, asset, who)
            if facts is not None and c.customer is not None:
                context = with_customer(context, facts, Ask(c.customer, asset, c.destination))
            decision = evaluate(active.policy, Request(asset, c.amount, c.destination, who, c.customer), context)
            if decision.destination in CUSTOMER_DESTINATIONS:
                if allowed is None:
                    allowed = backends(s, active.policy, {k.item.who.name for k in checked if k.customer})
                if who not in allowed:
                    results[i] = NotABackend(
                        f"API key {who!r} is not one of the policy's backends with this public key: only a backend "
                        f"may pay a customer's {decision.destination.replace('_', '-')} destination"
                    )
                    continue
            signed = c.item.signed
            w, more = new_withdrawal(
                api_key=who,
                idempotency_key=c.item.idempotency_key,
                request_hash=c.digest,
                asset=asset,
                amount=c.amount,
                decimals=c.decimals,
                destination=c.destination,
                decision=decision,
                version=active.version,
                policy_hash=active.hash,
                now=now,
                client_reference=c.item.request.client_reference,
                customer=c.customer,
                request=None if signed is None or decision.destination == Destination.WHITELIST else signed.to_json(),
            )
            known[(who, c.item.idempotency_key)] = w
            running.add(w)
            if facts is not None:
                facts.add(w)
            rows.append({col.key: getattr(w, col.key) for col in COLUMNS})
            entries += more
            results[i] = (w, True)
        if rows:
            s.execute(insert(TABLE), rows)  # one executemany; the answer does not need seq
            counting = [r for r in rows if usage.counts(r["state"])]
            usage.add(s, ((r["asset"], r["api_key"], now, r["amount"]) for r in counting))
            usage.add_scoped(  # sends nothing when no withdrawal has a customer
                s,
                (
                    (scope, r["asset"], now, r["amount"])
                    for r in counting
                    for scope in usage.scopes(r["customer"], r["destination_kind"])
                ),
            )
            audit.append_all(s, now, entries)
        return results  # type: ignore[return-value]  # every _Checked was replaced

    def _replays(self, s: Session, items: list[Intake]) -> list[Unauthorized | None]:
        """Record the nonces of the signed requests among ``items``; a replayed one is refused."""
        signed = [(i, item.seen) for i, item in enumerate(items) if item.seen is not None]
        refused: list[Unauthorized | None] = [None] * len(items)
        if signed and self.remember is not None:
            for (i, _), verdict in zip(signed, self.remember(s, [seen for _, seen in signed]), strict=True):
                refused[i] = verdict
        return refused

    @staticmethod
    def _by_keys(s: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Withdrawal]:
        names = {name for name, _ in keys}
        query = select(Withdrawal).where(
            Withdrawal.api_key.in_(names), Withdrawal.idempotency_key.in_({k for _, k in keys})
        )
        found = ((w.api_key, w.idempotency_key, w) for w in s.execute(query).scalars())
        return {(name, key): w for name, key, w in found if (name, key) in keys}

    @staticmethod
    def _same_request(existing: Withdrawal, digest: str) -> Withdrawal:
        if existing.request_hash != digest:
            raise IdempotencyConflict("this Idempotency-Key was used for a different request")
        return existing

    def get(self, who: Principal, withdrawal_id: str) -> Withdrawal:
        with self.store.read() as s:
            return self._owned(s, who, withdrawal_id)

    @staticmethod
    def _owned(s: Session, who: Principal, withdrawal_id: str, lock: bool = False) -> Withdrawal:
        query = select(Withdrawal).where(Withdrawal.id == withdrawal_id, Withdrawal.api_key == who.name)
        w = s.execute(query.with_for_update() if lock else query).scalar_one_or_none()
        if w is None:
            raise NotFound(f"no withdrawal {withdrawal_id[:40]!r} for this API key")
        return w

    def list(
        self, who: Principal, state: str | None, cursor: str | None, limit: int
    ) -> tuple[list[Withdrawal], str | None]:
        """Oldest first, in a stable order; the cursor is the position after the last item returned."""
        if state is not None and state not in states.ALL_STATES:
            raise InvalidField(f"unknown state {state[:20]!r}")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidField(f"limit must be between 1 and {MAX_PAGE}")
        after = 0
        if cursor:
            if CURSOR.fullmatch(cursor) is None:  # ASCII digits only: str.isdigit() takes "²", which int() refuses
                raise InvalidCursor("cursor is not a next_cursor this API handed out")
            after = int(cursor)
        query = select(Withdrawal).where(Withdrawal.api_key == who.name, Withdrawal.seq > after)
        if state is not None:
            query = query.where(Withdrawal.state == state)
        with self.store.read() as s:
            rows = list(s.execute(query.order_by(Withdrawal.seq).limit(limit + 1)).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (str(rows[-1].seq) if more else None)

    def cancel(self, who: Principal, withdrawal_id: str) -> Withdrawal:
        with self.store.transaction() as s:
            w = self._owned(s, who, withdrawal_id, lock=True)
            if w.state not in states.CLIENT_CANCELLABLE:
                raise NotCancellable(f"a withdrawal that is {w.state} can no longer be cancelled")
            move(s, w, State.CANCELLED, self.clock.now(), by=who.name)
            return w

    def promote_due(self, limit: int = 100) -> int:
        """Queue delayed withdrawals whose delay has passed; safe to run on every replica at once."""
        now = self.clock.now()
        with self.store.transaction() as s:
            query = (
                select(Withdrawal)
                .where(Withdrawal.state == State.DELAYED, Withdrawal.eligible_at <= now)
                .order_by(Withdrawal.seq)
                .limit(limit)
            )
            if self.store.is_postgres:
                query = query.with_for_update(skip_locked=True)
            due = list(s.execute(query).scalars())
            for w in due:
                move(s, w, State.QUEUED_HOT if w.route == Route.HOT else State.QUEUED_COLD, now, by="scheduler")
        return len(due)
