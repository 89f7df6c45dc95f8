"""The scheduler that runs beside the API in `custody serve`: once a second it queues the delayed withdrawals
whose delay has passed, records ``address.active`` for address-book entries whose lock has passed, and forgets
request nonces too old to be replayed.

Every replica runs one; every job is safe to run on all of them at once. A failed tick is retried with
backoff, and a database outage is logged once when it begins and once when it ends (``custody.outage``).
"""

from __future__ import annotations

import logging
import threading

from custody import logs, outage
from custody.clock import Clock
from custody.intake.addressbook import due_announcements
from custody.intake.apikeys import Authenticator
from custody.intake.withdrawals import Withdrawals

# Its lines have always been logged as the command line's (where the scheduler used to live); operators'
# log filters and tests/integration/test_db_outages.py look for them there.
log = logging.getLogger("custody.cli")


class Scheduler:
    """The timed jobs of one API process, on a thread of their own."""

    def __init__(self, withdrawals: Withdrawals, auth: Authenticator, clock: Clock) -> None:
        self.withdrawals, self.auth, self.clock = withdrawals, auth, clock
        self.loop = outage.Loop("scheduler", log, idle=1.0)

    def tick(self) -> bool:
        """One pass of every job; False, so the next pass comes a second later whatever this one did."""
        logs.REQUEST_ID.set(logs.new_id("s-"))
        self.withdrawals.promote_due()
        due_announcements(self.withdrawals.store, self.clock.now())
        self.auth.prune(self.clock.now())
        return False

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set."""
        self.loop.forever(self.tick, stop)

    def start(self, stop: threading.Event) -> threading.Thread:
        """Run on a daemon thread named "scheduler" (it dies with the process) until ``stop`` is set."""
        thread = threading.Thread(target=self.run, args=(stop,), name="scheduler", daemon=True)
        thread.start()
        return thread
