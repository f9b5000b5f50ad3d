"""Firing due schedules: what a fire makes, and the writes that make it, a batch at a time.

A fire advances its schedule, guarded by the fire it advances from (so of several beats
racing for the same fire one wins), and inserts its run, whose ``fire_key`` (schedule and
fire time) is unique, so one fire never makes two runs; both in one transaction.

A burst of due schedules (every cron schedule on ``* * * * *`` is due at the same second) is
written a batch at a time: one ``UPDATE`` of all the batch's schedules and one ``INSERT`` of
their runs (``bulksql``), instead of two statements per fire. The guard of each schedule is
the fire it was read at, its version and its last change: a schedule changed since it was
read (fired by another beat, paused, edited, its metadata merged) is not advanced, and makes
no run from that read. A batch one of whose fires already has its run is rolled back and
written one schedule at a time, where that fire is skipped.

``Firing.batches`` yields each batch after its commit, so the beat publishes it at once and
then stamps ``published_at``; a beat that dies in between leaves waiting runs that the
reconciler publishes. Nothing here imports Celery.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from jobsys.base import errors
from jobsys.declare import jobs, workflows
from jobsys.declare.cadence import Misfire, Overlap, ScheduleSpec, next_after, next_fire
from jobsys.store import bulksql, runs, schema
from jobsys.store.schedules import ScheduleRecord, ScheduleState, ScheduleStore

S = schema.schedules
R = schema.runs

ACTIVE_RUN = ("pending", "running", "retrying")
FIRE_BATCH = 250
"""Due schedules written per transaction: a few statements each, the write lock held briefly."""


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
class Plan:
    """What to do with one due fire, decided before the write."""

    record: ScheduleRecord
    definition: ScheduleSpec
    trigger: str | None
    """The trigger of the run to make; ``None``: no run (skipped misfire or overlap)."""
    following: dt.datetime | None
    """The cadence's next fire after this one; ``None``: the schedule is over."""
    hold: bool
    """Hold this fire until the previous run ends (overlap ``queue``)."""


class _Raced(Exception):
    """A fire of a batch already had its run (another beat made it)."""


class Firing:
    """Fires the due schedules of a ``ScheduleStore``; used by beat and by ``trigger``."""

    def __init__(self, schedules: ScheduleStore) -> None:
        self.schedules = schedules
        self.engine = schedules.engine

    def fire_due(self, registry: jobs.Registry, now: dt.datetime, limit: int = 500) -> list[Fired]:
        """Fire every due schedule (and every held fire whose previous run ended)."""
        return [f for batch in self.batches(registry, now, limit) for f in batch]

    def batches(
        self,
        registry: jobs.Registry,
        now: dt.datetime,
        limit: int = 500,
        ahead: Sequence[ScheduleRecord] | None = None,
    ) -> Iterator[list[Fired]]:
        """Fire up to ``limit`` due schedules, yielding what each committed batch made.
        ``ahead``: the due schedules, read before they were due, instead of reading them now
        (all of them are fired; a schedule changed since it was read fails the write's guard
        and is not fired from it)."""
        released = []
        for record in self.schedules.queued(limit):
            made = self._fire_queued(record, registry, now)
            if made:
                released.append(made)
        if released:
            yield released
        # A target no process here knows is left for a beat whose catalog has it.
        if ahead is None:
            ahead = self.schedules.due(now, limit)
        due = [r for r in ahead if known(registry, r.tenant, r.job) and _due(r, now)]
        for start in range(0, len(due), FIRE_BATCH):
            chunk = [(r, r.definition) for r in due[start : start + FIRE_BATCH]]
            # Reads first, writes in their own transaction: a SQLite transaction that reads
            # and then writes fails outright when another process wrote in between. The state
            # of the previous run matters only to a schedule that may not overlap it.
            watched = [r.last_run_id for r, d in chunk if r.last_run_id and _no_overlap(d)]
            last = self._run_states(watched)
            plans = [_decide(r, d, now, last) for r, d in chunk]
            batch = self._write(plans, registry, now)
            if batch:  # (nothing when another beat fired them all)
                yield batch

    def trigger(
        self,
        schedule_id: str,
        registry: jobs.Registry,
        tenant: str | None = None,
        version: int | None = None,
    ) -> Fired:
        """Fire once now (trigger ``manual``), leaving the cadence as it is; ``version``: with
        the input and metadata of that version of the schedule (its run records the version)."""
        record = self.schedules.get(schedule_id, tenant)
        if record.state in (ScheduleState.CANCELLED,):
            raise errors.InvalidTransition(schedule_id, record.state.value, "trigger", "schedule")
        if version is not None and version != record.version:
            record = versioned(self.schedules, record, version)
        now = runs.utcnow()
        made = _made(record, registry, now, "manual", now, key=None)
        if made.run is not None:  # published by the caller right after the commit
            made.run["published_at"] = now
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
        return made

    # --- writing a batch -------------------------------------------------------------------

    def _write(self, plans: list[Plan], registry: jobs.Registry, now: dt.datetime) -> list[Fired]:
        try:
            with self.engine.begin() as conn:
                return self._write_batch(conn, plans, registry, now)
        except _Raced:
            with self.engine.begin() as conn:
                return [
                    made
                    for plan in plans
                    if (made := self._write_one(conn, plan, registry, now)) is not None
                ]

    def _write_batch(
        self, conn: sa.Connection, plans: list[Plan], registry: jobs.Registry, now: dt.datetime
    ) -> list[Fired]:
        """Advance every planned schedule with one statement per shape of change, then insert
        the runs of those advanced in one statement. A schedule that moved on since it was read
        (another beat fired it; it was paused, edited, or its metadata merged) is left out: a
        fire is made from the schedule as it is, and the next read of the store finds it if it
        is still due. ``_Raced`` (rolling back) if a fire already had its run."""
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        made: dict[str, Fired] = {}
        for plan in plans:
            values, fired = self._advance(plan, registry, now)
            s = plan.record
            params = {f"v_{k}": v for k, v in values.items()}
            params.update(
                b_id=s.id, b_nominal=s.nominal_at, b_version=s.version, b_updated=s.updated_at
            )
            shapes.setdefault(tuple(sorted(values)), []).append(params)
            if fired is not None:
                made[s.id] = fired
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

    def _write_one(
        self, conn: sa.Connection, plan: Plan, registry: jobs.Registry, now: dt.datetime
    ) -> Fired | None:
        """Advance one due schedule and insert its run, in the caller's transaction."""
        values, made = self._advance(plan, registry, now)
        s = plan.record
        advanced = conn.execute(
            S.update()
            .where(
                S.c.id == s.id,
                S.c.state == ScheduleState.ACTIVE.value,
                S.c.nominal_at == s.nominal_at,
                S.c.version == s.version,
                S.c.updated_at == s.updated_at,
            )
            .values(**values)
        ).rowcount
        # Another beat fired it or it changed (advanced == 0), or nothing is to run.
        if advanced != 1 or made is None or not made.insert(conn):
            return None
        return made

    def _advance(
        self, plan: Plan, registry: jobs.Registry, now: dt.datetime
    ) -> tuple[dict[str, Any], Fired | None]:
        """The schedule's new values after this fire, and what the fire makes."""
        s, d = plan.record, plan.definition
        assert s.nominal_at is not None
        count = s.run_count + (1 if plan.trigger else 0)
        following = plan.following
        over = following is None or (d.options.max_runs is not None and count >= d.options.max_runs)
        values: dict[str, Any] = {
            "nominal_at": None if over else following,
            "next_fire_at": None if over else self.schedules.jittered(following, d.options),
            "updated_at": now,
        }
        if over and not plan.hold:
            values["state"] = ScheduleState.COMPLETED.value
        if plan.hold:
            values["queued_fire_at"] = s.nominal_at
        if not plan.trigger:
            return values, None
        made = _made(s, registry, s.nominal_at, plan.trigger, now, _fire_key(s.id, s.nominal_at))
        values.update(run_count=count, last_run_id=made.id, last_fire_at=s.nominal_at)
        return values, made

    # --- held fires ------------------------------------------------------------------------

    def _fire_queued(
        self, s: ScheduleRecord, registry: jobs.Registry, now: dt.datetime
    ) -> Fired | None:
        """Release a held fire (overlap ``queue``) once the previous run has ended."""
        assert s.queued_fire_at is not None
        registry = registry.scoped(s.tenant)
        if s.job not in registry:  # ("queue" holds job fires only)
            return None
        spec = registry.get(s.job)
        if s.last_run_id and self._run_states([s.last_run_id]).get(s.last_run_id) in ACTIVE_RUN:
            return None
        with self.engine.begin() as conn:
            key = _fire_key(s.id, s.queued_fire_at)
            row = _run_row(s, spec, s.queued_fire_at, "scheduled", now, key)
            over = {"state": ScheduleState.COMPLETED.value} if s.next_fire_at is None else {}
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
            if done != 1 or not _insert_run(conn, row):
                return None
        return Fired(row, spec)

    def _run_states(self, run_ids: list[str]) -> dict[str, str]:
        if not run_ids:
            return {}
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(R.c.id, R.c.state).where(R.c.id.in_(run_ids)))
            return {str(i): str(state) for i, state in found}


def _decide(s: ScheduleRecord, d: ScheduleSpec, now: dt.datetime, last: dict[str, str]) -> Plan:
    """For a due fire: whether and how it runs, the following fire, and whether to hold it
    until the previous run ends."""
    assert s.nominal_at is not None and s.next_fire_at is not None
    trigger: str | None = "scheduled"
    if (now - s.next_fire_at).total_seconds() > d.options.grace:  # a misfire
        following = next_after(d.cadence, s.nominal_at, now)
        trigger = "catch-up" if d.options.misfire is Misfire.RUN_ONCE else None
    else:
        following = next_fire(d.cadence, s.nominal_at)
    hold = False
    overlap = trigger and d.options.overlap is not Overlap.ALLOW and s.last_run_id
    if overlap and last.get(str(s.last_run_id)) in ACTIVE_RUN:
        hold = d.options.overlap is Overlap.QUEUE and s.queued_fire_at is None
        trigger = None
    return Plan(s, d, trigger, following, hold)


def _fire_key(schedule_id: str, fire_at: dt.datetime) -> str:
    return f"{schedule_id}@{fire_at.astimezone(dt.UTC).isoformat()}"


_FIRE_IDS = uuid.UUID("6b1f7a8e-3c1d-4f0e-9a57-1f2e0c9d4b21")


def fire_run_id(schedule_id: str, fire_at: dt.datetime) -> str:
    """The id of the run a schedule's fire makes, known before the fire: beat builds the
    messages of the fires due next ahead of their time. (Whichever beat makes the fire, and
    whether it runs on time or as a catch-up, the run has this id.)"""
    return uuid.uuid5(_FIRE_IDS, _fire_key(schedule_id, fire_at)).hex


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


def _no_overlap(d: ScheduleSpec) -> bool:
    return d.options.overlap is not Overlap.ALLOW


def _due(s: ScheduleRecord, now: dt.datetime) -> bool:
    return s.next_fire_at is not None and s.next_fire_at <= now


def known(registry: jobs.Registry, tenant: str, target: str) -> bool:
    """Whether this process can fire a schedule of ``tenant`` whose target is ``target`` (a
    job or workflow it has, in that tenant)."""
    mine = registry.scoped(tenant)
    return target in mine or target in mine.workflows


def versioned(store: ScheduleStore, record: ScheduleRecord, version: int) -> ScheduleRecord:
    """The schedule as its ``version`` was (its input and metadata), to fire. A schedule with
    secret input fires only its current version: the secrets of older ones are not kept."""
    old = store.version(record.id, version)
    if old is None:
        problem = f"schedule {record.id} has versions 1 to {record.version}"
        raise errors.InvalidSchedule("version", problem)
    if record.sealed:
        problem = (
            "this schedule's input holds secrets, which are kept for its current version only "
            f"({record.version}): trigger that one, or update it"
        )
        raise errors.InvalidSchedule("version", problem)
    definition = old["definition"]
    return dataclasses.replace(
        record,
        input=definition.get("input", {}),
        meta=definition.get("metadata", {}),
        version=version,
    )


def _made(
    s: ScheduleRecord,
    registry: jobs.Registry,
    fire_at: dt.datetime,
    trigger: str,
    now: dt.datetime,
    key: str | None,
) -> Fired:
    """The run (or workflow run) a fire of ``s`` makes; its target resolves in the schedule's
    tenant."""
    registry = registry.scoped(s.tenant)
    if s.job in registry:
        spec = registry.get(s.job)
        return Fired(_run_row(s, spec, fire_at, trigger, now, key), spec)
    wf = registry.workflow(s.job)
    # The id comes from the fire key: one workflow run per fire, whichever beat makes it.
    digest = hashlib.sha256((key or uuid.uuid4().hex).encode()).hexdigest()[:24]
    row = {
        "id": f"wf_{digest}",
        "workflow": wf.name,
        "definition": workflows.run_copy(wf, registry)
        | ({workflows.SEALED_KEY: s.sealed} if s.sealed else {}),
        "state": "running",
        "input": s.input,
        "skipped": [],
        "principal": s.principal,
        "principal_id": s.principal_id,
        "tenant": s.tenant,
        "created_at": now,
        "timeout_at": now + dt.timedelta(seconds=wf.timeout),
    }
    return Fired(None, None, row)


def _run_row(
    s: ScheduleRecord,
    spec: jobs.JobSpec,
    fire_at: dt.datetime,
    trigger: str,
    now: dt.datetime,
    key: str | None,
) -> dict[str, Any]:
    return {
        "id": runs.new_run_id() if key is None else fire_run_id(s.id, fire_at),
        "job": spec.name,
        "job_version": spec.version,
        "state": runs.RunState.PENDING.value,
        "queue": spec.queue,
        "priority": spec.priority,
        "input": s.input,
        "attempts": 0,
        "max_attempts": spec.retry.max_attempts,
        "timeout": spec.timeout,
        "dispatch": 1,
        "lost": 0,
        "meta": dict(s.meta),
        "tags": sorted(spec.tags),
        "principal": s.principal,
        "principal_id": s.principal_id,
        "tenant": s.tenant,
        "schedule_id": s.id,
        "schedule_version": s.version,
        "fire_at": fire_at,
        "trigger": trigger,
        "fire_key": key,
        "sealed": s.sealed,
        "cancel_requested": False,
        "created_at": now,
        # Stamped once the beat has published it (``RunStore.mark_published_many``); until
        # then the reconciler would publish it, if the beat died first.
        "published_at": None,
    }
