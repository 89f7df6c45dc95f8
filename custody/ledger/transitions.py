"""The one way a withdrawal changes state: checked against the state machine and written to the audit log
in the caller's transaction."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from custody.ledger import audit, states, usage
from custody.ledger.states import State
from custody.store.models import Withdrawal

log = logging.getLogger("custody.withdrawals")


def move(s: Session, w: Withdrawal, target: State, now: int, by: str, **data: object) -> None:
    states.check_transition(w.state, target)
    if usage.counts(w.state) and not usage.counts(target):  # never paid now: out of the velocity windows
        usage.take_out(s, w)  # the asset's, the API key's, and its customer's and unlisted ones
    audit.append(s, now, f"withdrawal.{target}", w.id, {"from": w.state, "to": target, "by": by, **data})
    log.info("withdrawal %s: %s -> %s", w.id, w.state, target, extra={"withdrawal": w.id, "by": by})
    w.state, w.updated_at = target, now
