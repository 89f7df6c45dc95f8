"""Held withdrawals and the operators who decide them, four eyes: `custody review list | show | approve | reject`.

A withdrawal is ``held`` when a risk rule of the policy fired at intake (``policies.evaluate``, rules
``hold:*``). Operators declared in the quorum-signed policy (``[[operators]]``) decide it, each decision
signed with the operator's Ed25519 key (the message is ``signer.decisions.decision_message``, defined on the
offline side) and kept (``approvals``) with its signature, so that offline signers can verify the approvals of
a held cold payout themselves. One reject rejects it. Two approvals by distinct operators release it: the policy is run
again at that moment with ``approved=True`` (the holds are not evaluated; everything else is, against the
windows and balances of now, this withdrawal not counted against itself), and it goes to ``queued_hot``,
``queued_cold`` or ``delayed``, or ``rejected`` if the policy now refuses it.

Each decision is one transaction under a lock of the withdrawal's row, so two decisions at once are taken
one after the other (two approvals at once release it once), and everything is in the audit log in that same
transaction. A refusal (``unknown_operator``, ``bad_signature``, ``not_held``, ``already_decided``) writes
nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import SigningKey, VerifyKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.clock import Clock
from custody.errors import AlreadyDecided, BadSignature, InvalidField, NotFound, NotHeld, UnknownOperator
from custody.intake.context import Ask, Facts, asset_context, backends, with_customer, without
from custody.intake.withdrawals import CUSTOMER_DESTINATIONS, state_after
from custody.ledger import audit, usage
from custody.ledger.policy import Active, PolicyCache
from custody.ledger.positions import hot_reading
from custody.ledger.states import State
from custody.ledger.transitions import move
from custody.store.db import Store, advisory_lock
from custody.store.models import Approval, Withdrawal
from policies.evaluate import Context, Decision, Destination, Outcome, Reason, Request, evaluate
from signer.decisions import APPROVE, MAX_REASON, REJECT, decision_message

DECISIONS = (APPROVE, REJECT)
RELEASED_BY = 2  # distinct operators' approvals
HISTORY = 20  # the customer's withdrawals shown beside a held one


@dataclass(frozen=True)
class SignedDecision:
    """One operator's decision on one withdrawal, as signed."""

    withdrawal: str
    decision: str  # approve | reject
    reason: str
    at: int  # unix seconds, the operator's clock
    key: str  # the operator's Ed25519 public key, hex
    signature: str  # hex

    def check(self) -> None:
        """The decision's own shape; who signed it and whether the signature verifies are ``Review``'s."""
        if self.decision not in DECISIONS:
            raise InvalidField(f"decision must be one of {list(DECISIONS)}")
        if not 1 <= len(self.reason) <= MAX_REASON or not self.reason.isprintable():
            raise InvalidField(f"the reason must be 1 to {MAX_REASON} printable characters")
        if self.at < 0:
            raise InvalidField("the decision's time must be a unix time")

    def verify(self) -> None:
        try:
            VerifyKey(bytes.fromhex(self.key)).verify(
                decision_message(self.withdrawal, self.decision, self.reason, self.at), bytes.fromhex(self.signature)
            )
        except (BadSignatureError, ValueError, NaclValueError):
            raise BadSignature("the operator's signature of this decision does not verify") from None


def sign_decision(key: SigningKey, withdrawal_id: str, decision: str, reason: str, at: int) -> SignedDecision:
    """What an operator's machine sends: the decision signed with the operator's key."""
    signature = key.sign(decision_message(withdrawal_id, decision, reason, at)).signature.hex()
    return SignedDecision(withdrawal_id, decision, reason, at, key.verify_key.encode().hex(), signature)


@dataclass(frozen=True)
class HeldView:
    """One withdrawal as an operator reviews it."""

    withdrawal: Withdrawal
    holds: list[dict[str, Any]]  # the hold rules that fired at intake: {rule, passed, message}
    approvals: list[Approval]  # the decisions so far, oldest first
    history: list[Withdrawal]  # the customer's other withdrawals, newest first


class Review:
    """The review service: one transaction per use case."""

    def __init__(self, store: Store, policies: PolicyCache, clock: Clock) -> None:
        self.store, self.policies, self.clock = store, policies, clock

    def held(self, limit: int = 100) -> list[Withdrawal]:
        """The withdrawals waiting for operators, oldest first."""
        query = select(Withdrawal).where(Withdrawal.state == State.HELD).order_by(Withdrawal.seq).limit(limit)
        with self.store.read() as s:
            return list(s.execute(query).scalars())

    def show(self, withdrawal_id: str) -> HeldView:
        """A withdrawal (held or not) with the holds that fired, the decisions so far and its customer's
        recent withdrawals."""
        with self.store.read() as s:
            w = s.execute(select(Withdrawal).where(Withdrawal.id == withdrawal_id)).scalar_one_or_none()
            if w is None:
                raise NotFound(f"no withdrawal {withdrawal_id[:40]!r}")
            history: list[Withdrawal] = []
            if w.customer is not None:
                query = (
                    select(Withdrawal)
                    .where(Withdrawal.customer == w.customer, Withdrawal.id != w.id)
                    .order_by(Withdrawal.created_at.desc(), Withdrawal.seq.desc())
                    .limit(HISTORY)
                )
                history = list(s.execute(query).scalars())
            holds = [r for r in json.loads(w.reasons) if r["rule"].startswith("hold:") and not r["passed"]]
            return HeldView(w, holds, _approvals(s, w.id), history)

    def decide(self, d: SignedDecision) -> Withdrawal:
        """Record an operator's signed decision; reject the withdrawal on a reject, release it (decided again
        by the policy of now) on the second distinct approval. Refusals write nothing."""
        d.check()
        with self.store.transaction() as s:
            query = select(Withdrawal).where(Withdrawal.id == d.withdrawal).with_for_update()
            w = s.execute(query).scalar_one_or_none()  # held until commit: decisions on it are taken in turn
            if w is None:
                raise NotFound(f"no withdrawal {d.withdrawal[:40]!r}")
            active = self.policies.get(s)
            operator = next((o.name for o in active.policy.operators if o.key == d.key.lower()), None)
            if operator is None:
                raise UnknownOperator("this key is not one of the active policy's operators")
            d.verify()
            if w.state != State.HELD:
                raise NotHeld(f"the withdrawal is {w.state}, not held")
            before = _approvals(s, w.id)
            if any(a.operator == operator for a in before):
                raise AlreadyDecided(f"operator {operator!r} has decided this withdrawal already")
            approvers = [a.operator for a in before if a.decision == APPROVE] + [operator]
            releases = d.decision == APPROVE and len(approvers) >= RELEASED_BY
            now = self.clock.now()
            rule = active.policy.assets.get(w.asset)
            reading = hot_reading(s, rule) if releases and rule is not None else None
            if releases:  # before the audit head is locked below, in the order intake takes the two
                advisory_lock(s, f"intake:{w.asset}")
            s.add(
                Approval(
                    withdrawal_id=w.id,
                    operator=operator,
                    decision=d.decision,
                    reason=d.reason,
                    at=d.at,
                    signature=d.signature.lower(),
                )
            )
            s.flush()
            audit.append(
                s,
                now,
                "withdrawal.reviewed",
                w.id,
                {"operator": operator, "decision": d.decision, "reason": d.reason, "at": d.at, "key": d.key.lower()},
            )
            by = f"operator:{operator}"
            if d.decision == REJECT:
                move(s, w, State.REJECTED, now, by=by, reason=d.reason)
            elif releases:
                self._release(s, active, w, now, reading, by, approvers)
            return w

    @staticmethod
    def _release(
        s: Session,
        active: Active,
        w: Withdrawal,
        now: int,
        reading: tuple[int, int] | None,
        by: str,
        approvers: list[str],
    ) -> None:
        """Decide ``w`` again with ``approved=True`` and move it where that decision leads."""
        decision = decide_again(s, active, w, now, reading)
        was_whitelisted = w.destination_kind == Destination.WHITELIST and w.request is None
        if decision.destination in CUSTOMER_DESTINATIONS and (
            was_whitelisted or w.api_key not in backends(s, active.policy, {w.api_key})
        ):
            # whitelisted when it was asked for, no longer: only a backend's own signed request may pay a customer's
            # address-book or unlisted destination, and signers need that request
            refusal = Reason(
                "backend",
                False,
                "{} is no longer whitelisted, and only a policy backend's signed request may pay it now",
                (w.destination,),
            )
            decision = Decision(Outcome.REJECT, None, None, (*decision.reasons, refusal))
        old, new = usage.scopes(w.customer, w.destination_kind), usage.scopes(w.customer, decision.destination)
        if old != new:  # it counts (held) under the kind of destination it had: now under the one it has
            usage.add_scoped(
                s,
                [(scope, w.asset, w.created_at, -w.amount) for scope in old]
                + [(scope, w.asset, w.created_at, w.amount) for scope in new],
            )
        w.destination_kind = decision.destination
        w.route, w.outcome, w.eligible_at = decision.route, decision.outcome, decision.eligible_at
        w.reasons = json.dumps([{"rule": r.rule, "passed": r.passed, "message": r.message} for r in decision.reasons])
        w.policy_version, w.policy_hash = active.version, active.hash
        move(
            s,
            w,
            state_after(decision),
            now,
            by=by,
            approved_by=approvers,
            route=decision.route,
            failed=[r.rule for r in decision.failed],
            eligible_at=decision.eligible_at,
            policy_hash=active.hash,
        )


def decide_again(s: Session, active: Active, w: Withdrawal, now: int, reading: tuple[int, int] | None) -> Decision:
    """The policy's decision on ``w`` at ``now`` once two operators approved it: against the windows as they
    are, without ``w``'s own amount (it counts in them while held), and the hot wallet's free balance."""
    policy = active.policy
    base = asset_context(s, policy, w.api_key, w.asset, now, reading)
    context = Context(
        now=now,
        asset_totals=without(dict(base.asset_totals), w.amount, w.created_at, now),
        key_totals=without(dict(base.key_totals), w.amount, w.created_at, now),
        hot_free_balance=base.hot_free_balance,
        approved=True,
    )
    if w.customer is not None:
        ask = Ask(w.customer, w.asset, w.destination)
        facts = Facts.read(s, policy, [ask], now, holds=False)
        for scope in usage.scopes(w.customer, w.destination_kind):
            if (scope, w.asset) in facts.totals:
                facts.totals[(scope, w.asset)] = without(facts.totals[(scope, w.asset)], w.amount, w.created_at, now)
        context = with_customer(context, facts, ask, approved=True)
    return evaluate(policy, Request(w.asset, w.amount, w.destination, w.api_key, w.customer), context)


def _approvals(s: Session, withdrawal_id: str) -> list[Approval]:
    query = select(Approval).where(Approval.withdrawal_id == withdrawal_id).order_by(Approval.at, Approval.operator)
    return list(s.execute(query).scalars())
