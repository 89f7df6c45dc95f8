"""Group commit: what queues while a batch commits goes together into the next one, in order, and each
item hears its own result."""

from __future__ import annotations

import threading

import pytest

from custody.errors import InvalidRequest
from custody.intake.groupcommit import GroupCommit


def test_items_that_queue_during_a_commit_share_the_next_batch_in_order():
    batches: list[list[int]] = []
    first_started, release = threading.Event(), threading.Event()

    def run_many(items: list[int]) -> list[int | Exception]:
        batches.append(items)
        if len(batches) == 1:
            first_started.set()
            release.wait(10)
        return [InvalidRequest(f"odd {i}") if i % 2 else i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit("test", run_many, max_batch=4)
    futures = [group.submit(0)]
    assert first_started.wait(10)
    futures += [group.submit(i) for i in range(1, 7)]  # queued while the first batch "commits"
    release.set()
    assert [f.exception(10) is None for f in futures] == [True, False, True, False, True, False, True]
    assert [f.result() for f in futures if f.exception() is None] == [0, 20, 40, 60]
    assert str(futures[3].exception()) == "odd 3"
    assert batches == [[0], [1, 2, 3, 4], [5, 6]]  # at most max_batch each, nothing waits to fill one
    group.close()


def test_a_failed_transaction_fails_every_item_of_its_batch_only():
    calls = 0

    def run_many(items: list[str]) -> list[str | Exception]:
        nonlocal calls
        calls += 1
        if "down" in items:
            raise ConnectionError("the database went away")
        return [item.upper() for item in items]

    group: GroupCommit[str, str] = GroupCommit("test", run_many)
    with pytest.raises(ConnectionError):
        group.submit("down").result(10)
    assert group.submit("up").result(10) == "UP"  # the thread lives on
    group.close()
    assert calls == 2


def test_close_answers_what_was_queued_then_stops():
    gate = threading.Event()

    def run_many(items: list[int]) -> list[int | Exception]:
        gate.wait(10)
        return items

    group: GroupCommit[int, int] = GroupCommit("test", run_many)
    futures = [group.submit(i) for i in range(5)]
    gate.set()
    group.close()
    assert [f.result(0) for f in futures] == list(range(5))
    assert group.submit(9).result(10) == 9  # a later submit starts a new thread
    group.close()
