"""Paused work: a queue, a job, or everything, of one tenant or of every tenant.

A pause is a row of ``jobsys_pauses`` (scope ``queue``, ``job`` or ``all``; the queue's or
the job's name, ``""`` for all; the tenant whose runs it holds, ``*`` for every tenant; who
paused and when). It is enforced where a run starts: the claim of every run (``hotsql.py``)
holds ``NOT_PAUSED``, a subquery on this small table keyed by scope, name and tenant, so once
``pause`` has returned no run it covers starts, on any worker, with no cache to lag behind.

A message of a paused run is taken off the broker all the same: its claim changes nothing,
and the worker *parks* the run (``park``): it stays pending (or retrying), with no message,
and ``waiting = {"reason": "paused", ...}`` saying what holds it. Nothing holds its message
and nothing polls: the reconciler leaves such runs alone (``run_reads.stale_waiting``).
Resuming deletes the row, then ``claim_released`` takes the parked runs no pause holds any
more, each with a new message token (``dispatch``) in one guarded statement, so that of two
resumers (or a resumer and the reapers, which do the same on every pass, in case a resumer
died in between) one publishes each run, in priority order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Collection
from typing import Any

import sqlalchemy as sa

from jobsys.store import run_states, schema
from jobsys.store.records import RunRecord, as_json, record, utcnow

P = schema.pauses
T = schema.runs

SCOPES = ("queue", "job", "all")
EVERY_TENANT = "*"
"""The tenant of a pause that holds the runs of every tenant (a superadmin's)."""
REASON = "paused"
"""``RunRecord.waiting["reason"]`` of a run a pause holds."""

NOT_PAUSED = (
    "NOT EXISTS (SELECT 1 FROM jobsys_pauses p WHERE p.tenant IN ('*', jobsys_runs.tenant) "
    "AND ((p.scope = 'queue' AND p.name = jobsys_runs.queue) "
    "OR (p.scope = 'job' AND p.name = jobsys_runs.job) OR p.scope = 'all'))"
)
"""SQL: the run of the ``jobsys_runs`` row at hand is held by no pause (the claim's guard)."""


@dataclasses.dataclass(frozen=True)
class Pause:
    """One pause: what it holds (``scope``, ``name``), whose runs (``tenant``, ``*``: every
    tenant's), who paused it and when."""

    scope: str
    name: str
    tenant: str
    paused_by: str
    paused_at: dt.datetime

    def describe(self) -> str:
        what = "everything" if self.scope == "all" else f"{self.scope} {self.name!r}"
        whose = "" if self.tenant == EVERY_TENANT else f" (tenant {self.tenant!r})"
        return f"{what}{whose} paused by {self.paused_by} since {self.paused_at.isoformat()}"

    def to_json(self) -> dict[str, Any]:
        return as_json(self)


def _covering(run: Any = T) -> sa.ColumnElement[bool]:
    """The pauses that hold the run of ``run`` (the ``jobsys_runs`` table or an alias)."""
    return sa.and_(
        P.c.tenant.in_([sa.literal(EVERY_TENANT), run.c.tenant]),
        sa.or_(
            sa.and_(P.c.scope == "queue", P.c.name == run.c.queue),
            sa.and_(P.c.scope == "job", P.c.name == run.c.job),
            P.c.scope == "all",
        ),
    )


def _reason() -> sa.ColumnElement[str]:
    return sa.func.coalesce(T.c.waiting["reason"].as_string(), "")


def is_parked() -> sa.ColumnElement[bool]:
    """A waiting run a pause holds (parked: no message)."""
    return _reason() == REASON


class PauseStore:
    """The pauses of one database, and the runs they hold."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def pause(self, scope: str, name: str, tenant: str, by: str) -> tuple[Pause, bool]:
        """Pause; the pause and whether it is new (an existing one is kept as it was)."""
        now = utcnow()
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(P).where(*_key(scope, name, tenant))).first()
            if found is not None:
                return Pause(**found._asdict()), False
            conn.execute(
                P.insert().values(
                    scope=scope, name=name, tenant=tenant, paused_by=by, paused_at=now
                )
            )
        return Pause(scope, name, tenant, by, now), True

    def resume(
        self,
        scope: str,
        name: str,
        tenant: str | None,
        knows: Callable[[RunRecord], bool] | None = None,
        release_tenant: str | None = None,
        limit: int = 500,
    ) -> tuple[list[Pause], list[RunRecord]]:
        """Delete the pauses of ``scope`` and ``name`` of ``tenant`` (``None``: of every
        tenant); the pauses deleted, and (with ``knows``: which runs the caller can publish)
        the first ``limit`` runs they held, of ``release_tenant`` (``None``: any), taken to
        publish (``claim_released``) in the same transaction: no reaper takes them first."""
        query = P.delete().where(P.c.scope == scope, P.c.name == name)
        if tenant is not None:
            query = query.where(P.c.tenant == tenant)
        with self.engine.begin() as conn:
            gone = [Pause(**r._asdict()) for r in conn.execute(query.returning(*P.c)).all()]
            if not gone or knows is None:
                return gone, []
            found = self._released(conn, release_tenant, limit, ())
            return gone, self._claim(conn, [r for r in found if knows(r)], utcnow())

    def find(self, tenant: str | None = None) -> list[Pause]:
        """The pauses that hold runs of ``tenant`` (theirs and every tenant's; ``None``: all)."""
        query = sa.select(P).order_by(P.c.scope, P.c.name, P.c.tenant)
        if tenant is not None:
            query = query.where(P.c.tenant.in_([EVERY_TENANT, tenant]))
        with self.engine.connect() as conn:
            return [Pause(**r._asdict()) for r in conn.execute(query)]

    def waiting_by_queue(self, tenant: str | None = None) -> dict[str, tuple[int, int]]:
        """Waiting runs by queue: (waiting, of which parked by a pause)."""
        parked = sa.func.sum(sa.case((is_parked(), 1), else_=0))
        query = (
            sa.select(T.c.queue, sa.func.count(), parked)
            .where(T.c.state.in_(run_states.values(run_states.WAITING)))
            .group_by(T.c.queue)
        )
        if tenant is not None:
            query = query.where(T.c.tenant == tenant)
        with self.engine.connect() as conn:
            return {str(q): (int(n), int(p or 0)) for q, n, p in conn.execute(query)}

    def count_parked(self, tenant: str | None = None) -> int:
        """Waiting runs a pause holds (``jobsys_runs_paused``)."""
        query = (
            sa.select(sa.func.count())
            .select_from(T)
            .where(T.c.state.in_(run_states.values(run_states.WAITING)), is_parked())
        )
        if tenant is not None:
            query = query.where(T.c.tenant == tenant)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # --- the worker whose claim a pause refused -----------------------------------------

    def park(self, run_id: str, dispatch: int) -> Pause | None:
        """The run of message token ``dispatch`` waits and a pause holds it: record so on it
        (no message: its next one is sent on resume), and return that pause; ``None`` if its
        message is stale, or no pause holds it (any more)."""
        held = (
            sa.select(P)
            .select_from(T.join(P, _covering()))
            .where(
                T.c.id == run_id,
                T.c.dispatch == dispatch,
                T.c.state.in_(run_states.values(run_states.WAITING)),
            )
            .limit(1)
        )
        with self.engine.begin() as conn:
            row = conn.execute(held).first()
            if row is None:
                return None
            pause = Pause(**row._asdict())
            waiting = {
                "reason": REASON,
                "message": f"{pause.describe()}; the run starts when it is resumed",
                "scope": pause.scope,
                "name": pause.name,
                "by": pause.paused_by,
                "since": pause.paused_at.isoformat(),
            }
            changed = conn.execute(
                T.update()
                .where(
                    T.c.id == run_id,
                    T.c.dispatch == dispatch,
                    T.c.state.in_(run_states.values(run_states.WAITING)),
                    sa.exists(sa.select(P.c.scope).where(_covering())),
                )
                .values(waiting=waiting, published_at=None, next_attempt_at=None)
            ).rowcount
        return pause if changed else None

    # --- resuming ----------------------------------------------------------------------

    def released(
        self, tenant: str | None = None, limit: int = 500, skip_jobs: Collection[str] = ()
    ) -> list[RunRecord]:
        """Parked runs no pause holds any more, highest priority first, then oldest."""
        with self.engine.connect() as conn:
            return self._released(conn, tenant, limit, skip_jobs)

    def claim_released(
        self, found: list[RunRecord], now: dt.datetime | None = None
    ) -> list[RunRecord]:
        """Take ``found`` (``released``) to publish: each gets a new message token and is
        stamped published in one statement, guarded by still being parked and no longer held,
        so of many resumers and reapers one takes each. The runs taken, in ``found``'s order
        (priority), with their new tokens."""
        if not found:
            return []
        with self.engine.begin() as conn:
            return self._claim(conn, found, now or utcnow())

    def _released(
        self, conn: sa.Connection, tenant: str | None, limit: int, skip_jobs: Collection[str]
    ) -> list[RunRecord]:
        query = (
            sa.select(T)
            .where(
                T.c.state.in_(run_states.values(run_states.WAITING)),
                T.c.published_at.is_(None),
                is_parked(),
                ~sa.exists(sa.select(P.c.scope).where(_covering())),
            )
            .order_by(T.c.priority.desc(), T.c.created_at, T.c.id)
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(T.c.tenant == tenant)
        if skip_jobs:
            query = query.where(T.c.job.not_in(sorted(skip_jobs)))
        return [record(r) for r in conn.execute(query)]

    def _claim(
        self, conn: sa.Connection, found: list[RunRecord], now: dt.datetime
    ) -> list[RunRecord]:
        if not found:
            return []
        taken = {
            str(i): int(d)
            for i, d in conn.execute(
                T.update()
                .where(
                    T.c.id.in_([r.id for r in found]),
                    T.c.state.in_(run_states.values(run_states.WAITING)),
                    T.c.published_at.is_(None),
                    is_parked(),
                    ~sa.exists(sa.select(P.c.scope).where(_covering())),
                )
                .values(dispatch=T.c.dispatch + 1, published_at=now, waiting=sa.null())
                .returning(T.c.id, T.c.dispatch)
            )
        }
        return [
            dataclasses.replace(r, dispatch=taken[r.id], published_at=now, waiting=None)
            for r in found
            if r.id in taken
        ]

    def unclaim(self, run: RunRecord, waiting: dict[str, Any] | None) -> None:
        """Give back a run taken by ``claim_released`` that could not be published: parked
        again, so the next resumer or reaper pass takes it."""
        with self.engine.begin() as conn:
            conn.execute(
                T.update()
                .where(
                    T.c.id == run.id,
                    T.c.dispatch == run.dispatch,
                    T.c.state.in_(run_states.values(run_states.WAITING)),
                )
                .values(published_at=None, waiting=waiting or {"reason": REASON})
            )


def _key(scope: str, name: str, tenant: str) -> list[sa.ColumnElement[bool]]:
    return [P.c.scope == scope, P.c.name == name, P.c.tenant == tenant]
