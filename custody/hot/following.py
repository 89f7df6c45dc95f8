"""Following a hot-wallet transaction: what to do next with one stored version, decided from what the database
holds of it, its receipt, the chain's head and the time. A pure function, so every branch can be tested without
a node or a database; the sender (``custody.hot.sender``) gathers the inputs, asks ``next_action`` and does the
I/O it names.

What following decides (step 3 of a payment, after sign and broadcast):

    Deep enough (``confirmations`` blocks, the including one counted) -> settled (confirmed, or failed if it
    reverted); gone from the chain after being seen (a reorg) -> broadcast again. Not mined, and the node does
    not know it (restarted without its mempool, or dropped it) -> the same stored bytes are sent again at once,
    every pass. Known to the node but not mined for ``stuck_after_seconds`` -> a replacement at the same nonce
    with fees at least 12.5 % higher, only for the lowest nonce still waiting (the later ones wait behind it,
    not for fees), and decided under the wallet's row lock, so two replicas never both sign one. Whichever
    version is mined settles what it pays.

A freeze holds what is not sent yet (nonce and all) and stops replacements; what is already mined still
settles.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from custody.chain.ethereum import Receipt
from custody.ledger.states import TxState

FOLLOWED = (TxState.SIGNED, TxState.BROADCAST)  # the states following moves forward


class Action(StrEnum):
    """What the sender does next with one version."""

    WAIT = "wait"  # nothing this pass: another version at its nonce is the one that counts, or it is not followed
    HOLD = "hold"  # a freeze is in force: nothing is sent and nothing replaced until a quorum lifts it
    BROADCAST = "broadcast"  # stored, not sent: send its stored bytes
    # Sent, not mined, not stuck (or not the lowest nonce waiting): if the node has lost it, send the same bytes
    # again (which restarts its wait).
    RESEND_IF_LOST = "resend_if_lost"
    # Sent, not mined for ``stuck_after_seconds``, at the lowest nonce waiting: if the node has lost it, send the
    # same bytes again as RESEND_IF_LOST does; if it has it (or refuses the bytes now), sign a replacement with
    # higher fees (the fee is what keeps it out of blocks, not a nonce before it).
    REPLACE = "replace"
    REORGED = "reorged"  # seen in a block that is no longer canonical: forget the block and send it again
    MINED = "mined"  # in a canonical block, not deep enough yet: record the block if it is a new one
    SETTLE = "settle"  # in a canonical block, deep enough: record the block if new, then settle


@dataclass(frozen=True)
class Rules:
    confirmations: int  # blocks, the including one counted: 1 = settled once it is in the newest block
    stuck_after_seconds: int  # sent and known to the node this long without being mined: replace it


@dataclass(frozen=True)
class Followed:
    """One stored version as following sees it: the row's fields that matter, and where it stands among the
    versions at its nonce and the nonces below it in this pass."""

    state: str
    mined_block: int | None = None  # the block it was last seen in, while not yet deep enough
    broadcast_at: int | None = None  # unix seconds it was last sent (again)
    newest: bool = True  # the newest version at its nonce: the one a waiting nonce is about
    nonce_landed: bool = False  # an earlier version at its nonce is in a canonical block
    lowest: bool = True  # no lower nonce is still waiting to be mined


def deep_enough(block: int, head: int, confirmations: int) -> bool:
    """Whether a transaction in ``block`` has ``confirmations`` blocks at ``head``, its own counted."""
    return head - block + 1 >= confirmations


def next_action(tx: Followed, receipt: Receipt | None, head: int, now: int, *, rules: Rules, frozen: bool) -> Action:
    """What to do with ``tx`` now. ``receipt`` is its receipt if its block is canonical (None if it has none,
    or its block left the chain; ignored for a version not sent yet), ``head`` the chain's newest block
    number, ``now`` unix seconds, ``frozen`` whether a freeze is in force."""
    if tx.state == TxState.SIGNED:
        return Action.HOLD if frozen else Action.BROADCAST  # signed before a freeze: held, nonce and all
    if tx.state != TxState.BROADCAST:
        return Action.WAIT
    if receipt is not None:
        return Action.SETTLE if deep_enough(receipt.block_number, head, rules.confirmations) else Action.MINED
    if tx.mined_block is not None:
        return Action.REORGED
    if not tx.newest or tx.nonce_landed:
        return Action.WAIT
    if frozen:
        return Action.HOLD
    waited = None if tx.broadcast_at is None else now - tx.broadcast_at
    if tx.lowest and waited is not None and waited >= rules.stuck_after_seconds:
        return Action.REPLACE
    return Action.RESEND_IF_LOST


def block_moved(tx_block: int | None, tx_block_hash: str | None, receipt: Receipt) -> bool:
    """Whether ``receipt`` puts the version in another block than the one recorded for it."""
    return (tx_block, tx_block_hash) != (receipt.block_number, receipt.block_hash)
