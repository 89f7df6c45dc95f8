"""custody.hot.following.next_action: every branch of following one stored version, without a node or a
database."""

from __future__ import annotations

from dataclasses import replace

import pytest

from custody.chain.ethereum import Receipt
from custody.hot.following import (
    FOLLOWED,
    Action,
    Followed,
    Rules,
    TxState,
    block_moved,
    deep_enough,
    next_action,
)

RULES = Rules(confirmations=3, stuck_after_seconds=120)
NOW = 1_700_000_000
HEAD = 100


# A version sent 10 s ago, the only one at the lowest nonce waiting, never seen in a block.
SENT = Followed(TxState.BROADCAST, broadcast_at=NOW - 10)


def sent(**changes: object) -> Followed:
    return replace(SENT, **changes)


def receipt(block: int, *, success: bool = True, block_hash: str = "0xaa") -> Receipt:
    return Receipt(block, block_hash, success)


def act(tx: Followed, rec: Receipt | None = None, *, head: int = HEAD, now: int = NOW, frozen: bool = False) -> Action:
    return next_action(tx, rec, head, now, rules=RULES, frozen=frozen)


# -- the states --------------------------------------------------------------------------------------------
def test_the_states_are_the_strings_the_database_holds() -> None:
    assert [s.value for s in TxState] == ["signed", "broadcast", "mined", "replaced", "orphaned"]
    assert TxState.ORPHANED == "orphaned" and f"{TxState.MINED}" == "mined"
    assert FOLLOWED == ("signed", "broadcast")


# -- not sent yet ------------------------------------------------------------------------------------------
def test_a_signed_version_is_broadcast() -> None:
    assert act(Followed(TxState.SIGNED)) == Action.BROADCAST


def test_a_signed_version_is_held_while_frozen() -> None:
    assert act(Followed(TxState.SIGNED), frozen=True) == Action.HOLD


def test_a_signed_version_is_broadcast_whatever_its_place_at_the_nonce_or_below() -> None:
    tx = Followed(TxState.SIGNED, newest=False, nonce_landed=True, lowest=False)
    assert act(tx) == Action.BROADCAST


@pytest.mark.parametrize("state", [TxState.MINED, TxState.REPLACED, TxState.ORPHANED])
def test_versions_no_longer_followed_are_left_alone(state: TxState) -> None:
    assert act(Followed(state), receipt(HEAD - 10)) == Action.WAIT
    assert act(Followed(state)) == Action.WAIT


# -- in a block --------------------------------------------------------------------------------------------
def test_exactly_confirmations_deep_settles() -> None:
    # blocks 98, 99, 100: three confirmations, the including block counted
    assert act(sent(), receipt(HEAD - RULES.confirmations + 1)) == Action.SETTLE


def test_one_block_short_of_confirmations_is_only_mined() -> None:
    assert act(sent(), receipt(HEAD - RULES.confirmations + 2)) == Action.MINED


def test_in_the_head_block_with_one_confirmation_settles() -> None:
    rules = Rules(confirmations=1, stuck_after_seconds=120)
    assert next_action(sent(), receipt(HEAD), HEAD, NOW, rules=rules, frozen=False) == Action.SETTLE


def test_a_reverted_receipt_deep_enough_settles_too() -> None:
    # settling decides failed rather than confirmed; following only says it is time
    assert act(sent(), receipt(HEAD - 5, success=False)) == Action.SETTLE
    assert act(sent(), receipt(HEAD, success=False)) == Action.MINED


def test_a_mined_version_settles_even_while_frozen() -> None:
    assert act(sent(), receipt(HEAD - 5), frozen=True) == Action.SETTLE
    assert act(sent(), receipt(HEAD), frozen=True) == Action.MINED


def test_a_mined_version_settles_whatever_its_place_at_the_nonce_or_below() -> None:
    tx = sent(newest=False, nonce_landed=True, lowest=False, mined_block=HEAD - 5)
    assert act(tx, receipt(HEAD - 5)) == Action.SETTLE


def test_a_mined_version_is_not_replaced_however_long_it_waited() -> None:
    assert act(sent(broadcast_at=NOW - 10_000), receipt(HEAD)) == Action.MINED


def test_a_block_is_recorded_when_new_or_moved() -> None:
    assert block_moved(None, None, receipt(HEAD))
    assert block_moved(HEAD - 1, "0xaa", receipt(HEAD))
    assert block_moved(HEAD, "0xbb", receipt(HEAD, block_hash="0xaa"))
    assert not block_moved(HEAD, "0xaa", receipt(HEAD, block_hash="0xaa"))


def test_deep_enough_counts_the_including_block() -> None:
    assert deep_enough(10, 10, 1)
    assert not deep_enough(10, 10, 2)
    assert deep_enough(10, 11, 2)
    assert not deep_enough(11, 10, 1)  # a node answering from behind the receipt's block


# -- gone after being seen ---------------------------------------------------------------------------------
def test_a_receipt_gone_after_being_seen_is_a_reorg() -> None:
    assert act(sent(mined_block=HEAD - 1)) == Action.REORGED


def test_a_reorg_is_noticed_while_frozen_too() -> None:
    # the sender forgets the block then, and sends it again only once unfrozen
    assert act(sent(mined_block=HEAD - 1), frozen=True) == Action.REORGED


def test_a_reorg_is_noticed_on_every_version_not_only_the_newest() -> None:
    assert act(sent(mined_block=HEAD - 1, newest=False, nonce_landed=True, lowest=False)) == Action.REORGED


# -- waiting to be mined -----------------------------------------------------------------------------------
def test_a_version_waiting_is_resent_if_the_node_lost_it() -> None:
    assert act(sent()) == Action.RESEND_IF_LOST


def test_exactly_stuck_after_seconds_is_replaced() -> None:
    assert act(sent(broadcast_at=NOW - RULES.stuck_after_seconds)) == Action.REPLACE


def test_one_second_short_of_stuck_after_seconds_is_not_replaced() -> None:
    assert act(sent(broadcast_at=NOW - RULES.stuck_after_seconds + 1)) == Action.RESEND_IF_LOST


def test_only_the_lowest_nonce_waiting_is_replaced() -> None:
    # the later ones wait behind it, not for fees
    stuck = sent(broadcast_at=NOW - 10_000, lowest=False)
    assert act(stuck) == Action.RESEND_IF_LOST


def test_a_version_without_a_broadcast_time_is_not_replaced() -> None:
    # broadcast, but when it went out is not known: no wait to measure
    assert act(sent(broadcast_at=None)) == Action.RESEND_IF_LOST


def test_nothing_is_sent_or_replaced_while_frozen() -> None:
    assert act(sent(), frozen=True) == Action.HOLD
    assert act(sent(broadcast_at=NOW - 10_000), frozen=True) == Action.HOLD


def test_an_older_version_at_a_nonce_waits_for_the_newest() -> None:
    assert act(sent(newest=False, broadcast_at=NOW - 10_000)) == Action.WAIT


def test_the_newest_version_waits_when_an_older_one_is_in_a_block() -> None:
    # the older one's receipt settles the nonce: no resend, no replacement
    assert act(sent(nonce_landed=True, broadcast_at=NOW - 10_000)) == Action.WAIT


def test_the_decision_reads_nothing_but_its_arguments() -> None:
    tx = sent(broadcast_at=NOW - 100)
    assert act(tx, now=NOW) == Action.RESEND_IF_LOST
    assert act(tx, now=NOW + 20) == Action.REPLACE
    assert act(tx, now=NOW) == Action.RESEND_IF_LOST  # same inputs, same answer
