"""``ScheduleReads``: the base of ``ScheduleStore``: every read of schedules and their
versions, and the jitter of a fire's time."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from jobsys.base import errors
from jobsys.declare.cadence import Options
from jobsys.store import schema
from jobsys.store.schedule_records import ScheduleRecord, ScheduleState

S = schema.schedules
V = schema.schedule_versions
R = schema.runs


class ScheduleReads:
    """Reads of schedules; shares the run store's engine."""

    def __init__(self, engine: sa.Engine, rng: random.Random | None = None) -> None:
        self.engine = engine
        self._rng = rng or random.Random()

    def versions(self, schedule_id: str) -> list[dict[str, Any]]:
        query = sa.select(V).where(V.c.schedule_id == schedule_id).order_by(V.c.version)
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(query)]

    def jittered(self, when: dt.datetime | None, options: Options) -> dt.datetime | None:
        """When a fire due at ``when`` is made: later by up to the schedule's ``jitter``."""
        if when is None or not options.jitter:
            return when
        return when + dt.timedelta(seconds=self._rng.uniform(0, options.jitter))

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
        archived: bool | None = False,
    ) -> list[ScheduleRecord]:
        """Newest first. ``archived``: ``False`` those not archived, ``True`` archived ones
        only, ``None`` both. ``name``: whose name holds it (any case); ``next_after`` and
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
        if archived is not None:
            query = query.where(
                S.c.archived_at.is_not(None) if archived else S.c.archived_at.is_(None)
            )
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

    def version(self, schedule_id: str, version: int) -> dict[str, Any] | None:
        """The definition of one version (``None``: no such version)."""
        query = sa.select(V).where(V.c.schedule_id == schedule_id, V.c.version == version)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return row._asdict() if row is not None else None
