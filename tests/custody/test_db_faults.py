"""Database faults: PostgreSQL connections cut mid-transaction under intake load. Every request either fails
cleanly (503, nothing written) or succeeds; retried with its Idempotency-Key it yields exactly one withdrawal,
whole, with its audit entries, and the audit chain verifies. And the server's own timeouts (lock, statement,
idle in transaction) end work the same clean way. Outages of whole processes and of the server are in
tests/integration/test_db_outages.py."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from custody.api.client import CustodyClient
from custody.config import load_settings, render_config
from custody.errors import ConfigError
from custody.intake.signatures import sign_request
from custody.ledger import audit
from custody.store.db import Store, Timeouts, unavailable
from custody.store.models import AuditEntry, AuditHead, Withdrawal
from tests.conftest import OMNIBUS, PG_HOST, add_client, running_server, seed_policy


def kill_connections(dbname: str, stop: threading.Event, kills: list[int]) -> None:
    with psycopg.connect(host=PG_HOST, user="postgres", dbname="postgres", autocommit=True) as conn:
        while not stop.wait(0.1):  # every 100 ms, one connection that is in the middle of something
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM (SELECT pid FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid() AND state <> 'idle' ORDER BY random() LIMIT 1) AS one",
                (dbname,),
            ).fetchone()
            kills.append(row[0] if row else 0)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_connections_cut_mid_transaction_leave_nothing_half_written(server, db_url):
    ck = add_client(server.store)
    dbname = db_url.rsplit("/", 1)[1]
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def one(key: str) -> None:
        body = b'{"asset":"ETH","amount":"1","destination":"%s"}' % OMNIBUS.encode()
        for _ in range(200):
            headers = sign_request(ck.key, ck.name, int(time.time()), "POST", "/v1/withdrawals", body, key)
            try:
                status = httpx.post(
                    server.url + "/v1/withdrawals", content=body, headers=headers, timeout=30
                ).status_code
            except httpx.TransportError:
                status = 0
            with lock:
                statuses[status] += 1
            if status in (200, 201):
                return
            time.sleep(0.02)
        raise AssertionError(f"{key} never succeeded")

    keys = [uuid.uuid4().hex for _ in range(150)]
    stop, kills = threading.Event(), []
    killer = threading.Thread(target=kill_connections, args=(dbname, stop, kills))
    killer.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, keys))
    finally:
        stop.set()
        killer.join()

    print(f"\nconnections cut: {sum(kills)}; answers: {dict(statuses)}")
    assert sum(kills) > 0 and statuses[503] > 0, (sum(kills), statuses)  # the faults really happened
    assert set(statuses) <= {0, 200, 201, 503}, statuses  # never a 500: a cut connection is a clean 503
    with server.store.read() as s:
        per_key = Counter(s.execute(select(Withdrawal.idempotency_key)).scalars())
        assert per_key == Counter(keys)  # every request made exactly one withdrawal
        entries = Counter(
            s.execute(select(AuditEntry.subject).where(AuditEntry.kind.startswith("withdrawal."))).scalars()
        )
        ids = list(s.execute(select(Withdrawal.id)).scalars())
        assert all(entries[i] == 2 for i in ids)  # received and queued, never one without the other
        assert s.execute(select(func.count()).select_from(Withdrawal)).scalar_one() == len(keys)
        assert audit.verify(s).ok


# -- the server's timeouts (custody.store.db.Timeouts) ------------------------------------------------------
SHORT = Timeouts(idle_in_transaction=1.0, lock=0.5, statement=1.0)


def test_timeouts_come_from_custody_toml(tmp_path):
    config = tmp_path / "custody.toml"
    text = render_config(tmp_path, "postgresql+psycopg://custody@db/custody")
    config.write_text(text)
    assert load_settings(config).database_timeouts == Timeouts(5.0, 5.0, 30.0, 5.0)
    config.write_text(text.replace("lock_timeout_seconds = 5", "lock_timeout_seconds = 2.5"))
    assert load_settings(config).database_timeouts.lock == 2.5
    config.write_text(text.replace("lock_timeout_seconds = 5", 'lock_timeout_seconds = "5s"'))
    with pytest.raises(ConfigError, match="lock_timeout_seconds"):
        load_settings(config)
    assert Timeouts(idle_in_transaction=0, lock=0.25).options() == (
        "-c idle_in_transaction_session_timeout=0 -c lock_timeout=250 -c statement_timeout=30000"
    )


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_every_session_carries_the_timeouts_and_the_servers_verdicts_are_retriable(db_url):
    store = Store(db_url, timeouts=SHORT)
    holder = Store(db_url, timeouts=Timeouts(0, 0, 0))  # like a process with no timeouts at all
    try:
        store.migrate()
        with store.read() as s:
            shown = [
                s.execute(text(f"SHOW {name}")).scalar_one()
                for name in ("idle_in_transaction_session_timeout", "lock_timeout", "statement_timeout")
            ]
        assert shown == ["1s", "500ms", "1s"]

        with pytest.raises(DBAPIError) as caught, store.transaction() as s:  # a runaway statement
            s.execute(text("SELECT pg_sleep(3)"))
        assert caught.value.orig.sqlstate == "57014" and unavailable(caught.value)  # query_canceled

        with holder.transaction() as h:  # another session holds the audit head
            h.execute(select(AuditHead).with_for_update()).scalar_one()
            started = time.monotonic()
            with pytest.raises(DBAPIError) as caught, store.transaction() as s:
                audit.append(s, 0, "test.blocked", "x", {})
            assert time.monotonic() - started < 2
        assert caught.value.orig.sqlstate == "55P03" and unavailable(caught.value)  # lock_not_available

        with pytest.raises(DBAPIError) as caught, store.transaction() as s:  # a process stalled in its transaction
            audit.append(s, 0, "test.stalled", "x", {})
            time.sleep(2)
        assert caught.value.orig.sqlstate == "25P03" and unavailable(caught.value)  # idle_in_transaction_...

        with holder.transaction() as h:  # the stalled session's lock is gone and nothing of it was written
            audit.append(h, 0, "test.after", "x", {})
        with store.read() as s:
            kinds = list(s.execute(select(AuditEntry.kind).where(AuditEntry.kind.startswith("test."))).scalars())
            assert kinds == ["test.after"] and audit.verify(s).ok
    finally:
        store.dispose()
        holder.dispose()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_intake_behind_a_held_lock_answers_503_then_the_client_gets_through(db_url, tmp_path):
    store = Store(db_url, timeouts=SHORT)
    holder = Store(db_url, timeouts=Timeouts(0, 0, 0))
    try:
        store.migrate()
        seed_policy(store, int(time.time()))
        ck = add_client(store)
        with running_server(store, tmp_path) as srv:
            body = b'{"asset":"ETH","amount":"1","destination":"%s"}' % OMNIBUS.encode()
            released = threading.Event()

            def hold(seconds: float) -> None:
                with holder.transaction() as h:
                    h.execute(select(AuditHead).with_for_update()).scalar_one()
                    released.clear()
                    time.sleep(seconds)
                released.set()

            blocker = threading.Thread(target=hold, args=(1.5,))
            blocker.start()
            time.sleep(0.2)
            headers = sign_request(ck.key, ck.name, int(time.time()), "POST", "/v1/withdrawals", body, "k-1")
            answer = httpx.post(srv.url + "/v1/withdrawals", content=body, headers=headers, timeout=10)
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
            assert answer.json()["code"] == "database_unavailable"
            blocker.join()

            blocker = threading.Thread(target=hold, args=(3.0,))
            blocker.start()
            time.sleep(0.2)
            started = time.monotonic()
            with CustodyClient(srv.url, ck.name, ck.key) as c:  # the default budget rides it out
                w = c.create_withdrawal("ETH", "1", OMNIBUS, idempotency_key="k-1")
            waited = time.monotonic() - started
            blocker.join()
            print(f"\nintake behind a 3 s lock: answered after {waited:.1f} s")
            assert w["state"] == "queued_cold" and released.is_set()
        with store.read() as s:
            assert s.execute(select(func.count()).select_from(Withdrawal)).scalar_one() == 1
            assert audit.verify(s).ok
    finally:
        store.dispose()
        holder.dispose()


def test_a_wrong_schema_on_sqlite_is_a_bug_not_an_outage(tmp_path):
    """SQLite raises OperationalError for a missing table as for a busy database: only the latter is retried."""
    import sqlite3

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    from custody.store.db import unavailable

    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn, pytest.raises(OperationalError) as info:
        conn.execute(text("SELECT * FROM no_such_table"))
    assert not unavailable(info.value)
    busy = OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))
    assert unavailable(busy)
    engine.dispose()
