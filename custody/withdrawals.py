"""Withdrawal intake and the client-facing transitions. One database transaction per use case."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from sqlalchemy import and_, case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from custody import audit, states
from custody.apikeys import Principal
from custody.clock import Clock
from custody.errors import Conflict, InvalidRequest, NotFound
from custody.policy import PolicyCache
from custody.reserves import free_balance
from custody.store.db import Store, advisory_lock
from custody.store.models import Withdrawal
from custody.transitions import move
from policies.addresses import checksum_address
from policies.canonical import canonical_hash
from policies.evaluate import DELAY, HOT, REJECT, Context, Decision, Request, evaluate, window_totals
from policies.model import Policy
from policies.units import parse_amount

MAX_PAGE = 200


@dataclass(frozen=True)
class NewWithdrawal:
    """The request as the client sent it: strings, validated only against the active policy."""

    asset: str
    amount: str
    destination: str
    client_reference: str | None = None

    def digest(self) -> str:
        return canonical_hash(
            {
                "asset": self.asset,
                "amount": self.amount,
                "destination": self.destination,
                "client_reference": self.client_reference,
            }
        )


def state_after(decision: Decision) -> str:
    if decision.outcome == REJECT:
        return states.REJECTED
    if decision.outcome == DELAY:
        return states.DELAYED
    return states.QUEUED_HOT if decision.route == HOT else states.QUEUED_COLD


def record(
    s: Session,
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
) -> Withdrawal:
    """Write a new withdrawal in the state its decision leads to, with both audit entries, under one lock."""
    state = state_after(decision)
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
    )
    s.add(w)
    s.flush()
    audit.append_all(
        s,
        now,
        [
            (
                "withdrawal.received",
                w.id,
                {
                    "to": states.RECEIVED,
                    "api_key": api_key,
                    "idempotency_key": idempotency_key,
                    "asset": asset,
                    "amount": str(amount),
                    "destination": destination,
                    "policy_hash": policy_hash,
                },
            ),
            (
                f"withdrawal.{state}",
                w.id,
                {
                    "from": states.RECEIVED,
                    "to": state,
                    "route": decision.route,
                    "failed": [r.rule for r in decision.failed],
                    "eligible_at": decision.eligible_at,
                },
            ),
        ],
    )
    return w


class Withdrawals:
    def __init__(self, store: Store, policies: PolicyCache, clock: Clock) -> None:
        self.store, self.policies, self.clock = store, policies, clock

    def create(self, who: Principal, idempotency_key: str, req: NewWithdrawal) -> tuple[Withdrawal, bool]:
        """Return the withdrawal for this idempotency key, creating it if it is new (then True)."""
        digest = req.digest()
        for _ in range(5):
            try:
                with self.store.transaction() as s:
                    advisory_lock(s, f"intake:{req.asset}")
                    existing = self._by_key(s, who.name, idempotency_key)
                    if existing is not None:
                        return self._same_request(existing, digest), False
                    return self._insert(s, who, idempotency_key, req, digest), True
            except IntegrityError:
                continue  # another replica inserted this key first: read it on the next pass
        raise Conflict("the idempotency key is being used concurrently; retry", code="idempotency_busy")

    @staticmethod
    def _by_key(s: Session, api_key: str, idempotency_key: str) -> Withdrawal | None:
        query = select(Withdrawal).where(Withdrawal.api_key == api_key, Withdrawal.idempotency_key == idempotency_key)
        return s.execute(query).scalar_one_or_none()

    @staticmethod
    def _same_request(existing: Withdrawal, digest: str) -> Withdrawal:
        if existing.request_hash != digest:
            raise Conflict("this Idempotency-Key was used for a different request", code="idempotency_conflict")
        return existing

    def _insert(self, s: Session, who: Principal, idempotency_key: str, req: NewWithdrawal, digest: str) -> Withdrawal:
        active = self.policies.get(s)
        rule = active.policy.assets.get(req.asset)
        if rule is None:
            raise InvalidRequest(f"asset {req.asset[:16]!r} is not known to the active policy", code="unknown_asset")
        if not rule.enabled:
            raise InvalidRequest(f"asset {req.asset} is disabled by the active policy", code="asset_disabled")
        amount = parse_amount(req.amount, rule.decimals)
        destination = checksum_address(req.destination)
        now = self.clock.now()
        decision = evaluate(
            active.policy,
            Request(req.asset, amount, destination, who.name),
            self._context(s, active.policy, who.name, req.asset, now),
        )
        return record(
            s,
            api_key=who.name,
            idempotency_key=idempotency_key,
            request_hash=digest,
            asset=req.asset,
            amount=amount,
            decimals=rule.decimals,
            destination=destination,
            decision=decision,
            version=active.version,
            policy_hash=active.hash,
            now=now,
            client_reference=req.client_reference,
        )

    def _context(self, s: Session, policy: Policy, api_key: str, asset: str, now: int) -> Context:
        periods = [w.seconds for w in policy.assets[asset].windows]
        key_rule = policy.api_keys.get(api_key)
        key_periods = [w.seconds for w in key_rule.windows.get(asset, ())] if key_rule else []
        asset_totals, key_totals = self._window_totals(s, asset, api_key, now, periods, key_periods)
        return Context(
            now=now, asset_totals=asset_totals, key_totals=key_totals, hot_free_balance=free_balance(s, asset)
        )

    def _window_totals(
        self, s: Session, asset: str, api_key: str, now: int, periods: list[int], key_periods: list[int]
    ) -> tuple[dict[int, int], dict[int, int]]:
        """What earlier withdrawals of this asset used in each window (an event at t counts in window p iff
        now - p < t <= now, as in ``policies.evaluate.window_totals``). PostgreSQL sums exactly in SQL;
        SQLite has no exact wide integers, so its rows are summed here."""
        longest = max(periods + key_periods, default=0)
        if not longest:
            return {}, {}
        W = Withdrawal
        where = (
            W.asset == asset,
            W.created_at > now - longest,
            W.created_at <= now,
            W.state.not_in(states.NOT_SPENDING),
        )
        if self.store.is_postgres:
            sums = [func.coalesce(func.sum(case((W.created_at > now - p, W.amount), else_=0)), 0) for p in periods]
            sums += [
                func.coalesce(
                    func.sum(case((and_(W.api_key == api_key, W.created_at > now - p), W.amount), else_=0)), 0
                )
                for p in key_periods
            ]
            row = s.execute(select(*sums).where(*where)).one()
            values = [int(v) for v in row]
            return dict(zip(periods, values[: len(periods)], strict=True)), dict(
                zip(key_periods, values[len(periods) :], strict=True)
            )
        rows = s.execute(select(W.created_at, W.amount, W.api_key).where(*where)).all()
        return (
            window_totals(((r[0], r[1]) for r in rows), now, periods),
            window_totals(((r[0], r[1]) for r in rows if r[2] == api_key), now, key_periods),
        )

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
            raise InvalidRequest(f"unknown state {state[:20]!r}", code="invalid_field")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}", code="invalid_field")
        after = 0
        if cursor:
            if not cursor.isdigit() or len(cursor) > 19:
                raise InvalidRequest("invalid cursor", code="invalid_cursor")
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
                raise Conflict(f"a withdrawal that is {w.state} can no longer be cancelled", code="not_cancellable")
            move(s, w, states.CANCELLED, self.clock.now(), by=who.name)
            return w

    def promote_due(self, limit: int = 100) -> int:
        """Queue delayed withdrawals whose delay has passed; safe to run on every replica at once."""
        now = self.clock.now()
        with self.store.transaction() as s:
            query = (
                select(Withdrawal)
                .where(Withdrawal.state == states.DELAYED, Withdrawal.eligible_at <= now)
                .order_by(Withdrawal.seq)
                .limit(limit)
            )
            if self.store.is_postgres:
                query = query.with_for_update(skip_locked=True)
            due = list(s.execute(query).scalars())
            for w in due:
                move(s, w, states.QUEUED_HOT if w.route == HOT else states.QUEUED_COLD, now, by="scheduler")
        return len(due)
