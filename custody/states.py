"""A withdrawal's life, as in the design (section 3). Only these transitions exist."""

from __future__ import annotations

from custody.errors import IllegalTransition

RECEIVED, REJECTED, DELAYED = "received", "rejected", "delayed"
QUEUED_HOT, QUEUED_COLD, BATCHED = "queued_hot", "queued_cold", "batched"
SIGNED, BROADCAST, CONFIRMED = "signed", "broadcast", "confirmed"
FAILED, REPLACED, CANCELLED = "failed", "replaced", "cancelled"

TRANSITIONS: dict[str, frozenset[str]] = {
    RECEIVED: frozenset({REJECTED, DELAYED, QUEUED_HOT, QUEUED_COLD, CANCELLED}),
    DELAYED: frozenset({QUEUED_HOT, QUEUED_COLD, CANCELLED}),
    QUEUED_HOT: frozenset({SIGNED, CANCELLED}),
    QUEUED_COLD: frozenset({BATCHED, CANCELLED}),
    BATCHED: frozenset({SIGNED, QUEUED_COLD, CANCELLED}),  # back to the queue when its batch expires
    SIGNED: frozenset({BROADCAST, CANCELLED}),
    BROADCAST: frozenset({CONFIRMED, FAILED, REPLACED}),
    CONFIRMED: frozenset(),
    REJECTED: frozenset(),
    FAILED: frozenset(),
    REPLACED: frozenset(),
    CANCELLED: frozenset(),
}
ALL_STATES = frozenset(TRANSITIONS)
# States a withdrawal never leaves.
FINAL = frozenset(state for state, targets in TRANSITIONS.items() if not targets)
# What the client may still cancel through the API: nothing that is signed or in a batch.
CLIENT_CANCELLABLE = frozenset({RECEIVED, DELAYED, QUEUED_HOT, QUEUED_COLD})
# States whose amount no longer counts against velocity limits: it will never be paid.
NOT_SPENDING = frozenset({REJECTED, CANCELLED, FAILED})


def check_transition(current: str, target: str) -> None:
    if target not in TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(f"a withdrawal cannot go from {current} to {target}")
