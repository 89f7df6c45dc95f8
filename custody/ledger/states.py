"""A withdrawal's life, as in the design (section 3): only these transitions exist. And the states of a hot
wallet transaction's stored versions (``custody.hot``)."""

from __future__ import annotations

from enum import StrEnum

from custody.errors import IllegalTransition


class State(StrEnum):
    """A withdrawal's state (``Withdrawal.state``); the value is what the database and the API hold."""

    RECEIVED = "received"
    REJECTED = "rejected"
    DELAYED = "delayed"
    HELD = "held"  # a risk rule fired: two operators decide (``custody.intake.review``)
    QUEUED_HOT = "queued_hot"
    QUEUED_COLD = "queued_cold"
    BATCHED = "batched"
    SIGNED = "signed"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    REPLACED = "replaced"
    CANCELLED = "cancelled"


class TxState(StrEnum):
    """A stored version's state (``HotTransaction.state``); the value is what the database holds."""

    SIGNED = "signed"  # stored, not sent yet
    BROADCAST = "broadcast"  # sent; perhaps seen in a block not yet deep enough (``mined_block``)
    MINED = "mined"  # deep enough and settled; the rollback watch keeps checking its block
    REPLACED = "replaced"  # another version at its nonce was mined
    # Mined and settled, then its block left the chain: a rollback deeper than the confirmation depth.
    ORPHANED = "orphaned"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.RECEIVED: frozenset(
        {State.REJECTED, State.DELAYED, State.HELD, State.QUEUED_HOT, State.QUEUED_COLD, State.CANCELLED}
    ),
    # Released by two operators' approvals (the policy decides again then: queued, delayed or rejected),
    # rejected by one operator, or cancelled by the client.
    State.HELD: frozenset({State.QUEUED_HOT, State.QUEUED_COLD, State.DELAYED, State.REJECTED, State.CANCELLED}),
    State.DELAYED: frozenset({State.QUEUED_HOT, State.QUEUED_COLD, State.CANCELLED}),
    State.QUEUED_HOT: frozenset({State.SIGNED, State.CANCELLED}),
    State.QUEUED_COLD: frozenset({State.BATCHED, State.CANCELLED}),
    State.BATCHED: frozenset(
        {State.SIGNED, State.QUEUED_COLD, State.CANCELLED}
    ),  # back to the queue when its batch expires
    State.SIGNED: frozenset({State.BROADCAST, State.CANCELLED}),
    State.BROADCAST: frozenset({State.CONFIRMED, State.FAILED, State.REPLACED}),
    State.CONFIRMED: frozenset(),
    State.REJECTED: frozenset(),
    State.FAILED: frozenset(),
    State.REPLACED: frozenset(),
    State.CANCELLED: frozenset(),
}
ALL_STATES = frozenset(TRANSITIONS)
# States a withdrawal never leaves.
FINAL = frozenset(state for state, targets in TRANSITIONS.items() if not targets)
# What the client may still cancel through the API: nothing that is signed or in a batch.
CLIENT_CANCELLABLE = frozenset({State.RECEIVED, State.DELAYED, State.HELD, State.QUEUED_HOT, State.QUEUED_COLD})
# States whose amount no longer counts against velocity limits: it will never be paid.
NOT_SPENDING = frozenset({State.REJECTED, State.CANCELLED, State.FAILED})


def check_transition(current: str, target: State) -> None:
    if current not in ALL_STATES or target not in TRANSITIONS[State(current)]:
        raise IllegalTransition(f"a withdrawal cannot go from {current} to {target}")
