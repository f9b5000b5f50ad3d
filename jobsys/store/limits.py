"""Concurrency slots in the run store, for the jobs that declare a limit (``flow.py``), and
the moves of a run that waits on a limit without using an attempt.

A slot is a running run of the job (and key) whose lease has not expired: the run records
are the slots, so a slot held by a dead worker frees itself when that lease expires, and no
counter kept anywhere else can drift. ``claim`` checks and takes a slot in one transaction
that holds a lock of the job (or of the job and key): ``pg_advisory_xact_lock`` on
PostgreSQL, the database's write lock (``BEGIN IMMEDIATE``) on SQLite, so two workers of any
nodes cannot both take the last slot. A run with no free slot goes back to ``pending``,
``gate`` ``concurrency``, with no message anywhere; the end of a run that held a slot (or a
reaper's pass, for a worker that died) publishes the next ones (``wake``), each guarded by its
message token so that two workers never publish one twice.

Jobs without a limit never come here: their claim is ``hotsql``'s one statement.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
from typing import Any

import sqlalchemy as sa

from jobsys.declare.flow import FlowLimits
from jobsys.store import database, pauses, run_states, schema
from jobsys.store.records import RunRecord, record

T = schema.runs
CONCURRENCY = "concurrency"
"""``gate`` of a run waiting for a free slot."""
REASONS = ("concurrency_limit", "rate_limit", "backoff")
"""``waiting["reason"]`` of a run that waits on a limit (``jobsys_runs_waiting_on_limit``)."""
_WAITING = run_states.values(run_states.WAITING)
_RUNNING = run_states.RunState.RUNNING.value
_PENDING = run_states.RunState.PENDING.value
FULL = "full"
"""``claim``'s answer when the run has no free slot and now waits for one."""


@dataclasses.dataclass(frozen=True)
class Deferred:
    """A run sent back to pending by ``defer``: its new message token, and whether it waits
    in the store (due later than the delay horizon: a reaper publishes it when due)."""

    dispatch: int
    held: bool


def lock_id(text: str) -> int:
    """A signed 64-bit number for ``text``: the key of a PostgreSQL advisory lock."""
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True
    )


def _locked(engine: sa.Engine, name: str) -> contextlib.AbstractContextManager[sa.Connection]:
    """A transaction holding the lock ``name`` until it ends (committed at the end of the
    block, rolled back if it raises)."""
    return database.locked(engine, lock_id(name))


def _lock_name(job: str, limits: FlowLimits, key: str | None, tenant: str | None) -> str:
    """One lock per job when the job has a limit of its own, else one per job and key."""
    name = f"jobsys-slot:{job}" if tenant is None else f"jobsys-slot:{tenant}\x00{job}"
    if limits.max_concurrency is not None or key is None:
        return name
    return f"{name}\x00{key}"


_HELD = (
    T.c.state == _RUNNING,
    T.c.job == sa.bindparam("p_job"),
    T.c.lease_expires_at > sa.bindparam("p_now", type_=schema.UTCDateTime),
)
_BY_KEY = T.c.limit_key == sa.bindparam("p_key")
_BY_TENANT = T.c.tenant == sa.bindparam("p_tenant")
_COUNTS = {
    (keyed, tenanted): sa.select(sa.func.count()).where(
        *_HELD, *([_BY_KEY] if keyed else []), *([_BY_TENANT] if tenanted else [])
    )
    for keyed in (False, True)
    for tenanted in (False, True)
}
"""Slots held: running runs of the job (and key, and tenant) whose lease holds. Built once:
building a statement per claim cost more than running it."""


def _running(
    conn: sa.Connection, job: str, key: str | None, now: dt.datetime, tenant: str | None
) -> int:
    """Slots held: running runs of ``job`` (with ``key``, unless ``None``; of ``tenant``,
    unless ``None``: a job registered at runtime is its tenant's) whose lease holds."""
    query = _COUNTS[(key is not None, tenant is not None)]
    params = {"p_job": job, "p_now": now, "p_key": key, "p_tenant": tenant}
    return int(conn.execute(query, params).scalar() or 0)


def full(
    conn: sa.Connection,
    job: str,
    limits: FlowLimits,
    key: str | None,
    now: dt.datetime,
    tenant: str | None = None,
) -> str | None:
    """Why no slot is free for a run of ``job`` with ``key`` (``None``: one is)."""
    if limits.max_concurrency is not None:
        held = _running(conn, job, None, now, tenant)
        if held >= limits.max_concurrency:
            return (
                f"waiting for a free slot: {held} runs of {job} are running, its "
                f"max_concurrency is {limits.max_concurrency}"
            )
    slots = limits.slots()
    if slots is not None:
        held = _running(conn, job, key or "", now, tenant)
        if held >= slots:
            return (
                f"waiting for a free slot: {held} runs of {job} with {limits.concurrency_key} "
                f"{key!r} are running, its per_key is {slots}"
            )
    return None


def free(
    conn: sa.Connection,
    job: str,
    limits: FlowLimits,
    key: str | None,
    now: dt.datetime,
    tenant: str | None = None,
) -> int:
    """Free slots for a run of ``job`` with ``key``."""
    left = []
    if limits.max_concurrency is not None:
        left.append(limits.max_concurrency - _running(conn, job, None, now, tenant))
    slots = limits.slots()
    if slots is not None:
        left.append(slots - _running(conn, job, key or "", now, tenant))
    return max(0, min(left)) if left else 0


def waiting_for_slot(message: str, key: str | None, now: dt.datetime) -> dict[str, Any]:
    out: dict[str, Any] = {
        "reason": "concurrency_limit",
        "message": message,
        "since": now.astimezone(dt.UTC).isoformat(),
    }
    if key is not None:
        out["key"] = key
    return out


_OURS = (
    T.c.id == sa.bindparam("p_rid"),
    T.c.dispatch == sa.bindparam("p_dispatch"),
    T.c.state.in_(_WAITING),
    T.c.cancel_requested.is_(False),
    sa.text(pauses.NOT_PAUSED),  # a paused run is parked instead (``pauses.py``)
)
_KEY = sa.select(T.c.limit_key).where(T.c.id == sa.bindparam("p_rid"))
_GATE = (
    T.update()
    .where(*_OURS)
    .values(
        gate=CONCURRENCY,
        dispatch=T.c.dispatch + 1,
        published_at=sa.bindparam("p_now", type_=schema.UTCDateTime),
        waiting=sa.bindparam("p_waiting", type_=schema.JSON),
    )
)
_CLAIMED = (
    T.c.attempts,
    T.c.meta,
    T.c.schedule_id,
    T.c.fire_at,
    T.c.trigger,
    T.c.input,
    T.c.principal,
    T.c.sealed,
    T.c.workflow_id,
    T.c.timeout,
    T.c.max_attempts,
    T.c.has_dependents,
    T.c.priority,
)


_CLAIM = (
    T.update()
    .where(*_OURS)
    .values(
        state=_RUNNING,
        attempts=T.c.attempts + 1,
        started_at=sa.func.coalesce(
            T.c.started_at, sa.bindparam("p_now", type_=schema.UTCDateTime)
        ),
        lease_expires_at=sa.bindparam("p_lease", type_=schema.UTCDateTime),
        deadline_at=sa.bindparam("p_deadline", type_=schema.UTCDateTime),
        worker=sa.bindparam("p_worker"),
        worker_pid=sa.bindparam("p_pid"),
        next_attempt_at=None,
        waiting=sa.null(),
        gate=None,
    )
    .returning(*_CLAIMED)
)
"""``hotsql``'s claim, with the same values back, for a run that took a slot."""


def claim(
    engine: sa.Engine,
    job: str,
    limits: FlowLimits,
    run_id: str,
    dispatch: int,
    now: dt.datetime,
    lease_at: dt.datetime,
    deadline: dt.datetime,
    worker: str,
    pid: int,
    tenant: str | None = None,
) -> dict[str, Any] | str | None:
    """pending/retrying -> running if a slot of the run's job (and key) is free, as
    ``hotsql.claim`` does (the same values back); ``FULL`` if none is: the run is pending
    again, waiting for one (``gate``), its message used up; ``None`` for a stale message."""
    with engine.connect() as conn:
        key = conn.execute(_KEY, {"p_rid": run_id}).scalar()
    ours = {"p_rid": run_id, "p_dispatch": dispatch}
    with _locked(engine, _lock_name(job, limits, key, tenant)) as conn:
        why = full(conn, job, limits, key, now, tenant)
        if why is not None:
            waiting = waiting_for_slot(why, key, now)
            moved = conn.execute(_GATE, {**ours, "p_now": now, "p_waiting": waiting}).rowcount
            return FULL if moved else None
        row = conn.execute(
            _CLAIM,
            {
                **ours,
                "p_now": now,
                "p_lease": lease_at,
                "p_deadline": deadline,
                "p_worker": worker,
                "p_pid": pid,
            },
        ).first()
    if row is None:
        return None
    return {
        "attempt": int(row.attempts),
        "meta": dict(row.meta or {}),
        "schedule_id": row.schedule_id,
        "fire_at": row.fire_at,
        "trigger": row.trigger,
        "input": row.input,
        "principal": row.principal,
        "sealed": row.sealed,
        "workflow_id": row.workflow_id,
        "timeout": float(row.timeout),
        "max_attempts": int(row.max_attempts),
        "has_dependents": bool(row.has_dependents),
        "priority": int(row.priority),
    }


def wake(
    engine: sa.Engine,
    job: str,
    limits: FlowLimits | None,
    key: str | None,
    count: int,
    now: dt.datetime,
    tenant: str | None = None,
) -> list[RunRecord]:
    """Take up to ``count`` runs of ``job`` (with ``key``, unless ``None``) off the wait for a
    slot, highest priority first, then oldest: each is stamped published (its ``gate`` and
    ``waiting`` cleared) by one statement guarded by its message token, so that of two
    processes waking it one gets it. Returns those this call took, for it to publish.

    Done under the lock a claim of such a run takes (``limits``: the job's), so that a claim
    that found no free slot just before a run ended has made its run wait by then, and is
    woken here: no wake-up is lost between the two."""
    if count < 1:
        return []
    where = [T.c.gate.is_not(None), T.c.job == job, T.c.state.in_(_WAITING)]
    if key is not None:
        where.append(T.c.limit_key == key)
    if tenant is not None:
        where.append(T.c.tenant == tenant)
    query = (
        sa.select(T.c.id, T.c.dispatch)
        .where(*where)
        .order_by(T.c.priority.desc(), T.c.created_at)
        .limit(count)
    )
    woken: list[str] = []
    lock = _lock_name(job, limits or FlowLimits(), key, tenant)
    with _locked(engine, lock) as conn:
        for run_id, dispatch in conn.execute(query).all():
            moved = conn.execute(
                T.update()
                .where(T.c.id == run_id, T.c.dispatch == dispatch, T.c.gate.is_not(None))
                .values(gate=None, waiting=sa.null(), published_at=now)
            ).rowcount
            if moved:
                woken.append(str(run_id))
        if not woken:
            return []
        rows = conn.execute(sa.select(T).where(T.c.id.in_(woken))).all()
    found = {r.id: r for r in map(record, rows)}
    return [found[i] for i in woken if i in found]


def gated_groups(engine: sa.Engine, limit: int = 200) -> list[tuple[str, str, str | None]]:
    """(job, tenant, key) of the runs waiting for a slot: what a reaper's pass looks at."""
    query = (
        sa.select(T.c.job, T.c.tenant, T.c.limit_key)
        .where(T.c.gate.is_not(None), T.c.state == _PENDING)
        .distinct()
        .limit(limit)
    )
    with engine.connect() as conn:
        return [(str(j), str(t), k) for j, t, k in conn.execute(query).all()]


def free_slots(
    engine: sa.Engine,
    job: str,
    limits: FlowLimits,
    key: str | None,
    now: dt.datetime,
    tenant: str | None = None,
) -> int:
    with engine.connect() as conn:
        return free(conn, job, limits, key, now, tenant)


def key_of_run(engine: sa.Engine, run_id: str) -> tuple[str | None, str] | None:
    """The run's concurrency key and tenant (``None`` if there is no such run)."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(T.c.limit_key, T.c.tenant).where(T.c.id == run_id)).first()
    return None if row is None else (row.limit_key, str(row.tenant))


def defer(
    engine: sa.Engine,
    run_id: str,
    attempt: int,
    until: dt.datetime,
    waiting: dict[str, Any],
    horizon: float,
    now: dt.datetime,
) -> Deferred | None:
    """running -> pending until ``until``, without using an attempt (``attempts`` is given
    back: the next start is attempt ``attempt`` again), saying why (``waiting``). Due within
    ``horizon`` seconds: stamped published (the caller publishes it with the delay as the
    countdown); later: kept in the store, unpublished, for a reaper to publish when due
    (``claim_due``). ``None`` if the attempt is not running any more, or was asked to
    cancel."""
    held = until > now + dt.timedelta(seconds=horizon)
    query = (
        T.update()
        .where(
            T.c.id == run_id,
            T.c.attempts == attempt,
            T.c.state == _RUNNING,
            T.c.cancel_requested.is_(False),
        )
        .values(
            state=_PENDING,
            attempts=T.c.attempts - 1,
            dispatch=T.c.dispatch + 1,
            started_at=sa.case((T.c.attempts == 1, sa.null()), else_=T.c.started_at),
            lease_expires_at=None,
            deadline_at=None,
            next_attempt_at=until,
            waiting=waiting,
            published_at=None if held else now,
        )
        .returning(T.c.dispatch)
    )
    with engine.begin() as conn:
        row = conn.execute(query).first()
    return None if row is None else Deferred(int(row.dispatch), held)


def waiting_on_limit(engine: sa.Engine) -> dict[str, int]:
    """Runs waiting on a limit, by reason (``REASONS``)."""
    reason = T.c.waiting["reason"].as_string()
    query = (
        sa.select(reason, sa.func.count())
        .where(
            T.c.state == _PENDING,
            sa.or_(T.c.gate.is_not(None), T.c.next_attempt_at.is_not(None)),
            reason.in_(REASONS),
        )
        .group_by(reason)
    )
    with engine.connect() as conn:
        found = {str(r): int(n) for r, n in conn.execute(query).all()}
    return {r: found.get(r, 0) for r in REASONS}
