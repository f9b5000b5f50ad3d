"""Database engines for the run store: PostgreSQL, and SQLite tuned for many processes.

SQLite runs in WAL mode with ``synchronous=NORMAL``; its write lock is waited for in short
steps (``_SQLiteCursor``) instead of SQLite's own coarse busy handler, and the WAL is
checkpointed by the workers' background thread rather than on the hot path.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

import sqlalchemy as sa


def make_engine(url: str) -> sa.Engine:
    """An engine for the store URL; SQLite gets WAL and a fine-grained wait for its write
    lock, for many processes."""
    if url.startswith(("postgres://", "postgresql://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 0, "factory": _SQLite})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


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
