"""The engine, the unit of work, and migrations.

SQLite: WAL, a busy timeout, and every transaction opened with BEGIN IMMEDIATE, so two writers queue for
the lock instead of failing when a reader upgrades. PostgreSQL: READ COMMITTED with explicit row locks.
Services own transactions (``Store.transaction``); repositories never commit.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, *, immediate: bool = True) -> Engine:
    """``immediate`` (SQLite): open transactions with BEGIN IMMEDIATE; off for read-only sessions."""
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
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
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
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
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
