"""Database engines for the run store: PostgreSQL, and SQLite tuned for many processes.

SQLite runs in WAL mode with ``synchronous=NORMAL``; its write lock is waited for in short
steps (``_SQLiteCursor``) instead of SQLite's own coarse busy handler, and the WAL is
checkpointed by the workers' background thread rather than on the hot path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa


@dataclasses.dataclass(frozen=True)
class Limits:
    """How long a PostgreSQL session may wait, and how many a process opens. Nothing of
    jobsys waits unboundedly on a lock or on a peer that vanished:

    - ``lock_timeout``: a statement waiting this long for a row lock fails (and is retried
      by its caller: a beat's next tick, a worker's reaper pass, a producer's error);
    - ``idle_in_transaction``: the server ends a session left inside a transaction this long
      (a process cut off mid-transaction), releasing its locks; jobsys's transactions are a
      few statements with no waiting between them;
    - ``statement``: a statement running this long is cancelled (0: no limit);
    - ``keepalive``: TCP keepalives after this much silence, and ``tcp_user_timeout``: data
      unacknowledged this long drops the connection, so a cut-off peer is noticed in seconds
      rather than after the kernel's two hours;
    - ``pool_size`` + ``max_overflow``: the connections of the shared pool; the per-job
      statements (``hotsql``) keep at most ``pool_size`` more.
    """

    lock_timeout: float = 5.0
    idle_in_transaction: float = 10.0
    statement: float = 300.0
    keepalive: float = 10.0
    tcp_user_timeout: float = 20.0
    connect_timeout: float = 10.0
    pool_size: int = 5
    max_overflow: int = 5

    def connect_args(self) -> dict[str, Any]:
        """libpq connection parameters (psycopg passes them through)."""
        ms = lambda seconds: int(seconds * 1000)  # noqa: E731
        options = (
            f"-c lock_timeout={ms(self.lock_timeout)} "
            f"-c idle_in_transaction_session_timeout={ms(self.idle_in_transaction)} "
            f"-c statement_timeout={ms(self.statement)}"
        )
        keepalive = max(1, int(self.keepalive))
        return {
            "options": options,
            "keepalives": 1,
            "keepalives_idle": keepalive,
            "keepalives_interval": max(1, keepalive // 3),
            "keepalives_count": 3,
            "tcp_user_timeout": ms(self.tcp_user_timeout),
            "connect_timeout": max(2, int(self.connect_timeout)),
        }


def is_postgresql(url: str) -> bool:
    """Whether the store URL names a PostgreSQL database (any driver, or none)."""
    return url.startswith(("postgres://", "postgresql"))


def make_engine(url: str, limits: Limits | None = None) -> sa.Engine:
    """An engine for the store URL; SQLite gets WAL and a fine-grained wait for its write
    lock, for many processes; PostgreSQL gets ``limits`` (every wait bounded)."""
    if url.startswith(("postgres://", "postgresql://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 0, "factory": _SQLite})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    limits = limits or Limits()
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=limits.pool_size,
        max_overflow=limits.max_overflow,
        pool_timeout=30,
        connect_args=limits.connect_args(),
    )


WAL_AUTOCHECKPOINT_PAGES = 10_000
SQLITE_LOCK_WAIT = 30.0
"""Seconds a statement waits for another process's write to finish before it fails."""


class _SQLiteCursor(sqlite3.Cursor):
    """Waits for SQLite's write lock in steps of 50 microseconds to 2 ms. SQLite's own busy
    handler sleeps 1, 2, 5, 10 ms and more, which several worker processes writing a few
    hundred times a second each hit constantly. Retrying is safe: a statement that finds the
    database locked has changed nothing."""

    def execute(self, sql: str, parameters: Any = (), /) -> _SQLiteCursor:
        _waiting(lambda: super(_SQLiteCursor, self).execute(sql, parameters))
        return self

    def executemany(self, sql: str, seq: Any, /) -> _SQLiteCursor:
        rows = list(seq)
        _waiting(lambda: super(_SQLiteCursor, self).executemany(sql, rows))
        return self


class _SQLite(sqlite3.Connection):
    def cursor(self, factory: Any = _SQLiteCursor) -> Any:
        return super().cursor(factory)

    def commit(self) -> None:
        _waiting(super().commit)


def _waiting(call: Any) -> Any:
    delay, deadline = 0.00005, time.monotonic() + SQLITE_LOCK_WAIT
    while True:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            # Only plain SQLITE_BUSY: a stale read snapshot (BUSY_SNAPSHOT) never clears.
            busy = getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_BUSY) == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.002)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    # Workers checkpoint the WAL in their background thread (RunStore.checkpoint); this only
    # bounds the WAL when none runs, so that commits on the hot path rarely do it themselves.
    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cur.close()


@contextlib.contextmanager
def locked(engine: sa.Engine, key: int) -> Iterator[sa.Connection]:
    """A connection in a transaction that holds a lock of the whole database, ``key`` on
    PostgreSQL (an advisory lock of the transaction) or SQLite's write lock, until the block
    ends: committed then, rolled back if it raises. Two processes in such a block with the same
    key (any key, on SQLite) run one after the other."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            yield conn
        return
    # pysqlite begins its own transactions only before DML, and as DEFERRED: take the write
    # lock first (waited for by ``_SQLiteCursor``), so that what the block reads and what it
    # writes are one transaction.
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
        conn.exec_driver_sql("COMMIT")


def insert(conn: sa.Connection, table: sa.Table) -> Any:
    """An ``INSERT`` into ``table`` of ``conn``'s database, with its ``on_conflict_do_nothing``
    (PostgreSQL's or SQLite's; the dialect is imported when first used, so a process on
    SQLite never loads PostgreSQL's)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)
