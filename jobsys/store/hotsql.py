"""The statements every job runs (insert, claim, complete), on the DBAPI connection itself.

SQLAlchemy's execution layer (execution context, result object, type processing) cost as much
as the database's own work for these two statements: measured on SQLite, 229 us per job
through SQLAlchemy against 105 us for the same SQL on the driver. They are written here once
per dialect with named parameters, their values converted as the column types would convert
them, and run on a connection each thread keeps for them (taken from the engine, outside its
pool; checking one out and in per statement cost another 20 us). ``complete``'s statement is
written by ``terminal.py``, the writer of every terminal state, and run here (``write``).
Every other statement of the store goes through SQLAlchemy.

On PostgreSQL these connections are in autocommit: each statement is one transaction and one
round trip, where the driver's implicit ``BEGIN`` and the ``COMMIT`` made three (measured on
loopback: 313 us for an autocommitted UPDATE against 595 us for BEGIN, UPDATE, COMMIT). Each
statement here is a transaction on its own; several rows inserted together are still one
(``_transaction``). The insert and the end wait for the commit to be durable (a completion is
durable before its result is published); on PostgreSQL the claim does not (``_NO_FLUSH_WAIT``:
losing a claim to a crash of the server only makes the run run again).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from jobsys.store import pauses, run_states, schema

_WAITING = run_states.sql_list(run_states.WAITING)
"""The states a run is claimed from (``run_states.WAITING``, which a test checks against the
state machine's ``sources(RUNNING)``)."""

_CLAIM_UPDATE = (
    "UPDATE jobsys_runs SET state = 'running', attempts = attempts + 1, "
    "started_at = COALESCE(started_at, :now), lease_expires_at = :lease_at, "
    "deadline_at = :deadline, worker = :worker, worker_pid = :pid, next_attempt_at = NULL, "
    "waiting = NULL "
    f"WHERE id = :rid AND dispatch = :dispatch AND state IN {_WAITING} "
    "AND cancel_requested = false "
    f"AND {pauses.NOT_PAUSED} "  # a paused run is parked instead (``pauses.py``)
)
_RETURNING = (
    "RETURNING attempts, meta, schedule_id, fire_at, trigger, input, principal, sealed, "
    "workflow_id, timeout, max_attempts, has_dependents, priority"
)
_NO_FLUSH_WAIT = "AND set_config('synchronous_commit', 'off', true) = 'off' "
"""On PostgreSQL, the claim's transaction does not wait for its WAL to reach the disk
(``synchronous_commit`` off for this one statement's transaction, set in its own WHERE so that
it stays one round trip). Nothing but a crash of the PostgreSQL server (or of its machine, or a
failover to a standby) within the WAL writer's delay (``wal_writer_delay``, 200 ms by default)
can lose such a claim, and what it loses is safe to lose: the run is back in the state it was
claimed from, its message was taken, so the reconciler publishes it again once the message
counts as lost (``JOBSYS_RECONCILE_SECONDS``), and it runs again: at least once, as every run.
The attempt whose claim was lost records no end while the run waits (every end is guarded on a
running attempt); if it is still running when the run runs again, under the same attempt number,
the first of the two to end records its end and the other's is refused. Every other statement
waits for its flush: the insert (a submit returns a run that exists) and the end (a completion
is durable before its result is published); the end's flush also covers the claim before it, as
the WAL is written in order (``tests/integration/test_database_crash.py`` crashes a server to
show all of it)."""
_CLAIM = _CLAIM_UPDATE + _RETURNING
_CLAIM_NO_WAIT = _CLAIM_UPDATE + _NO_FLUSH_WAIT + _RETURNING
_CLAIMED = (
    "SELECT attempts, meta, schedule_id, fire_at, trigger, input, principal, sealed, "
    "workflow_id, timeout, max_attempts, has_dependents, priority FROM jobsys_runs "
    "WHERE id = :rid AND dispatch = :dispatch AND state = 'running' AND worker = :worker "
    "AND worker_pid = :pid AND lease_expires_at = :lease_at"
)
"""This claim's own row: after a connection lost while waiting for the claim's answer (the
claim may have been made), the lease time it wrote tells it apart from anyone else's."""
DIALECTS = ("sqlite", "postgresql")
POOL_WAIT = 30.0
"""Seconds a thread waits for one of the store's per-job connections before failing."""


class HotPath:
    """Insert, claim and the statements written elsewhere for the hot path (``write``), for
    one engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: sa.Engine, size: int | None = None) -> None:
        """``size``: connections at most (default: the engine's pool size, so a process
        holds at most twice that: its pool's and these)."""
        if size is None:
            size = getattr(engine.pool, "size", lambda: 5)()
        self.engine = engine
        self.dialect = engine.dialect.name
        self.size = max(1, size)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._open: list[Any] = []
        self._free: list[Any] = []
        self._slots = threading.BoundedSemaphore(self.size)
        self._disconnects: tuple[type[BaseException], ...] = ()
        if self.dialect not in DIALECTS:
            raise ValueError(f"no hot path for the {self.dialect!r} dialect")
        columns = list(schema.runs.c)
        self._readers = [(c.name, reader(self.dialect, c)) for c in columns]
        get = f"SELECT {', '.join(c.name for c in columns)} FROM jobsys_runs WHERE id = :rid"
        self._get = self.statement(get)
        self._get_in_tenant = self.statement(get + " AND tenant = :tenant")
        if self.dialect == "postgresql":
            import psycopg
            from psycopg.types.json import Jsonb

            self._disconnects = (psycopg.OperationalError, psycopg.InterfaceError)
            self.unreachable: tuple[type[BaseException], ...] = (
                *self._disconnects,
                sa.exc.OperationalError,
                sa.exc.InterfaceError,
            )
            self.integrity_errors: tuple[type[Exception], ...] = (psycopg.IntegrityError,)

            self._json: Any = Jsonb
            self._claim = _pyformat(_CLAIM_NO_WAIT)
            self._claimed = _pyformat(_CLAIMED)
            self._autocommit = True
        else:
            self._json = _sqlite_json
            self.integrity_errors = (sqlite3.IntegrityError,)
            self.unreachable = (
                sqlite3.OperationalError,
                sa.exc.OperationalError,
                sa.exc.InterfaceError,
            )
            self._claim = _CLAIM
            self._claimed = _CLAIMED
            self._autocommit = False

    def insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert run rows (all with the same keys) in one statement; raises one of
        ``integrity_errors`` when a unique key is taken."""
        keys = list(rows[0])
        convert = [(k, self._converter(k)) for k in keys]  # an unknown column raises here
        if any(r.keys() != rows[0].keys() for r in rows):
            raise ValueError("run rows inserted together must have the same columns")
        names, values = ", ".join(keys), ", ".join(":" + k for k in keys)
        sql = f"INSERT INTO jobsys_runs ({names}) VALUES ({values})"
        if self.dialect == "postgresql":
            sql = _pyformat(sql)
        params = [
            {k: (c(r[k]) if c and r[k] is not None else r[k]) for k, c in convert} for r in rows
        ]
        self._execute(sql, params, fetch=False, many=True)

    def _converter(self, column: str) -> Any:
        return converter(self.dialect, schema.runs.c[column])

    def claim(
        self,
        run_id: str,
        dispatch: int,
        now: dt.datetime,
        lease_at: dt.datetime,
        deadline: dt.datetime,
        worker: str,
        pid: int,
    ) -> dict[str, Any] | None:
        """The new attempt number, the run's metadata, input and principal, the fire that
        made it (schedule id, fire time, trigger), its limits and priority; ``None`` for a
        stale message."""
        params = {
            "rid": run_id,
            "dispatch": dispatch,
            "now": self.time(now),
            "lease_at": self.time(lease_at),
            "deadline": self.time(deadline),
            "worker": worker,
            "pid": pid,
        }
        row, _, retried = self._execute(self._claim, params, fetch=True)
        if row is None and retried:  # the first try may have claimed it: ours if so
            row, _, _ = self._execute(self._claimed, params, fetch=True)
        if row is None:
            return None
        (attempts, meta, schedule_id, fire_at, trigger, input, principal, sealed, workflow) = row[
            :9
        ]
        timeout, max_attempts, has_dependents, priority = row[9:]
        if isinstance(fire_at, str):  # SQLite: naive UTC text
            fire_at = dt.datetime.fromisoformat(fire_at).replace(tzinfo=dt.UTC)
        return {
            "attempt": int(attempts),
            "meta": dict(_json(meta) or {}),
            "schedule_id": schedule_id,
            "fire_at": fire_at,
            "trigger": trigger,
            "input": _json(input),
            "principal": _json(principal),
            "sealed": sealed,
            "workflow_id": workflow,
            "timeout": float(timeout),
            "max_attempts": int(max_attempts),
            "has_dependents": bool(has_dependents),
            "priority": int(priority),
        }

    def run(self, run_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """One run's row (in ``tenant``, if given) as SQLAlchemy would read it: aware UTC
        datetimes, decoded JSON, booleans; ``None`` if there is none. Every ``wait`` and
        status poll reads a run: on PostgreSQL this is one round trip, where a pooled
        connection took four (the pool's liveness check, ``BEGIN``, the query, ``ROLLBACK``)."""
        if tenant is None:
            row, _, _ = self._execute(self._get, {"rid": run_id}, fetch=True)
        else:
            row, _, _ = self._execute(
                self._get_in_tenant, {"rid": run_id, "tenant": tenant}, fetch=True
            )
        if row is None:
            return None
        return {
            name: (read(value) if read is not None and value is not None else value)
            for (name, read), value in zip(self._readers, row, strict=True)
        }

    def dependents(self, run_id: str) -> list[str]:
        sql = "SELECT run_id FROM jobsys_run_deps WHERE depends_on = :rid"
        if self.dialect == "postgresql":
            sql = _pyformat(sql)
        rows, _, _ = self._execute(sql, {"rid": run_id}, fetch=True, fetch_all=True)
        return [str(r[0]) for r in rows]

    def statement(self, sql: str) -> str:
        """``sql``, written with ``:name`` parameters, as this dialect's driver takes it."""
        return _pyformat(sql) if self.dialect == "postgresql" else sql

    def write(self, sql: str, params: dict[str, Any], confirm: str | None = None) -> int:
        """Run one statement prepared by ``statement`` and commit; the rows it changed.
        Values are bound as they are: convert JSON and times with ``json`` and ``time``.
        ``confirm``: a query (same parameters) that finds the row this statement writes, for
        when a lost connection made it run twice and the second changed nothing because the
        first had: then it counts as one row changed."""
        _, count, retried = self._execute(sql, params, fetch=False)
        if count == 0 and retried and confirm is not None:
            row, _, _ = self._execute(confirm, params, fetch=True)
            return 0 if row is None else 1
        return int(count)

    def json(self, value: Any) -> Any:
        """A JSON value as the driver binds it for a JSON column."""
        return self._json(value)

    def time(self, value: dt.datetime) -> Any:
        """A datetime as the driver binds it for a UTC datetime column."""
        return _pg_time(value) if self.dialect == "postgresql" else _sqlite_time(value)

    def _execute(
        self, sql: str, params: Any, fetch: bool, many: bool = False, fetch_all: bool = False
    ) -> tuple[Any, int, bool]:
        """Run one statement and commit, on a connection of this store's own few; returns
        the row(s) fetched, the rows changed, and whether it was run a second time. A
        connection the server dropped (a restart, an idle timeout) is replaced once and the
        statement run again. Either the first run changed nothing, or its answer (or commit)
        was lost in flight after it took effect: then the guards of every statement here make
        the second run change nothing, and ``claim`` and ``write`` confirm by reading."""
        for last in (False, True):
            conn = self._acquire()
            try:
                cursor = conn.cursor()
                try:
                    if many and len(params) > 1:
                        with self._transaction(conn):
                            cursor.executemany(sql, params)
                    else:
                        cursor.execute(sql, params[0] if many else params)
                    row = (cursor.fetchall() if fetch_all else cursor.fetchone()) if fetch else None
                    count = cursor.rowcount
                finally:
                    cursor.close()
                if not self._autocommit:
                    conn.commit()
            except self._disconnects:
                self._discard(conn)
                if last:
                    raise
                continue
            except BaseException:
                self._discard(conn)  # its state is unknown: never reuse it
                raise
            self._release(conn)
            return row, count, last
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _transaction(self, conn: Any) -> Iterator[None]:
        """Several statements as one transaction (an autocommit connection's own block)."""
        if self._autocommit:
            with conn.dbapi_connection.transaction():
                yield
        else:
            yield  # the driver began one; ``_execute`` commits it

    def _acquire(self) -> Any:
        """A connection of this store's own (taken from the engine, outside its pool), the
        one used last if it is free: a single-threaded worker keeps using one. At most
        ``size`` are open at once, however many threads call (a producer with hundreds of
        threads waits for one rather than open hundreds)."""
        if self._pid != os.getpid():  # a forked child: the parent's are not ours
            self.after_fork()
        if not self._slots.acquire(timeout=POOL_WAIT):
            raise TimeoutError(
                f"no database connection free within {POOL_WAIT:g} s "
                f"({self.size} in use by this process's threads)"
            )
        with self._lock:
            if self._free:
                return self._free.pop()
        try:
            conn = self.engine.raw_connection()
            if self._autocommit:
                conn.rollback()  # (the pool's liveness check may have opened a transaction)
                driver: Any = conn.driver_connection
                driver.autocommit = True
            conn.detach()
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._open.append(conn)
        return conn

    def _release(self, conn: Any) -> None:
        with self._lock:
            self._free.append(conn)
        self._slots.release()

    def _discard(self, conn: Any) -> None:
        with self._lock:
            if conn in self._open:
                self._open.remove(conn)
        _close(conn)
        self._slots.release()

    def after_fork(self) -> None:
        """Forget, without closing, the connections inherited from the parent process."""
        self._pid = os.getpid()
        self._lock, self._open, self._free = threading.Lock(), [], []
        self._slots = threading.BoundedSemaphore(self.size)

    def close(self) -> None:
        """Close every connection (the store is being closed)."""
        with self._lock:
            opened, self._open, self._free = self._open, [], []
        for conn in opened:
            _close(conn)


def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):  # already broken: nothing more to release
        conn.close()  # detached: closes the DBAPI connection itself


def _json(value: Any) -> Any:
    """A JSON column as read: text (or a BLOB) on SQLite, already decoded on PostgreSQL."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _sqlite_json(value: Any) -> str | bytes:
    return schema.sqlite_storable(json.dumps(value))


def _pg_time(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


def _sqlite_time(value: dt.datetime) -> str:
    """Naive UTC text in SQLAlchemy's storage format, so that both paths compare and sort
    alike."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def converter(dialect: str, column: sa.Column[Any]) -> Any:
    """How a value of ``column`` is bound on the driver, as its type would bind it (JSON
    and aware UTC datetimes); ``None``: as it is. ``None`` values are never converted."""
    kind = column.type
    if isinstance(kind, schema.JSON):
        if dialect == "postgresql":
            from psycopg.types.json import Jsonb

            return Jsonb
        return _sqlite_json
    if isinstance(kind, schema.UTCDateTime):
        return _pg_time if dialect == "postgresql" else _sqlite_time
    return None


def reader(dialect: str, column: sa.Column[Any]) -> Any:
    """How a value of ``column`` read on the driver becomes what its type reads (``None``:
    as it is); ``None`` values are never converted."""
    kind = column.type
    if isinstance(kind, schema.JSON):
        return None if dialect == "postgresql" else _json  # (psycopg decodes JSONB)
    if isinstance(kind, schema.UTCDateTime):
        return _pg_time if dialect == "postgresql" else _from_sqlite_time
    if isinstance(kind, sa.Boolean) and dialect == "sqlite":
        return bool
    return None


def _from_sqlite_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)


def _pyformat(sql: str) -> str:
    """``:name`` placeholders to psycopg's ``%(name)s``."""
    return re.sub(r"(?<!:):([a-z_]+)", r"%(\1)s", sql)
