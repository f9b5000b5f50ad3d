"""Schedules in the store: definitions with versions, their reads and their lifecycle.

A schedule is a row of ``jobsys_schedules``: its cadence (``cadence.py``), the input, metadata
and options of the runs it makes, the principal that created it, a state (active, paused,
completed, cancelled) and ``next_fire_at``, the indexed time of its next fire. Every change
writes a new version (``jobsys_schedule_versions``). Firing due schedules is ``firing.py``.
Nothing here imports Celery.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import json
import random
import uuid
from collections.abc import Sequence
from typing import Any

import pydantic
import sqlalchemy as sa

from jobsys.base import errors, sealing
from jobsys.declare import jobs, permissions
from jobsys.declare.cadence import (
    Cadence,
    Options,
    ScheduleSpec,
    first_fire,
    next_after,
)
from jobsys.store import runs, schema

S = schema.schedules
V = schema.schedule_versions
R = schema.runs


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
    description: str | None = None
    """What it is for, in words (``--description``)."""

    @property
    def definition(self) -> ScheduleSpec:
        when, options = _parsed(json.dumps(self.cadence, sort_keys=True), json.dumps(self.options))
        return ScheduleSpec(when, self.input, self.meta, options)

    def to_json(self) -> dict[str, Any]:
        return runs.as_json(self)


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
        definition: ScheduleSpec,
        principal: permissions.Principal,
        name: str | None = None,
        now: dt.datetime | None = None,
        schedule_id: str | None = None,
        source: str = "api",
        sealed: str | None = None,
        code_hash: str | None = None,
        description: str | None = None,
        paused: bool = False,
    ) -> ScheduleRecord:
        """A new schedule, active (or ``paused``: it keeps its next fire time, and fires
        from the first one after it is resumed)."""
        now = now or runs.utcnow()
        schedule_id = schedule_id or new_schedule_id()
        first = first_fire(definition.cadence, now)
        state = ScheduleState.ACTIVE if first else ScheduleState.COMPLETED
        if paused and first:
            state = ScheduleState.PAUSED
        row = {
            "id": schedule_id,
            "name": name or schedule_id,
            "job": job,
            **self._definition_values(definition),
            "principal": principal.model_dump(mode="json"),
            "principal_id": principal.id,
            "tenant": principal.tenant,
            "state": state.value,
            "version": 1,
            "nominal_at": first,
            "next_fire_at": self.jittered(first, definition.options),
            "run_count": 0,
            "source": source,
            "code_hash": code_hash or (definition.digest() if source == "code" else None),
            "created_at": now,
            "updated_at": now,
            "sealed": sealed,
            "description": description,
        }
        with self.engine.begin() as conn:
            conn.execute(S.insert().values(**row))
            self._version(conn, schedule_id, 1, job, definition, principal.id, now)
        return self.get(schedule_id)

    def update(
        self,
        schedule_id: str,
        definition: ScheduleSpec,
        principal: permissions.Principal,
        tenant: str | None = None,
        now: dt.datetime | None = None,
        code_hash: str | None = None,
        sealed: str | None = None,
        description: str | None = None,
    ) -> ScheduleRecord:
        """A new version; the next fire is computed afresh from ``now`` when the cadence
        changed, kept otherwise. ``description``: a new one (``None`` keeps it)."""
        now = now or runs.utcnow()
        current = self.get(schedule_id, tenant)
        if current.state is ScheduleState.CANCELLED:
            raise errors.InvalidTransition(schedule_id, current.state.value, "update", "schedule")
        values = {**self._definition_values(definition), "sealed": sealed}
        if description is not None:
            values["description"] = description
        if definition.cadence.to_json() != current.cadence:
            first = first_fire(definition.cadence, now)
            values["nominal_at"] = first
            values["next_fire_at"] = self.jittered(first, definition.options)
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

    def _definition_values(self, d: ScheduleSpec) -> dict[str, Any]:
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
        d: ScheduleSpec,
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

    def jittered(self, when: dt.datetime | None, options: Options) -> dt.datetime | None:
        """When a fire due at ``when`` is made: later by up to the schedule's ``jitter``."""
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
        name: str | None = None,
        next_after: dt.datetime | None = None,
        next_before: dt.datetime | None = None,
    ) -> list[ScheduleRecord]:
        """Newest first. ``name``: whose name holds it (any case); ``next_after`` and
        ``next_before``: whose next fire is at or after, and before, these instants (a schedule
        with no next fire, over or cancelled, is then left out)."""
        query = sa.select(S).order_by(S.c.created_at.desc(), S.c.id).limit(limit)
        if name is not None:
            query = query.where(sa.func.lower(S.c.name).contains(name.lower(), autoescape=True))
        if next_after is not None:
            query = query.where(S.c.next_fire_at >= next_after)
        if next_before is not None:
            query = query.where(S.c.next_fire_at < next_before)
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

    def upcoming(
        self, until: dt.datetime, after: tuple[dt.datetime, str] | None, limit: int
    ) -> list[ScheduleRecord]:
        """Active schedules due by ``until``, in order of (next fire, id), from just after
        ``after`` on: read a page at a time."""
        query = sa.select(S).where(
            S.c.state == ScheduleState.ACTIVE.value, S.c.next_fire_at <= until
        )
        if after is not None:
            at, last = after
            query = query.where(
                sa.or_(S.c.next_fire_at > at, sa.and_(S.c.next_fire_at == at, S.c.id > last))
            )
        query = query.order_by(S.c.next_fire_at, S.c.id).limit(limit)
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
        extra = {"nominal_at": first, "next_fire_at": self.jittered(first, d.options)}
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

    def clear(self, tenant: str, dry_run: bool = False) -> list[ScheduleRecord]:
        """Cancel every schedule of ``tenant`` made at runtime that is not cancelled yet (those
        declared in code stay: their job declares them); the schedules cleared, as they were
        (``dry_run``: the ones it would clear, and nothing changes)."""
        query = (
            sa.select(S)
            .where(
                S.c.tenant == tenant,
                S.c.source != "code",
                S.c.state != ScheduleState.CANCELLED.value,
            )
            .order_by(S.c.created_at, S.c.id)
        )
        with self.engine.connect() as conn:
            found = self._with_last_states(conn, list(conn.execute(query)))
        if dry_run or not found:
            return found
        with self.engine.begin() as conn:
            conn.execute(
                S.update()
                .where(
                    S.c.tenant == tenant,
                    S.c.id.in_([s.id for s in found]),
                    S.c.state != ScheduleState.CANCELLED.value,
                )
                .values(
                    state=ScheduleState.CANCELLED.value,
                    next_fire_at=None,
                    queued_fire_at=None,
                    updated_at=runs.utcnow(),
                )
            )
        return found

    def version(self, schedule_id: str, version: int) -> dict[str, Any] | None:
        """The definition of one version (``None``: no such version)."""
        query = sa.select(V).where(V.c.schedule_id == schedule_id, V.c.version == version)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return row._asdict() if row is not None else None

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

    # --- declared in code ------------------------------------------------------------------

    def seed(
        self,
        registry: jobs.Registry,
        now: dt.datetime | None = None,
        sealer: sealing.Sealer | None = None,
    ) -> list[str]:
        """Create or refresh the schedules jobs declare. A declared schedule edited at
        runtime keeps the edit until the code's own definition changes. ``sealer`` seals
        the secret fields of their input (as every schedule's)."""
        changed = []
        for spec in registry:
            if spec.schedule is None:
                continue
            schedule_id = f"code:{spec.name}"
            digest = spec.schedule.digest()
            definition, sealed = _sealed(spec, spec.schedule, sealer)
            try:
                current = self.get(schedule_id)
            except errors.ScheduleNotFound:
                self.create(
                    spec.name,
                    definition,
                    permissions.LOCAL,
                    name=spec.name,
                    now=now,
                    schedule_id=schedule_id,
                    source="code",
                    sealed=sealed,
                    code_hash=digest,
                )
                changed.append(schedule_id)
                continue
            if current.code_hash != digest:
                self.update(
                    schedule_id,
                    definition,
                    permissions.LOCAL,
                    now=now,
                    code_hash=digest,
                    sealed=sealed,
                )
                changed.append(schedule_id)
        return changed


def _sealed(
    spec: jobs.JobSpec, d: ScheduleSpec, sealer: sealing.Sealer | None
) -> tuple[ScheduleSpec, str | None]:
    """A declared schedule with the secret fields of its input redacted, and those sealed."""
    paths = sealing.secret_paths(spec.input_model)
    if not paths:
        return d, None
    if sealer is None:
        raise errors.ConfigError(
            f"the schedule {spec.name} declares has secrets: seed it with a key"
        )
    try:
        data, hidden = sealing.split(spec.input_model.model_validate(d.input), paths)
    except pydantic.ValidationError:  # its fires fail, saying why; the secrets stay sealed
        data, hidden = sealing.split_json(dict(d.input), paths)
    return dataclasses.replace(d, input=data), sealer.seal(hidden)
