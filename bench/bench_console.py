"""The operators' console: each page's render time with 100,000 withdrawals in the database, on SQLite and (when
a server is at 127.0.0.1:5432) PostgreSQL.

For each database: the test policy with operators, a few withdrawals through the real intake (their decisions
are the templates), then N withdrawals inserted in bulk (states, assets, customers and times spread like a
busy month) with two hash-chained audit entries each (``custody.ledger.audit.append_all``, so the chain
verifies; on PostgreSQL then VACUUM ANALYZE, as autovacuum would after such a load). A real uvicorn serves the
console; one signed-in httpx client GETs every page REPEAT times after a warm-up and prints the median and worst
per page, against a baseline measured in the same run: the same pages over 1,000 withdrawals. Target: no page
over 300 ms (its median; a worst run over it is flagged). Verifying the whole audit chain (a button, not a page)
is timed once and printed apart.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import insert, select, text

from custody.clock import FixedClock
from custody.console.auth import issue_token
from custody.intake.withdrawals import NewWithdrawal, Withdrawals
from custody.ledger import audit
from custody.ledger.policy import PolicyCache
from custody.store.db import Store
from custody.store.models import PolicyBundleRow, Withdrawal
from tests.conftest import DENIED, OMNIBUS, drop_postgres_db, make_postgres_db, postgres_available
from tests.custody.test_console import running_console, sign_in
from tests.custody.test_customer_intake import UNLISTED_ADDRESSES, WHO, install

N = int(os.environ.get("BENCH_CONSOLE_WITHDRAWALS", "100000"))
BASELINE = 1000
REPEAT = int(os.environ.get("BENCH_CONSOLE_REPEAT", "9"))
TARGET_MS = 300
CHUNK = 5000
# state -> share of the rows, like a month of a busy exchange: most settled, a few waiting
STATES = (
    ("confirmed", 0.86),
    ("rejected", 0.05),
    ("cancelled", 0.04),
    ("queued_cold", 0.03),
    ("batched", 0.01),
    ("queued_hot", 0.003),
    ("held", 0.004),
    ("delayed", 0.003),
)


def fill(url: str, n: int) -> tuple[Store, FixedClock, dict[str, str]]:
    """The database: the policy, three real withdrawals, then ``n`` more in bulk; returns a sample of ids."""
    now = int(time.time())
    store, _ = install(url, now, holds="first_payout = true")
    clock = FixedClock(now)
    intake = Withdrawals(store, PolicyCache(), clock)
    made = {
        "queued_cold": intake.create(WHO, "t-cold", NewWithdrawal("ETH", "2", OMNIBUS))[0],
        "held": intake.create(WHO, "t-held", NewWithdrawal("ETH", "0.5", UNLISTED_ADDRESSES[0], customer="c-1"))[0],
        "rejected": intake.create(WHO, "t-rej", NewWithdrawal("ETH", "1", DENIED))[0],
    }
    with store.read() as s:
        version, policy_hash = s.execute(
            select(PolicyBundleRow.version, PolicyBundleRow.hash).order_by(PolicyBundleRow.version.desc()).limit(1)
        ).one()
    rng = random.Random(20)
    weights = [w for _, w in STATES]
    names = [s for s, _ in STATES]
    start = now - 30 * 86400
    sample: dict[str, str] = {}
    for first in range(0, n, CHUNK):
        rows, entries = [], []
        for i in range(first, min(n, first + CHUNK)):
            state = rng.choices(names, weights)[0]
            template = made["held" if state == "held" else "rejected" if state == "rejected" else "queued_cold"]
            wid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            asset = "ETH" if i % 3 else "USDC"
            at = start + i * (30 * 86400) // n
            customer = f"cust-{i % 2000}" if i % 2 else None
            route = None if state in ("rejected", "held") else "cold" if "cold" in state or i % 4 == 0 else "hot"
            rows.append(
                {
                    "id": wid,
                    "api_key": "backend",
                    "idempotency_key": f"bench-{i}",
                    "request_hash": f"{i:064x}",
                    "asset": asset,
                    "amount": (i % 500 + 1) * (10**16 if asset == "ETH" else 10**6),
                    "decimals": 18 if asset == "ETH" else 6,
                    "destination": OMNIBUS if template is not made["held"] else UNLISTED_ADDRESSES[i % 64],
                    "client_reference": f"order-{i}",
                    "state": state,
                    "route": route,
                    "outcome": template.outcome,
                    "reasons": template.reasons,
                    "eligible_at": None,
                    "policy_version": version,
                    "policy_hash": policy_hash,
                    "created_at": at,
                    "updated_at": at + 60,
                    "tx_hash": f"0x{rng.getrandbits(256):064x}" if state == "confirmed" else None,
                    "customer": customer,
                    "destination_kind": template.destination_kind,
                }
            )
            entries.append(("withdrawal.received", wid, {"asset": asset, "customer": customer}))
            entries.append((f"withdrawal.{state}", wid, {"state": state}))
            sample.setdefault(state, wid)
            sample.setdefault("customer", customer or "")
        with store.transaction() as s:
            s.execute(insert(Withdrawal), rows)
            audit.append_all(s, now, entries)
    sample["asset"] = "USDC"
    sample["since"] = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now - 86400))
    with store.transaction() as s:
        audit.append(s, now, "por.snapshot", "ab" * 32, {"statement_hash": "cd" * 32, "block": 7, "accounts": n})
    if store.is_postgres:
        # What autovacuum does after a bulk load (it would here within a minute or so): without statistics the
        # planner guesses, and the figures would measure when autovacuum last woke instead of the pages.
        with store.engine.connect() as c:
            c = c.execution_options(isolation_level="AUTOCOMMIT")
            for table in ("withdrawals", "audit_log"):
                c.execute(text(f"VACUUM ANALYZE {table}"))
    return store, clock, sample


def pages(sample: dict[str, str], deep_before: int) -> list[tuple[str, str]]:
    return [
        ("overview", "/"),
        ("withdrawals", "/withdrawals"),
        ("withdrawals, deep page", f"/withdrawals?before={deep_before}"),
        ("withdrawals by state (held)", "/withdrawals?state=held"),
        ("withdrawals by asset", f"/withdrawals?asset={sample['asset']}"),
        ("withdrawals by customer", f"/withdrawals?customer={sample['customer']}"),
        ("withdrawals since yesterday", f"/withdrawals?since={sample['since']}"),
        ("withdrawals by state and asset", f"/withdrawals?state=queued_cold&asset={sample['asset']}"),
        ("one withdrawal", f"/withdrawals/{sample['confirmed']}"),
        ("review queue", "/review"),
        ("batches", "/batches"),
        ("policy", "/policy"),
        ("policy diff 0..1", "/policy?a=0&b=1"),
        ("audit log", "/audit"),
        ("audit by subject", f"/audit?subject={sample['confirmed']}"),
        ("proof of reserves", "/reserves"),
    ]


def timed(get: Callable[[], httpx.Response]) -> float:
    started = time.perf_counter()
    r = get()
    elapsed = time.perf_counter() - started
    if r.status_code != 200:
        raise RuntimeError(f"{r.request.url}: {r.status_code} {r.text[:300]}")
    return elapsed * 1000


def measure(url: str, n: int) -> tuple[dict[str, tuple[float, float]], float]:
    """Per page (median ms, worst ms), and the audit verification's ms."""
    started = time.monotonic()
    store, clock, sample = fill(url, n)
    filled = time.monotonic() - started
    try:
        with running_console(store, clock) as console, httpx.Client(base_url=console.url, timeout=60) as c:
            assert sign_in(c, issue_token(store, "olga", clock.now())).status_code == 303
            out = {}
            for name, path in pages(sample, deep_before=n // 2):
                timed(lambda p=path: c.get(p))  # warm-up: the policy cache, the connection
                runs = [timed(lambda p=path: c.get(p)) for _ in range(REPEAT)]
                out[name] = (statistics.median(runs), max(runs))
            verify = timed(lambda: c.get("/audit/verify"))
    finally:
        store.dispose()
    print(f"  ({n} withdrawals, {2 * n} audit entries, filled in {filled:.0f} s)")
    return out, verify


def report(kind: str, url_for: Callable[[], Any]) -> bool:
    with url_for() as url:
        base, base_verify = measure(url, BASELINE)
    with url_for() as url:
        big, big_verify = measure(url, N)
    print(f"{kind}: {'page':<32} {'median ms':>10} {'worst ms':>9} {'1k median':>10} {'ratio':>6}")
    ok = True
    for name, (median, worst) in big.items():
        b = base[name][0]
        # The verdict is on the median: a single worst run over the target on a machine shared with other work
        # is flagged, not failed (the same page's other runs say whether it was the page or the machine).
        flag = "  OVER" if median > TARGET_MS else "  (one slow run)" if worst > TARGET_MS else ""
        ok = ok and median <= TARGET_MS
        print(f"{kind}: {name:<32} {median:>10.1f} {worst:>9.1f} {b:>10.1f} {median / b:>6.2f}{flag}")
    print(
        f"{kind}: audit chain verification (a button): {big_verify:.0f} ms at {N}, {base_verify:.0f} ms at {BASELINE}"
    )
    return ok


class _Sqlite:
    def __enter__(self) -> str:
        self.tmp = tempfile.TemporaryDirectory()
        return f"sqlite:///{self.tmp.name}/bench.db"

    def __exit__(self, *exc: object) -> None:
        self.tmp.cleanup()


class _Postgres:
    def __enter__(self) -> str:
        self.name, url = make_postgres_db()
        return url

    def __exit__(self, *exc: object) -> None:
        drop_postgres_db(self.name)


def run() -> None:
    print(f"console benchmark: every page, {REPEAT} renders each, {N} withdrawals against {BASELINE}")
    ok = report("sqlite", _Sqlite)
    if os.environ.get("BENCH_CONSOLE_POSTGRES", "1") == "0":
        print("postgres   skipped: BENCH_CONSOLE_POSTGRES=0")
    elif postgres_available():
        ok = report("postgres", _Postgres) and ok
    else:
        print("postgres   skipped: no server at 127.0.0.1:5432")
    print(f"target: no page over {TARGET_MS} ms (median of {REPEAT}): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    run()
