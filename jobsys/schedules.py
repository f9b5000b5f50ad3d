"""Schedules in the store: definitions with versions, and the firing of due ones.

A schedule is a row of ``jobsys_schedules``: its cadence (``cadence.py``), the input, metadata
and options of the runs it makes, the principal that created it, a state (active, paused,
completed, cancelled) and ``next_fire_at``, the indexed time of its next fire. Every change
writes a new version (``jobsys_schedule_versions``).

Firing is one transaction: advance the schedule (guarded by the fire it is advancing from,
so that of several beats racing for the same fire one wins) and insert the run, whose
``fire_key`` (schedule and fire time) is unique, so one fire never makes two runs. The beat
publishes the run after the commit; a beat that dies in between leaves a waiting run that the
reconciler publishes. Nothing here imports Celery.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import hashlib
import json
import random
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from jobsys import errors, jobs, permissions, runs, schema
from jobsys.cadence import (
    Cadence,
    Definition,
    Misfire,
    Options,
    Overlap,
    first_fire,
    next_after,
    next_fire,
)

S = schema.schedules
V = schema.schedule_versions
R = schema.runs


ACTIVE_RUN = ("pending", "running", "retrying")
FIRE_BATCH = 50
"""Due schedules fired per transaction: fewer commits, and the write lock held briefly."""


class ScheduleState(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    """A ``once`` that fired, an end or ``max_runs`` reached, an ongoing job that said done."""
    CANCELLED = "cancelled"
    """Deleted: it never fires again; its runs keep pointing at it."""


@dataclasses.dataclass(frozen=True)
class ScheduleRecord:
    id: str
    name: str
    job: str
    cadence: dict[str, Any]
    input: dict[str, Any]
    meta: dict[str, Any]
    options: dict[str, Any]
    principal: dict[str, Any]
    principal_id: str
    tenant: str
    state: ScheduleState
    version: int
    nominal_at: dt.datetime | None
    next_fire_at: dt.datetime | None
    """When it fires next (the cadence's time plus any jitter); ``None`` once it is over."""
    queued_fire_at: dt.datetime | None
    last_fire_at: dt.datetime | None
    last_run_id: str | None
    run_count: int
    result: Any
    source: str
    """``api`` (created at runtime) or ``code`` (declared with a job)."""
    code_hash: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    sealed: str | None = None
    """Secret input values, encrypted (``sealing.py``); never shown."""
    last_state: str | None = None
    """State of the last run it made."""

    @property
    def definition(self) -> Definition:
        when, options = _parsed(json.dumps(self.cadence, sort_keys=True), json.dumps(self.options))
        return Definition(when, self.input, self.meta, options)

    def to_json(self) -> dict[str, Any]:
        return runs.as_json(self)


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


@functools.lru_cache(maxsize=4096)
def _parsed(cadence_json: str, options_json: str) -> tuple[Cadence, Options]:
    """Parsed and checked once per distinct definition (beat reads thousands per minute)."""
    return Cadence.from_json(json.loads(cadence_json)), Options.from_json(json.loads(options_json))


def new_schedule_id() -> str:
    return "sch_" + uuid.uuid4().hex[:20]


class ScheduleStore:
    """Every read and write of schedules; shares the run store's engine."""

    def __init__(self, engine: sa.Engine, rng: random.Random | None = None) -> None:
        self.engine = engine
        self._rng = rng or random.Random()

    # --- definitions -----------------------------------------------------------------------

    def create(
        self,
        job: str,
        definition: Definition,
        principal: permissions.Principal,
        name: str | None = None,
        now: dt.datetime | None = None,
        schedule_id: str | None = None,
        source: str = "api",
        sealed: str | None = None,
    ) -> ScheduleRecord:
        now = now or runs.utcnow()
        schedule_id = schedule_id or new_schedule_id()
        first = first_fire(definition.cadence, now)
        row = {
            "id": schedule_id,
            "name": name or schedule_id,
            "job": job,
            **self._definition_values(definition),
            "principal": principal.model_dump(mode="json"),
            "principal_id": principal.id,
            "tenant": principal.tenant,
            "state": (ScheduleState.ACTIVE if first else ScheduleState.COMPLETED).value,
            "version": 1,
            "nominal_at": first,
            "next_fire_at": self._jittered(first, definition.options),
            "run_count": 0,
            "source": source,
            "code_hash": definition.digest() if source == "code" else None,
            "created_at": now,
            "updated_at": now,
            "sealed": sealed,
        }
        with self.engine.begin() as conn:
            conn.execute(S.insert().values(**row))
            self._version(conn, schedule_id, 1, job, definition, principal.id, now)
        return self.get(schedule_id)

    def update(
        self,
        schedule_id: str,
        definition: Definition,
        principal: permissions.Principal,
        tenant: str | None = None,
        now: dt.datetime | None = None,
        code_hash: str | None = None,
        sealed: str | None = None,
    ) -> ScheduleRecord:
        """A new version; the next fire is computed afresh from ``now`` when the cadence
        changed, kept otherwise."""
        now = now or runs.utcnow()
        current = self.get(schedule_id, tenant)
        if current.state is ScheduleState.CANCELLED:
            raise errors.InvalidTransition(schedule_id, current.state.value, "update", "schedule")
        values = {**self._definition_values(definition), "sealed": sealed}
        if definition.cadence.to_json() != current.cadence:
            first = first_fire(definition.cadence, now)
            values["nominal_at"] = first
            values["next_fire_at"] = self._jittered(first, definition.options)
            values["queued_fire_at"] = None
            if current.state is not ScheduleState.PAUSED:
                values["state"] = (ScheduleState.ACTIVE if first else ScheduleState.COMPLETED).value
        if code_hash is not None:
            values["code_hash"] = code_hash
        version = current.version + 1
        with self.engine.begin() as conn:
            done = conn.execute(
                S.update()
                .where(S.c.id == schedule_id, S.c.version == current.version)
                .values(**values, version=version, updated_at=now)
            ).rowcount
            if not done:
                raise errors.InvalidTransition(
                    schedule_id, "being changed by someone else; retry", "update", "schedule"
                )
            self._version(conn, schedule_id, version, current.job, definition, principal.id, now)
        return self.get(schedule_id)

    def _definition_values(self, d: Definition) -> dict[str, Any]:
        return {
            "cadence": d.cadence.to_json(),
            "input": d.input,
            "meta": d.metadata,
            "options": d.options.to_json(),
        }

    def _version(
        self,
        conn: sa.Connection,
        schedule_id: str,
        version: int,
        job: str,
        d: Definition,
        who: str,
        now: dt.datetime,
    ) -> None:
        conn.execute(
            V.insert().values(
                schedule_id=schedule_id,
                version=version,
                definition={"job": job, **d.to_json()},
                changed_at=now,
                changed_by=who,
            )
        )

    def versions(self, schedule_id: str) -> list[dict[str, Any]]:
        query = sa.select(V).where(V.c.schedule_id == schedule_id).order_by(V.c.version)
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(query)]

    def _jittered(self, when: dt.datetime | None, options: Options) -> dt.datetime | None:
        if when is None or not options.jitter:
            return when
        return when + dt.timedelta(seconds=self._rng.uniform(0, options.jitter))

    # --- reads -----------------------------------------------------------------------------

    def get(self, schedule_id: str, tenant: str | None = None) -> ScheduleRecord:
        query = sa.select(S).where(S.c.id == schedule_id)
        if tenant is not None:
            query = query.where(S.c.tenant == tenant)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
            if row is None:
                raise errors.ScheduleNotFound(schedule_id)
            return self._with_last_states(conn, [row])[0]

    def select(
        self,
        tenant: str | None = None,
        state: ScheduleState | None = None,
        job: str | None = None,
        limit: int = 100,
        jobs_in: tuple[str, ...] | None = None,
    ) -> list[ScheduleRecord]:
        query = sa.select(S).order_by(S.c.created_at.desc(), S.c.id).limit(limit)
        if jobs_in is not None:
            query = query.where(S.c.job.in_(jobs_in))
        for column, value in ((S.c.tenant, tenant), (S.c.job, job)):
            if value is not None:
                query = query.where(column == value)
        if state is not None:
            query = query.where(S.c.state == state.value)
        with self.engine.connect() as conn:
            return self._with_last_states(conn, list(conn.execute(query)))

    def _with_last_states(
        self, conn: sa.Connection, rows: Sequence[sa.Row[Any]]
    ) -> list[ScheduleRecord]:
        last = [r.last_run_id for r in rows if r.last_run_id]
        states: dict[str, str] = {}
        if last:
            found = conn.execute(sa.select(R.c.id, R.c.state).where(R.c.id.in_(last)))
            states = {i: s for i, s in found}
        out = []
        for r in rows:
            data = r._asdict()
            data["state"] = ScheduleState(data["state"])
            out.append(ScheduleRecord(**data, last_state=states.get(r.last_run_id or "")))
        return out

    def due(self, now: dt.datetime, limit: int = 500) -> list[ScheduleRecord]:
        """Active schedules whose next fire is due (the ``state, next_fire_at`` index)."""
        query = (
            sa.select(S)
            .where(S.c.state == ScheduleState.ACTIVE.value, S.c.next_fire_at <= now)
            .order_by(S.c.next_fire_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [self._plain(r) for r in conn.execute(query)]

    def queued(self, limit: int = 500) -> list[ScheduleRecord]:
        """Active schedules holding a fire until their previous run ends."""
        query = (
            sa.select(S)
            .where(S.c.state == ScheduleState.ACTIVE.value, S.c.queued_fire_at.is_not(None))
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [self._plain(r) for r in conn.execute(query)]

    def next_due_at(self) -> dt.datetime | None:
        query = sa.select(sa.func.min(S.c.next_fire_at)).where(
            S.c.state == ScheduleState.ACTIVE.value
        )
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar()
        return schema.UTCDateTime().process_result_value(value, self.engine.dialect)

    def _plain(self, row: sa.Row[Any]) -> ScheduleRecord:
        data = row._asdict()
        data["state"] = ScheduleState(data["state"])
        return ScheduleRecord(**data)

    # --- lifecycle -------------------------------------------------------------------------

    def pause(self, schedule_id: str, tenant: str | None = None) -> ScheduleRecord:
        return self._move(schedule_id, tenant, ScheduleState.PAUSED, (ScheduleState.ACTIVE,))

    def resume(
        self, schedule_id: str, tenant: str | None = None, now: dt.datetime | None = None
    ) -> ScheduleRecord:
        """Active again, from ``now``: fires missed while paused are not replayed."""
        now = now or runs.utcnow()
        current = self.get(schedule_id, tenant)
        d = current.definition
        if current.nominal_at is not None and current.nominal_at >= now:
            first: dt.datetime | None = current.nominal_at
        elif current.nominal_at is not None:
            first = next_after(d.cadence, current.nominal_at, now)
        else:
            first = first_fire(d.cadence, now)
        extra = {"nominal_at": first, "next_fire_at": self._jittered(first, d.options)}
        target = ScheduleState.ACTIVE if first else ScheduleState.COMPLETED
        return self._move(schedule_id, tenant, target, (ScheduleState.PAUSED,), extra)

    def cancel(self, schedule_id: str, tenant: str | None = None) -> ScheduleRecord:
        """Delete: it never fires again; the row stays for the runs that point at it."""
        return self._move(
            schedule_id,
            tenant,
            ScheduleState.CANCELLED,
            (ScheduleState.ACTIVE, ScheduleState.PAUSED, ScheduleState.COMPLETED),
            {"next_fire_at": None, "queued_fire_at": None},
        )

    def _move(
        self,
        schedule_id: str,
        tenant: str | None,
        target: ScheduleState,
        sources: tuple[ScheduleState, ...],
        extra: dict[str, Any] | None = None,
    ) -> ScheduleRecord:
        current = self.get(schedule_id, tenant)
        if current.state not in sources:
            raise errors.InvalidTransition(
                schedule_id, current.state.value, f"make {target}", "schedule"
            )
        with self.engine.begin() as conn:
            conn.execute(
                S.update()
                .where(S.c.id == schedule_id, S.c.state.in_([s.value for s in sources]))
                .values(state=target.value, updated_at=runs.utcnow(), **(extra or {}))
            )
        return self.get(schedule_id)

    # --- from the running job (context) ----------------------------------------------------

    def merge_metadata(self, schedule_id: str, changes: dict[str, Any]) -> None:
        """Merge into the metadata the next fire's run gets (continuity between fires).
        Optimistic: read, then write if nobody changed the schedule meanwhile, else again."""
        for _ in range(20):
            current = self.get(schedule_id)
            with self.engine.begin() as conn:
                done = conn.execute(
                    S.update()
                    .where(S.c.id == schedule_id, S.c.updated_at == current.updated_at)
                    .values(meta={**current.meta, **changes}, updated_at=runs.utcnow())
                ).rowcount
            if done:
                return
        raise errors.InvalidTransition(
            schedule_id, "being changed by someone else; retry", "update", "schedule"
        )

    def finish(self, schedule_id: str, result: Any = None) -> None:
        """An ongoing schedule's job says it is done: the schedule completes."""
        with self.engine.begin() as conn:
            conn.execute(
                S.update()
                .where(S.c.id == schedule_id, S.c.state.in_(["active", "paused"]))
                .values(
                    state=ScheduleState.COMPLETED.value,
                    result=result,
                    next_fire_at=None,
                    queued_fire_at=None,
                    updated_at=runs.utcnow(),
                )
            )

    # --- firing ----------------------------------------------------------------------------

    def fire_due(self, registry: jobs.Registry, now: dt.datetime, limit: int = 500) -> list[Fired]:
        """Fire every due schedule (and every held fire whose previous run ended)."""
        fired = []
        for record in self.queued(limit):
            made = self._fire_queued(record, registry, now)
            if made:
                fired.append(made)
        # A target no process here knows is left for a beat whose catalog has it.
        due = [r for r in self.due(now, limit) if _known(registry, r.job)]
        for start in range(0, len(due), FIRE_BATCH):
            chunk = due[start : start + FIRE_BATCH]
            # Reads first, writes in their own transaction: a SQLite transaction that reads
            # and then writes fails outright when another process wrote in between.
            last = self._run_states([r.last_run_id for r in chunk if r.last_run_id])
            plans = [(r, self._decide(r, r.definition, now, last)) for r in chunk]
            with self.engine.begin() as conn:
                for record, plan in plans:
                    made = self._fire(conn, record, plan, registry, now)
                    if made:
                        fired.append(made)
        return fired

    def trigger(
        self, schedule_id: str, registry: jobs.Registry, tenant: str | None = None
    ) -> Fired:
        """Fire once now (trigger ``manual``), leaving the cadence as it is."""
        record = self.get(schedule_id, tenant)
        if record.state in (ScheduleState.CANCELLED,):
            raise errors.InvalidTransition(schedule_id, record.state.value, "trigger", "schedule")
        now = runs.utcnow()
        made = _made(record, registry, now, "manual", now, key=None)
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

    def _fire(
        self,
        conn: sa.Connection,
        s: ScheduleRecord,
        plan: tuple[str | None, dt.datetime | None, bool],
        registry: jobs.Registry,
        now: dt.datetime,
    ) -> Fired | None:
        """Advance one due schedule and insert its run, in the caller's transaction."""
        assert s.nominal_at is not None
        d = s.definition
        trigger, following, hold = plan
        count = s.run_count + (1 if trigger else 0)
        over = following is None or (d.options.max_runs is not None and count >= d.options.max_runs)
        values: dict[str, Any] = {
            "nominal_at": None if over else following,
            "next_fire_at": None if over else self._jittered(following, d.options),
            "updated_at": now,
        }
        if over and not hold:
            values["state"] = ScheduleState.COMPLETED.value
        if hold:
            values["queued_fire_at"] = s.nominal_at
        made = None
        if trigger:
            key = _fire_key(s.id, s.nominal_at)
            made = _made(s, registry, s.nominal_at, trigger, now, key)
            values.update(run_count=count, last_run_id=made.id, last_fire_at=s.nominal_at)
        advanced = conn.execute(
            S.update()
            .where(
                S.c.id == s.id,
                S.c.state == ScheduleState.ACTIVE.value,
                S.c.nominal_at == s.nominal_at,
                S.c.version == s.version,
            )
            .values(**values)
        ).rowcount
        # Another beat fired it or it changed (advanced == 0), or nothing is to run.
        if advanced != 1 or made is None or not made.insert(conn):
            return None
        return made

    def _decide(
        self, s: ScheduleRecord, d: Definition, now: dt.datetime, last: dict[str, str]
    ) -> tuple[str | None, dt.datetime | None, bool]:
        """For a due fire: the trigger of the run to make (``None``: no run), the following
        fire, and whether to hold this fire until the previous run ends."""
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
        return trigger, following, hold

    def _fire_queued(
        self, s: ScheduleRecord, registry: jobs.Registry, now: dt.datetime
    ) -> Fired | None:
        """Release a held fire (overlap ``queue``) once the previous run has ended."""
        assert s.queued_fire_at is not None
        if s.job not in registry:  # ("queue" holds job fires only)
            return None
        spec = registry.get(s.job)
        if s.last_run_id and self._run_state(s.last_run_id) in ACTIVE_RUN:
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

    def _run_state(self, run_id: str) -> str | None:
        with self.engine.connect() as conn:
            state = conn.execute(sa.select(R.c.state).where(R.c.id == run_id)).scalar()
        return str(state) if state is not None else None

    # --- declared in code ------------------------------------------------------------------

    def seed(self, registry: jobs.Registry, now: dt.datetime | None = None) -> list[str]:
        """Create or refresh the schedules jobs declare. A declared schedule edited at
        runtime keeps the edit until the code's own definition changes."""
        changed = []
        for spec in registry:
            if spec.schedule is None:
                continue
            schedule_id = f"code:{spec.name}"
            digest = spec.schedule.digest()
            try:
                current = self.get(schedule_id)
            except errors.ScheduleNotFound:
                self.create(
                    spec.name,
                    spec.schedule,
                    permissions.LOCAL,
                    name=spec.name,
                    now=now,
                    schedule_id=schedule_id,
                    source="code",
                )
                changed.append(schedule_id)
                continue
            if current.code_hash != digest:
                self.update(
                    schedule_id, spec.schedule, permissions.LOCAL, now=now, code_hash=digest
                )
                changed.append(schedule_id)
        return changed


def _fire_key(schedule_id: str, fire_at: dt.datetime) -> str:
    return f"{schedule_id}@{fire_at.astimezone(dt.UTC).isoformat()}"


def _insert_run(conn: sa.Connection, row: dict[str, Any]) -> bool:
    """Insert a fire's run; ``False`` if that fire already has one (its key is unique).
    ``ON CONFLICT DO NOTHING`` rather than a savepoint per run: two round trips fewer a fire
    on PostgreSQL."""
    inserted = conn.execute(_conflict_free_insert(conn.dialect.name, "run"), row).first()
    return inserted is not None


@functools.cache
def _conflict_free_insert(dialect: str, what: str) -> Any:
    """An insert of a run (unique ``fire_key``) or a workflow run (unique id) that does
    nothing when the row exists; it returns the id it inserted (psycopg reports no row count
    for ``ON CONFLICT``, so the returned row is the answer)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    if what == "workflow":
        table = schema.workflow_runs
        return insert(table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id)
    return (
        insert(R)
        .on_conflict_do_nothing(index_elements=["fire_key"], index_where=R.c.fire_key.is_not(None))
        .returning(R.c.id)
    )


def _known(registry: jobs.Registry, target: str) -> bool:
    return target in registry or target in registry.workflows


def _made(
    s: ScheduleRecord,
    registry: jobs.Registry,
    fire_at: dt.datetime,
    trigger: str,
    now: dt.datetime,
    key: str | None,
) -> Fired:
    """The run (or workflow run) a fire of ``s`` makes."""
    if s.job in registry:
        spec = registry.get(s.job)
        return Fired(_run_row(s, spec, fire_at, trigger, now, key), spec)
    wf = registry.workflow(s.job)
    # The id comes from the fire key: one workflow run per fire, whichever beat makes it.
    digest = hashlib.sha256((key or uuid.uuid4().hex).encode()).hexdigest()[:24]
    row = {
        "id": f"wf_{digest}",
        "workflow": wf.name,
        "definition": wf.to_data(),
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
        "id": runs.new_run_id(),
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
        # Published right after the commit; if that fails, the reconciler publishes it.
        "published_at": now,
    }
