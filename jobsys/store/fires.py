"""The writes of a schedule's fire: the schedule advanced and its run (or workflow run)
inserted, in one transaction. What to fire and how is decided in ``scheduling/firing.py``;
the rows are built by ``rows.py``.

A fire advances its schedule, guarded by the fire it advances from (so of several beats
racing for the same fire one wins), and inserts its run, whose ``fire_key`` (schedule and
fire time) is unique, so one fire never makes two runs.

A burst of due schedules is written a batch at a time: one ``UPDATE`` of all the batch's
schedules per shape of change and one ``INSERT`` of their runs (``bulksql``), instead of two
statements per fire. The guard of each schedule is the fire it was read at, its version and
its last change: a schedule changed since it was read (fired by another beat, paused, edited,
its metadata merged) is not advanced, and makes no run from that read. A batch one of whose
fires already has its run is rolled back and written one schedule at a time, where that
fire is skipped.

On PostgreSQL a fire's transaction never waits on another beat's: it first locks the batch's
schedules with ``SKIP LOCKED`` and leaves out those another transaction holds (they stay due,
and are fired at a later tick), and it tells the server to end it if it sits idle for
``FIRE_IDLE_LIMIT``: a beat cut off from the database in the middle of a fire (between two of
its statements) would otherwise keep those schedules locked until its TCP connection timed out,
and no other beat could fire them meanwhile.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from typing import Any

import sqlalchemy as sa

from jobsys.declare import jobs
from jobsys.store import bulksql, schema
from jobsys.store.schedule_records import ScheduleRecord, ScheduleState

S = schema.schedules
R = schema.runs

FIRE_IDLE_LIMIT = "1500ms"
"""How long a fire's transaction may sit between statements (it has no reason to at all)
before the server ends it and frees its schedules for another beat."""


@dataclasses.dataclass(frozen=True)
class Fired:
    """What a fire made, to publish after the commit: a run of a job, or a workflow run (a
    schedule whose target is a workflow of the catalog)."""

    run: dict[str, Any] | None
    spec: jobs.JobSpec | None
    workflow: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        made = self.run if self.run is not None else self.workflow
        assert made is not None
        return str(made["id"])

    def insert(self, conn: sa.Connection) -> bool:
        """``False`` if this fire already made its run (its key is unique)."""
        if self.run is not None:
            return _insert_run(conn, self.run)
        assert self.workflow is not None
        statement = _conflict_free_insert(conn.dialect.name, "workflow")
        return conn.execute(statement, self.workflow).first() is not None


@dataclasses.dataclass(frozen=True)
class Advance:
    """One due fire, ready to write: the schedule as it was read (the guard), its new
    values, and what the fire makes (``None``: nothing, a skipped or held fire)."""

    record: ScheduleRecord
    values: dict[str, Any]
    fired: Fired | None


class _Raced(Exception):
    """A fire of a batch already had its run (another beat made it)."""


class FireStore:
    """The writes of fires, in one database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def run_states(self, run_ids: list[str]) -> dict[str, str]:
        """The states of these runs (the previous runs of schedules that may not overlap)."""
        if not run_ids:
            return {}
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(R.c.id, R.c.state).where(R.c.id.in_(run_ids)))
            return {str(i): str(state) for i, state in found}

    def write(self, batch: list[Advance]) -> list[Fired]:
        """Write a batch of fires; what was made, of the fires whose schedule advanced (and
        was not held by another beat's transaction: see the module's docstring)."""
        try:
            with self.engine.begin() as conn:
                return self._write_batch(conn, self._unlocked(conn, batch))
        except _Raced:
            with self.engine.begin() as conn:
                batch = self._unlocked(conn, batch)
                return [made for a in batch if (made := self._write_one(conn, a)) is not None]

    def _unlocked(self, conn: sa.Connection, batch: list[Advance]) -> list[Advance]:
        """The fires of ``batch`` whose schedules this transaction could lock at once
        (PostgreSQL; SQLite has one writer at a time, and ``batch`` is returned)."""
        if conn.dialect.name != "postgresql" or not batch:
            return batch
        conn.exec_driver_sql(f"SET LOCAL idle_in_transaction_session_timeout = '{FIRE_IDLE_LIMIT}'")
        ids = [a.record.id for a in batch]
        locked = conn.execute(
            sa.select(S.c.id).where(S.c.id.in_(ids)).with_for_update(skip_locked=True)
        )
        free = {str(i) for (i,) in locked}
        return [a for a in batch if a.record.id in free]

    def _write_batch(self, conn: sa.Connection, batch: list[Advance]) -> list[Fired]:
        """Advance every schedule with one statement per shape of change, then insert the runs
        of those advanced in one statement. A schedule that moved on since it was read is
        left out: a fire is made from the schedule as it is, and the next read of the store
        finds it if it is still due. ``_Raced`` (rolling back) if a fire already had its run."""
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        made: dict[str, Fired] = {}
        for a in batch:
            s = a.record
            params = {f"v_{k}": v for k, v in a.values.items()}
            params.update(
                b_id=s.id, b_nominal=s.nominal_at, b_version=s.version, b_updated=s.updated_at
            )
            shapes.setdefault(tuple(sorted(a.values)), []).append(params)
            if a.fired is not None:
                made[s.id] = a.fired
        advanced: set[str] = set()
        for keys, rows in shapes.items():
            advanced |= bulksql.advance(conn, keys, rows)
        kept = [m for schedule_id, m in made.items() if schedule_id in advanced]
        runs_ = [m.run for m in kept if m.run is not None]
        if runs_ and bulksql.insert_runs(conn, runs_) != len(runs_):
            raise _Raced  # a fire already had its run: find out which, one by one
        workflows = [m for m in kept if m.workflow is not None]  # (rare: inserted one by one)
        new_workflows = {m.id for m in workflows if m.insert(conn)}
        return [m for m in kept if m.run is not None or m.id in new_workflows]

    def _write_one(self, conn: sa.Connection, a: Advance) -> Fired | None:
        """Advance one due schedule and insert its run, in the caller's transaction."""
        s = a.record
        advanced = conn.execute(
            S.update()
            .where(
                S.c.id == s.id,
                S.c.state == ScheduleState.ACTIVE.value,
                S.c.nominal_at == s.nominal_at,
                S.c.version == s.version,
                S.c.updated_at == s.updated_at,
            )
            .values(**a.values)
        ).rowcount
        # Another beat fired it or it changed (advanced == 0), or nothing is to run.
        if advanced != 1 or a.fired is None or not a.fired.insert(conn):
            return None
        return a.fired

    def trigger(self, schedule_id: str, made: Fired, now: dt.datetime) -> None:
        """A fire outside the cadence (trigger ``manual``): insert what it made, and count it
        on the schedule, whose next fire stays as it is."""
        with self.engine.begin() as conn:
            made.insert(conn)
            conn.execute(
                S.update()
                .where(S.c.id == schedule_id)
                .values(
                    run_count=S.c.run_count + 1,
                    last_run_id=made.id,
                    last_fire_at=now,
                    updated_at=now,
                )
            )

    def release_held(self, s: ScheduleRecord, row: dict[str, Any], now: dt.datetime) -> bool:
        """Insert the run of the fire ``s`` held (overlap ``queue``), if it still holds it
        (and no one made that fire's run); ``False`` otherwise."""
        over = {"state": ScheduleState.COMPLETED.value} if s.next_fire_at is None else {}
        with self.engine.begin() as conn:
            done = conn.execute(
                S.update()
                .where(S.c.id == s.id, S.c.queued_fire_at == s.queued_fire_at)
                .values(
                    **over,
                    queued_fire_at=None,
                    run_count=S.c.run_count + 1,
                    last_run_id=row["id"],
                    last_fire_at=s.queued_fire_at,
                    updated_at=now,
                )
            ).rowcount
            return done == 1 and _insert_run(conn, row)


def _insert_run(conn: sa.Connection, row: dict[str, Any]) -> bool:
    """Insert a fire's run; ``False`` if that fire already has one (its key is unique).
    ``ON CONFLICT DO NOTHING`` rather than a savepoint per run: two round trips fewer a fire
    on PostgreSQL."""
    return conn.execute(_conflict_free_insert(conn.dialect.name, "run"), row).first() is not None


@functools.cache
def _conflict_free_insert(dialect: str, what: str) -> Any:
    """An insert of a run (unique ``fire_key``) or a workflow run (unique id) that does
    nothing when the row exists; it returns the id it inserted (psycopg reports no row count
    for ``ON CONFLICT``, so the returned rows are the answer)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    if what == "workflow":
        table = schema.workflow_runs
        return insert(table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id)
    statement = insert(R).on_conflict_do_nothing(
        index_elements=["fire_key"], index_where=R.c.fire_key.is_not(None)
    )
    return statement.returning(R.c.id)
