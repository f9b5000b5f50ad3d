"""``RunReads``: the base of ``RunStore``: its connections (the engine, the hot path's, the
terminal writer) and every read of run records."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import socket
import time
from collections.abc import Collection, Sequence
from typing import Any, Self

import sqlalchemy as sa

from jobsys.base import errors
from jobsys.store import (
    database,
    events,
    hotsql,
    migrations,
    run_states,
    schema,
    search,
    semantic,
    terminal,
)
from jobsys.store.pauses import is_parked
from jobsys.store.records import LogLine, RunFilter, RunRecord, from_columns, record
from jobsys.store.run_states import RunState

T = schema.runs
log = logging.getLogger("jobsys.store")


class RunReads:
    """Opens and closes a database's run store, and reads its run records. One instance per
    process, shared by threads."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.worker_name = socket.gethostname()
        self._hot = hotsql.HotPath(engine)
        self._end = terminal.TerminalWriter(engine, self._hot)
        self._has_tag = _has_tag(engine.dialect.name)

    @classmethod
    def open(cls, url: str, wait: float = 0.0) -> Self:
        """The store at ``url``, migrated. ``wait``: seconds to keep trying while the
        database cannot be reached (a long-running process starting beside a database that is
        starting too, or cut off for a moment), with a warning each time; then it raises."""
        engine = database.make_engine(url)
        deadline, delay = time.monotonic() + wait, 0.5
        while True:
            try:
                migrations.migrate(engine)
                return cls(engine)
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                if time.monotonic() + delay > deadline:
                    engine.dispose()
                    raise
                log.warning(
                    "jobsys: the run store cannot be reached (%s); trying again in %.1f s",
                    str(exc).splitlines()[0],
                    delay,
                )
                time.sleep(delay)  # (backoff between attempts to reach the database)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        """Close every connection this store holds."""
        self._hot.close()
        self.engine.dispose()

    def after_fork(self) -> None:
        """Drop connections inherited from the parent process (call in a forked child)."""
        self.engine.dispose(close=False)
        self._hot.after_fork()

    def checkpoint(self) -> None:
        """Copy SQLite's write-ahead log into the database without blocking anyone (PASSIVE);
        called off the hot path. Nothing to do on PostgreSQL."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def broken(self, exc: BaseException) -> bool:
        """``exc`` says the database could not be reached or is busy (try again later),
        rather than that it refused a statement's values."""
        return isinstance(exc, self._hot.unreachable)

    def find_key(self, tenant: str, job: str, key: str) -> RunRecord | None:
        """The run of ``job`` in ``tenant`` that holds idempotency key ``key`` (keys are
        unique per tenant and job)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(T).where(T.c.tenant == tenant, T.c.job == job, T.c.idempotency_key == key)
            ).first()
        return record(row) if row else None

    def get(self, run_id: str, tenant: str | None = None) -> RunRecord:
        """The run's record (``tenant``'s run only, if given), read on the hot path's
        connections (``hotsql.HotPath.run``)."""
        data = self._hot.run(run_id, tenant)
        if data is None:
            raise errors.RunNotFound(run_id)
        return from_columns(data)

    def select(self, f: RunFilter) -> list[RunRecord]:
        query = sa.select(T).order_by(T.c.created_at.desc(), T.c.id.desc()).limit(f.limit)
        query = self._filtered(query, f)
        with self.engine.connect() as conn:
            return [record(r) for r in conn.execute(query)]

    def nearest(
        self, f: RunFilter, vector: Sequence[float], min_score: float
    ) -> list[tuple[RunRecord, float]]:
        """Semantic search: the runs ``f`` keeps (its ``text`` aside) whose error or logs are
        most like ``vector``, best first, with their scores (``semantic.py``)."""
        where = dataclasses.replace(f, text=None)

        def kept(query: Any) -> Any:
            query = self._filtered(query, where)
            if f.text_readable is not None:
                query = query.where(T.c.job.in_(f.text_readable))
            return query

        found = semantic.SemanticStore(self.engine).nearest_runs(kept, vector, min_score, f.limit)
        if not found:
            return []
        with self.engine.connect() as conn:
            rows = {
                str(r.id): record(r)
                for r in conn.execute(sa.select(T).where(T.c.id.in_([i for i, _ in found])))
            }
        return [(rows[i], score) for i, score in found if i in rows]

    def _filtered(self, query: Any, f: RunFilter) -> Any:
        """``query`` with the conditions of ``f`` (all but its limit)."""
        for column, value in (
            (T.c.job, f.job),
            (T.c.state, f.state.value if f.state else None),
            (T.c.principal_id, f.principal_id),
            (T.c.tenant, f.tenant),
            (T.c.schedule_id, f.schedule_id),
            (T.c.workflow_id, f.workflow_id),
            (T.c.parent_id, f.parent_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if f.since is not None:
            query = query.where(T.c.created_at >= f.since)
        if f.until is not None:
            query = query.where(T.c.created_at < f.until)
        query = query.where(*_flags(f))
        if f.tag is not None:  # in SQL, so that the limit counts tagged runs only
            query = query.where(self._has_tag).params(tag_json=json.dumps([f.tag]))
        if f.text is not None:
            query = query.where(self._text_clause(f, f.text))
        if f.jobs is not None:
            query = query.where(T.c.job.in_(f.jobs))
        return query

    def _text_clause(self, f: RunFilter, text: str) -> Any:
        window = max(search.SEARCH_WINDOW, 20 * f.limit)
        matched = search.matching_runs(self.engine.dialect.name, text, window)
        if matched is None:
            return sa.false()
        clause: Any = T.c.id.in_(matched)
        if f.text_readable is not None:
            clause = sa.and_(clause, T.c.job.in_(f.text_readable))
        return sa.or_(clause, T.c.job.in_(f.text_jobs)) if f.text_jobs else clause

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(T)).scalar_one())

    def logs(self, run_id: str, after_id: int = 0) -> list[LogLine]:
        L = schema.run_logs
        query = sa.select(L).where(L.c.run_id == run_id, L.c.id > after_id).order_by(L.c.id)
        with self.engine.connect() as conn:
            return [LogLine(**r._asdict()) for r in conn.execute(query)]

    def events(self, run_id: str) -> list[events.RunEvent]:
        """The run's history, oldest first (``events.py``)."""
        with self.engine.connect() as conn:
            return events.read(conn, run_id)

    def outputs(self, run_ids: Sequence[str]) -> dict[str, Any]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(T.c.id, T.c.output).where(T.c.id.in_(run_ids)))
            return {str(i): output for i, output in rows}

    def running_on(self, workers: Sequence[str]) -> list[RunRecord]:
        """The running runs held by the named workers (node names, ``worker1-1@host``)."""
        if not workers:
            return []
        query = (
            sa.select(T)
            .where(T.c.state == RunState.RUNNING.value, T.c.worker.in_(list(workers)))
            .order_by(T.c.started_at)
        )
        with self.engine.connect() as conn:
            return [record(r) for r in conn.execute(query)]

    def stale_waiting(
        self,
        now: dt.datetime,
        older_than: float,
        limit: int = 500,
        skip_jobs: Collection[str] = (),
    ) -> list[RunRecord]:
        """Waiting runs whose message may be lost: never published, or published long ago;
        none of ``skip_jobs``."""
        cutoff = now - dt.timedelta(seconds=older_than)
        query = (
            sa.select(T)
            .where(
                T.c.state.in_(run_states.values(run_states.WAITING)),
                sa.or_(T.c.published_at.is_(None), T.c.published_at < cutoff),
                # (a new run is being published by its producer, unless that said it could
                # not: ``mark_unqueued``)
                sa.or_(T.c.created_at < cutoff, T.c.waiting["reason"].as_string() == "not_queued"),
                sa.or_(T.c.next_attempt_at.is_(None), T.c.next_attempt_at < cutoff),
                T.c.job.not_in(sorted(skip_jobs)),
                T.c.gate.is_(None),  # (waiting for a slot, with no message: ``limits.py``)
                # (a paused run has no message: resuming publishes it, ``pauses.py``)
                # (nor has a run waiting for an outside actor to take it: ``actors.py``)
                sa.func.coalesce(T.c.waiting["reason"].as_string(), "").not_in(("paused", "actor")),
            )
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [record(r) for r in conn.execute(query)]


def _has_tag(dialect: str) -> sa.TextClause:
    """The dialect's test for "the run's tags contain :tag_json's one tag"."""
    return sa.text(
        "jobsys_runs.tags @> CAST(:tag_json AS jsonb)"
        if dialect == "postgresql"
        else "EXISTS (SELECT 1 FROM json_each(jobsys_runs.tags) "
        "WHERE json_each.value = json_extract(:tag_json, '$[0]'))"
    )


def _flags(f: RunFilter) -> list[Any]:
    """The conditions of a filter's yes/no choices (``None``: either): runs that used all
    their attempts, runs a pause holds, archived runs."""
    found = []
    for wanted, condition in (
        (f.exhausted, T.c.attempts >= T.c.max_attempts),
        (
            f.paused,
            sa.and_(T.c.state.in_(run_states.values(run_states.WAITING)), is_parked()),
        ),
        (f.archived, T.c.archived_at.is_not(None)),
    ):
        if wanted is not None:
            found.append(condition if wanted else sa.not_(condition))
    return found
