"""Schedules in the store: definitions with versions, their reads and their lifecycle.

A schedule is a row of ``jobsys_schedules``: its cadence (``cadence.py``), the input, metadata
and options of the runs it makes, the principal that created it, a state (active, paused,
completed, cancelled) and ``next_fire_at``, the indexed time of its next fire. Every change
writes a new version (``jobsys_schedule_versions``). The record is ``schedule_records.py``,
the reads ``schedule_reads.py`` (their names stay importable from here); deciding what a due
fire makes is ``scheduling/firing.py``, writing it ``fires.py``. Nothing here imports Celery.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pydantic
import sqlalchemy as sa

from jobsys.base import errors, sealing
from jobsys.declare import jobs, permissions
from jobsys.declare.cadence import ScheduleSpec, first_fire, next_after
from jobsys.store import runs, schema
from jobsys.store.schedule_reads import ScheduleReads
from jobsys.store.schedule_records import ScheduleRecord, ScheduleState, new_schedule_id

S = schema.schedules
V = schema.schedule_versions

__all__ = ["ScheduleRecord", "ScheduleState", "ScheduleStore", "new_schedule_id"]


class ScheduleStore(ScheduleReads):
    """Every read and write of schedules; shares the run store's engine."""

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
