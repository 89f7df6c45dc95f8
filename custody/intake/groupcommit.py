"""Group commit: many small units of work, one database transaction.

Request handlers submit items; one thread per ``GroupCommit`` takes everything that has queued up while
the previous transaction was committing and hands it to ``run_many`` as one batch. Under load a batch
holds many requests, so the locks, the round trips and the commit's fsync are paid once for all of them;
with one request in flight a batch is that request alone, with no waiting to fill it.

``run_many`` returns one result per item, in order: a value, or the exception that item gets (an item's
own refusal must not fail the others). If ``run_many`` itself raises (the database is unreachable), every
item of the batch gets that exception, and nothing of the batch was committed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from custody.store.db import unavailable

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("custody.groupcommit")


class GroupCommit(Generic[T, R]):
    def __init__(self, name: str, run_many: Callable[[list[T]], Sequence[R | Exception]], max_batch: int = 256) -> None:
        self.name, self.run_many, self.max_batch = name, run_many, max_batch
        self._queue: queue.SimpleQueue[tuple[T, Future[R]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, item: T) -> Future[R]:
        future: Future[R] = Future()
        self._queue.put((item, future))
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name=f"group-commit-{self.name}", daemon=True)
                    self._thread.start()
        return future

    async def run(self, item: T) -> R:
        """Submit from a coroutine and wait without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(item))

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            self._settle(batch)

    def _settle(self, batch: list[tuple[T, Future[R]]]) -> None:
        try:
            results = self.run_many([item for item, _ in batch])
        except Exception as exc:  # the whole transaction failed: every item hears why
            if not unavailable(exc):  # a database outage is logged once, by the API (custody.outage)
                log.warning("%s: a batch of %d failed: %s", self.name, len(batch), type(exc).__name__)
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
