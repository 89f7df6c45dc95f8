"""The engine, the unit of work, and migrations.

SQLite: WAL, a busy timeout, and every transaction opened with BEGIN IMMEDIATE, so two writers queue for
the lock instead of failing when a reader upgrades. PostgreSQL: READ COMMITTED with explicit row locks, and
server-side timeouts on every connection (``Timeouts``) so a stalled process cannot hold locks for long.
Services own transactions (``Store.transaction``); repositories never commit.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class Timeouts:
    """What PostgreSQL enforces on each of the daemon's connections, in seconds (0 turns one off).

    Every service transaction is short: a few statements and at most one quick call to the node, never a wait
    for a person. So a session idle inside a transaction for 5 s is a stalled process (paused, swapping, or
    stuck on a node that does not answer) that may hold the audit head's or a wallet's row lock, which every
    replica's intake needs: the server ends that session (it rolls back whole, and the work is done again)
    instead of letting it stop intake everywhere. A
    statement waits at most 5 s for a lock, then fails with a clean 503 the client retries, so a long lock
    wait never ties up a request and its connection. 30 s per statement is far above any query the daemon
    makes (the largest, audit verification, reads in pages) yet ends a runaway one. Connecting gives up after
    5 s, so an unreachable host fails fast instead of after the kernel's TCP timeouts. Migrations run without
    the statement timeout (an index on a large table may take longer). SQLite has none of these: one process
    holds its write lock, and its busy timeout (30 s) bounds the wait for it.
    """

    idle_in_transaction: float = 5.0
    lock: float = 5.0
    statement: float = 30.0
    connect: float = 5.0

    def options(self) -> str:
        """libpq's ``options``: settings the server applies when the session starts (no extra round trip)."""
        values = {
            "idle_in_transaction_session_timeout": self.idle_in_transaction,
            "lock_timeout": self.lock,
            "statement_timeout": self.statement,
        }
        return " ".join(f"-c {name}={round(seconds * 1000)}" for name, seconds in values.items())


def unavailable(exc: BaseException) -> bool:
    """True if ``exc`` says the database could not do the work now, not that the work was wrong: the
    connection failed or was ended (the server restarted, or ended a session idle in its transaction), a
    lock or statement timeout fired, a deadlock was broken, the disk is full, SQLite is busy. The transaction
    rolled back whole, so the same work can simply be tried again."""
    if isinstance(exc, OperationalError) and any(m in str(exc.orig) for m in _SQLITE_MISTAKES):
        return False  # SQLite reports a wrong schema or statement as an OperationalError too: a bug, not an outage
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


_SQLITE_MISTAKES = ("no such table", "no such column", "has no column named", "syntax error")


def make_engine(url: str, *, immediate: bool = True, timeouts: Timeouts | None = None) -> Engine:
    """``immediate`` (SQLite): open transactions with BEGIN IMMEDIATE; off for read-only sessions.
    ``timeouts`` (PostgreSQL): the session settings above, ``Timeouts()`` if not given."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8)

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN itself
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    timeouts = timeouts or Timeouts()
    connect_args: dict[str, Any] = {}
    if make_url(url).get_backend_name() == "postgresql":
        given = make_url(url).query.get("options", "")  # an operator's own options in the URL come last and win
        connect_args["options"] = " ".join([timeouts.options(), *([given] if isinstance(given, str) else given)])
        if timeouts.connect:
            connect_args["connect_timeout"] = max(1, round(timeouts.connect))
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, connect_args=connect_args)


class Store:
    def __init__(self, url: str, *, timeouts: Timeouts | None = None) -> None:
        self.url = url
        self.engine = make_engine(url, timeouts=timeouts)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite: reads need no write lock and no fsync, so they get an engine of their own.
        self._read_engine = make_engine(url, immediate=False) if url.startswith("sqlite") else self.engine
        self._readers = sessionmaker(self._read_engine, expire_on_commit=False)
        # SQLite allows one writer. Threads of this process queue here instead of in SQLite's busy handler,
        # which sleeps with back-off and turned 16 concurrent writers into multi-second waits.
        self._write_lock: AbstractContextManager[Any] = threading.Lock() if url.startswith("sqlite") else nullcontext()

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commits if the block finishes, rolls back if it raises."""
        with self._write_lock, self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A unit of work that only reads (on SQLite it takes no write lock and its commit writes nothing)."""
        with self._readers() as session, session.begin():
            yield session

    def migrate(self) -> None:
        # imported here: alembic costs every command a second of start-up, and only `custody init` migrates
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            if self.is_postgres:
                conn.exec_driver_sql("SET LOCAL statement_timeout = 0")  # see Timeouts
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
        self._read_engine.dispose()


def advisory_lock(session: Session, name: str) -> None:
    """Serialise a critical section across replicas for the rest of the transaction (PostgreSQL only;
    on SQLite BEGIN IMMEDIATE already serialises every writer)."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
