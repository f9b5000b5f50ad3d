"""Run records: the states, the record, and ``RunStore``, which makes every change of a run.

Runs are inserted by ``RunStore`` (submits, retries, workflow steps) and by ``firing.py`` (the
runs of schedule fires, a batch at a time through ``bulksql.py``); after that every change of a
run record goes through ``RunStore``, its hottest statements (claim, complete) run on the
driver by ``hotsql.py``. (``jobsys bench`` also writes rows of its own to measure with.)

Each state transition is one guarded ``UPDATE ... WHERE state IN (allowed) AND attempts = ...``:
a row changes only if its current state allows the move, so a redelivered, late or duplicate
message can never corrupt a finished record. Functions that compare against "now" take it from
the caller.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Self

import sqlalchemy as sa

from jobsys.base import errors
from jobsys.store import database, hotsql, migrations, schema, search

T = schema.runs


class RunState(enum.StrEnum):
    PENDING = "pending"
    """Recorded and published; waiting for a worker."""
    RUNNING = "running"
    """A worker holds it under a lease."""
    RETRYING = "retrying"
    """An attempt failed; the next one is published with a delay."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"
    """Waits for the runs it depends on; then pending, or failed (reason ``dependency``)."""


TERMINAL = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED})
WAITING = frozenset({RunState.PENDING, RunState.RETRYING})
ALLOWED: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.FAILED}),
    RunState.RETRYING: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.FAILED}),
    RunState.RUNNING: frozenset(
        {
            RunState.COMPLETED,
            RunState.FAILED,
            RunState.CANCELLED,
            RunState.RETRYING,
            RunState.PENDING,
        }
    ),
    RunState.BLOCKED: frozenset({RunState.PENDING, RunState.CANCELLED, RunState.FAILED}),
    RunState.COMPLETED: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.CANCELLED: frozenset(),
}
"""The state machine: the moves each state allows. ``running -> pending`` is the reaper's."""


def can_move(current: RunState, target: RunState) -> bool:
    return target in ALLOWED[current]


def sources(target: RunState) -> list[str]:
    """The states from which ``target`` may be reached (the guard of an UPDATE)."""
    return [s.value for s, allowed in ALLOWED.items() if target in allowed]


def as_json(record: Any) -> dict[str, Any]:
    """A record dataclass as JSON-ready values: times in ISO 8601, enums by value, and never
    its ``sealed`` secrets."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        if field.name == "sealed":
            continue
        value = getattr(record, field.name)
        if isinstance(value, dt.datetime):
            value = value.isoformat()
        elif isinstance(value, enum.Enum):
            value = value.value
        out[field.name] = value
    return out


NUL_MESSAGE = "contains a NUL character (\\u0000), which the run store cannot keep; remove it"


def nul_locs(value: Any, limit: int = 5) -> list[list[Any]]:
    """Where the JSON ``value`` holds a NUL character, in a string or a key (at most
    ``limit`` places): PostgreSQL keeps one neither in ``jsonb`` nor in text, so such a value
    is refused before it is written (the same on every backend)."""
    found: list[list[Any]] = []
    todo: list[tuple[Any, list[Any]]] = [(value, [])]
    while todo and len(found) < limit:
        item, loc = todo.pop()
        if isinstance(item, str):
            if "\x00" in item:
                found.append(loc)
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and "\x00" in key:
                    key = without_nul(key)
                    found.append([*loc, key])
                todo.append((child, [*loc, key]))
        elif isinstance(item, list | tuple):
            todo.extend((child, [*loc, i]) for i, child in enumerate(item))
    return found


def nul_errors(value: Any, *prefix: Any) -> list[dict[str, Any]]:
    """``nul_locs`` as field errors (``InvalidInput``'s shape), under ``prefix``."""
    return [
        {"loc": [*prefix, *loc], "type": "value_error", "msg": NUL_MESSAGE}
        for loc in nul_locs(value)
    ]


def without_nul(text: str) -> str:
    """``text`` with each NUL character written ``\\x00`` (log lines, messages, errors)."""
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_run_id() -> str:
    return uuid.uuid4().hex


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One run, as stored. Times are UTC; durations are seconds."""

    id: str
    job: str
    job_version: str
    state: RunState
    queue: str
    priority: int
    input: dict[str, Any]
    output: Any
    error: dict[str, Any] | None
    """``type``, ``message``, ``traceback`` and ``reason`` (exception, timeout, worker_lost)."""
    attempts: int
    """Attempts started so far (1 after the first start)."""
    max_attempts: int
    timeout: float
    dispatch: int
    """Token of the current message; a message with an older token is stale and ignored."""
    lost: int
    """Times a worker vanished while running this run."""
    progress: dict[str, Any] | None
    meta: dict[str, Any]
    tags: list[str]
    principal: dict[str, Any]
    principal_id: str
    tenant: str
    idempotency_key: str | None
    parent_id: str | None
    schedule_id: str | None
    workflow_id: str | None
    cancel_requested: bool
    worker: str | None
    worker_pid: int | None
    created_at: dt.datetime
    published_at: dt.datetime | None
    started_at: dt.datetime | None
    """When the first attempt started."""
    finished_at: dt.datetime | None
    duration: float | None
    """Seconds from the first start to the end."""
    lease_expires_at: dt.datetime | None
    deadline_at: dt.datetime | None
    next_attempt_at: dt.datetime | None
    schedule_version: int | None = None
    fire_at: dt.datetime | None = None
    """For a run a schedule made: the fire it belongs to (the cadence's time, UTC)."""
    trigger: str | None = None
    """``scheduled``, ``manual`` (trigger now) or ``catch-up`` (after downtime)."""
    fire_key: str | None = None
    has_dependents: bool | None = None
    waiting: dict[str, Any] | None = None
    """Why a waiting run waits, when a worker found out: ``reason`` (``no_worker``: no live
    worker knows its job; ``parked``: the worker that took its message does not know the job,
    others do), ``message``, ``worker`` and ``since``. Cleared when the run starts or ends."""
    withheld: str | None = None
    """Set (saying why) when the reader may list this run but not read it: its input, output,
    error and progress are left out (``Client.shown``); never stored."""
    sealed: str | None = None
    """The secret input values, encrypted; never shown (``input`` holds ``**********``)."""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_json(self) -> dict[str, Any]:
        return as_json(self)


@dataclasses.dataclass(frozen=True)
class LogLine:
    id: int
    run_id: str
    attempt: int
    at: dt.datetime
    message: str


@dataclasses.dataclass(frozen=True)
class Claim:
    """What a worker gets when it claims a run: the attempt it now owns."""

    run_id: str
    attempt: int
    meta: dict[str, Any]
    schedule_id: str | None = None
    fire_at: dt.datetime | None = None
    trigger: str | None = None
    input: Any = None
    principal: dict[str, Any] = dataclasses.field(default_factory=dict)
    sealed: str | None = None
    """The run's secret input values, encrypted (``sealing.py``)."""
    workflow_id: str | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    """The run's own limits (a workflow step may override its job's)."""
    has_dependents: bool = False
    """Runs wait for this one: its end must release them."""


@dataclasses.dataclass(frozen=True)
class RunFilter:
    job: str | None = None
    state: RunState | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    tag: str | None = None
    principal_id: str | None = None
    tenant: str | None = None
    schedule_id: str | None = None
    """Only the runs this schedule made."""
    workflow_id: str | None = None
    """Only the steps of this workflow run (``wf_...``)."""
    parent_id: str | None = None
    """Only the runs made from this one (its retries)."""
    text: str | None = None
    """Keywords: runs whose error or logs hold all of them (``search.py``)..."""
    text_jobs: tuple[str, ...] = ()
    """...or whose job is one of these (the caller matched names, descriptions and tags)."""
    jobs: tuple[str, ...] | None = None
    """Only runs of these jobs (the ones the principal may list); ``None``: any job."""
    limit: int = 50


@dataclasses.dataclass(frozen=True)
class ReapResult:
    requeued: list[RunRecord]
    failed: list[str]


def _record(row: sa.Row[Any]) -> RunRecord:
    data = row._asdict()
    data["state"] = RunState(data["state"])
    return RunRecord(**data)


class RunStore:
    """Every read and write of run records. One instance per process, shared by threads."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.worker_name = socket.gethostname()
        self._hot = hotsql.HotPath(engine)
        self._has_tag = _has_tag(engine.dialect.name)

    @classmethod
    def open(cls, url: str) -> Self:
        engine = database.make_engine(url)
        migrations.migrate(engine)
        return cls(engine)

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

    # --- producer side ---------------------------------------------------------------------

    def insert(self, rows: Sequence[dict[str, Any]], now: dt.datetime | None = None) -> bool:
        """Insert pending runs in one statement; ``False`` if a single run's idempotency key
        is taken (then ``find_key`` gives the run that holds it)."""
        now = now or utcnow()
        defaults = _pending(now)
        full = [{**defaults, **row} for row in rows]
        try:
            self._hot.insert(full)
        except self._hot.integrity_errors:
            if len(full) == 1 and full[0].get("idempotency_key"):
                return False
            raise
        return True

    def insert_new(self, rows: Sequence[dict[str, Any]]) -> bool:
        """Insert rows that carry idempotency keys; ``False`` (nothing inserted) if one of the
        keys is taken: someone inserted them first."""
        now = utcnow()
        defaults = _pending(now)
        try:
            self._hot.insert([{**defaults, **row} for row in rows])
        except self._hot.integrity_errors:
            return False
        return True

    def create(self, values: dict[str, Any], now: dt.datetime | None = None) -> RunRecord | None:
        """Insert one pending run and read it back; ``None`` if its idempotency key is taken."""
        if not self.insert([values], now):
            return None
        return self.get(values["id"])

    def find_key(self, tenant: str, job: str, key: str) -> RunRecord | None:
        """The run of ``job`` in ``tenant`` that holds idempotency key ``key`` (keys are
        unique per tenant and job)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(T).where(T.c.tenant == tenant, T.c.job == job, T.c.idempotency_key == key)
            ).first()
        return _record(row) if row else None

    def mark_published(self, run_id: str, dispatch: int, now: dt.datetime | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                T.update()
                .where(T.c.id == run_id, T.c.dispatch == dispatch)
                .values(published_at=now or utcnow())
            )

    def mark_published_many(self, sent: Sequence[tuple[str, dt.datetime]]) -> None:
        """Stamp the first publish of new runs (a beat's fires): (run id, when it was sent)."""
        if sent:
            with self.engine.begin() as conn:  # one statement, executed for every run at once
                conn.execute(_MARK_PUBLISHED, [{"rid": i, "at": at} for i, at in sent])

    def mark_waiting(self, run_id: str, dispatch: int | None, waiting: dict[str, Any]) -> bool:
        """Say why a waiting run waits (``RunRecord.waiting``), if it still waits for the
        message of token ``dispatch`` (any token if ``None``). Off the per-job path: written
        only for a message its worker cannot run."""
        guard = [T.c.id == run_id, T.c.state.in_([s.value for s in WAITING])]
        if dispatch is not None:
            guard.append(T.c.dispatch == dispatch)
        with self.engine.begin() as conn:
            return bool(conn.execute(T.update().where(*guard).values(waiting=waiting)).rowcount)

    def fail_unpublished(self, run_id: str, error: dict[str, Any]) -> bool:
        """The first publish failed: end the run failed with the broker error."""
        return self._finish(run_id, None, RunState.FAILED, {"error": error})

    # --- reads -----------------------------------------------------------------------------

    def get(self, run_id: str, tenant: str | None = None) -> RunRecord:
        with self.engine.connect() as conn:
            if tenant is None:
                row = conn.execute(_GET, {"rid": run_id}).first()
            else:
                row = conn.execute(_GET_IN_TENANT, {"rid": run_id, "tenant": tenant}).first()
        if row is None:
            raise errors.RunNotFound(run_id)
        return _record(row)

    def select(self, f: RunFilter) -> list[RunRecord]:
        query = sa.select(T).order_by(T.c.created_at.desc(), T.c.id.desc()).limit(f.limit)
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
        if f.tag is not None:  # in SQL, so that the limit counts tagged runs only
            query = query.where(self._has_tag).params(tag_json=json.dumps([f.tag]))
        if f.text is not None:
            query = query.where(self._text_clause(f.text, f.text_jobs, f.limit))
        if f.jobs is not None:
            query = query.where(T.c.job.in_(f.jobs))
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query)]

    def _text_clause(self, text: str, jobs: tuple[str, ...], limit: int) -> Any:
        window = max(search.SEARCH_WINDOW, 20 * limit)
        matched = search.matching_runs(self.engine.dialect.name, text, window)
        if matched is None:
            return sa.false()
        clause = T.c.id.in_(matched)
        return sa.or_(clause, T.c.job.in_(jobs)) if jobs else clause

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(T)).scalar_one())

    def logs(self, run_id: str, after_id: int = 0) -> list[LogLine]:
        L = schema.run_logs
        query = sa.select(L).where(L.c.run_id == run_id, L.c.id > after_id).order_by(L.c.id)
        with self.engine.connect() as conn:
            return [LogLine(**r._asdict()) for r in conn.execute(query)]

    # --- worker side -----------------------------------------------------------------------

    def claim(
        self,
        run_id: str,
        dispatch: int,
        lease: float,
        timeout: float,
        now: dt.datetime | None = None,
    ) -> Claim | None:
        """pending/retrying -> running for the holder of message token ``dispatch``.

        Returns ``None`` when the message is stale or a duplicate: the run has moved on.
        """
        now = now or utcnow()
        claimed = self._hot.claim(
            run_id,
            dispatch,
            now,
            lease_at=now + dt.timedelta(seconds=lease),
            deadline=now + dt.timedelta(seconds=timeout),
            worker=self.worker_name,
            pid=os.getpid(),
        )
        if claimed is None:
            return None
        return Claim(run_id, **claimed)

    # --- dependencies between runs ----------------------------------------------------------

    def add_dependencies(self, run_id: str, depends_on: Sequence[str]) -> None:
        """Record what a (blocked) run waits for; written before the run itself. The runs it
        waits for are marked, so that only their ends look for runs to release."""
        with self.engine.begin() as conn:
            conn.execute(
                schema.run_deps.insert(), [{"run_id": run_id, "depends_on": d} for d in depends_on]
            )
            conn.execute(T.update().where(T.c.id.in_(depends_on)).values(has_dependents=True))

    def dependents(self, run_id: str) -> list[str]:
        """The runs that wait for ``run_id`` (one indexed read when a run ends)."""
        return self._hot.dependents(run_id)

    def release(self, run_id: str, now: dt.datetime | None = None) -> RunRecord | None:
        """A blocked run whose dependencies have all ended: pending (returned, to publish) if
        they completed or it runs anyway; failed with reason ``dependency`` otherwise."""
        D = schema.run_deps
        with self.engine.connect() as conn:
            state = conn.execute(sa.select(T.c.state).where(T.c.id == run_id)).scalar()
            if state != RunState.BLOCKED.value:
                return None
            deps = conn.execute(
                sa.select(T.c.id, T.c.state)
                .join(D, D.c.depends_on == T.c.id)
                .where(D.c.run_id == run_id)
            ).all()
        if any(RunState(s) not in TERMINAL for _, s in deps):
            return None
        record = self.get(run_id)
        failed = [i for i, s in deps if s != RunState.COMPLETED.value]
        if failed and not record.meta.get("run_anyway"):
            error = {
                "type": "DependencyFailed",
                "message": f"run {failed[0]} it depends on did not complete",
                "reason": "dependency",
                "traceback": None,
            }
            self._finish(run_id, None, RunState.FAILED, {"error": error}, now=now)
            return None
        with self.engine.begin() as conn:
            moved = conn.execute(
                T.update()
                .where(T.c.id == run_id, T.c.state == RunState.BLOCKED.value)
                .values(state=RunState.PENDING.value, published_at=now or utcnow())
            ).rowcount
        return self.get(run_id) if moved == 1 else None

    def blocked(self, limit: int = 200) -> list[str]:
        """Blocked runs, for the reaper to release those whose dependencies have ended."""
        query = sa.select(T.c.id).where(T.c.state == RunState.BLOCKED.value).limit(limit)
        with self.engine.connect() as conn:
            return [str(r.id) for r in conn.execute(query)]

    def outputs(self, run_ids: Sequence[str]) -> dict[str, Any]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(T.c.id, T.c.output).where(T.c.id.in_(run_ids)))
            return {str(i): output for i, output in rows}

    def set_deadline(self, run_id: str, attempt: int, deadline: dt.datetime) -> None:
        """The hard deadline of a run whose timeout is not its job's (a workflow step's)."""
        with self.engine.begin() as conn:
            conn.execute(
                T.update()
                .where(T.c.id == run_id, T.c.attempts == attempt)
                .values(deadline_at=deadline)
            )

    def broken(self, exc: BaseException) -> bool:
        """``exc`` says the database could not be reached or is busy (try again later),
        rather than that it refused a statement's values."""
        return isinstance(exc, self._hot.unreachable)

    def complete(self, run_id: str, attempt: int, output: Any) -> bool:
        """running -> completed, for the attempt that holds the run."""
        return self._hot.complete(run_id, attempt, output, utcnow())

    def fail(self, run_id: str, attempt: int | None, error: dict[str, Any]) -> bool:
        return self._finish(run_id, attempt, RunState.FAILED, {"error": error})

    def cancelled(self, run_id: str, attempt: int, error: dict[str, Any]) -> bool:
        return self._finish(run_id, attempt, RunState.CANCELLED, {"error": error})

    def _finish(
        self,
        run_id: str,
        attempt: int | None,
        state: RunState,
        values: dict[str, Any],
        also: tuple[Any, ...] = (),
        now: dt.datetime | None = None,
    ) -> bool:
        """The one writer of terminal states: guarded by the state machine, by the attempt
        that holds the run (if given) and by the ``also`` conditions."""
        now = now or utcnow()
        guard = [T.c.id == run_id, T.c.state.in_(sources(state)), *also]
        if attempt is not None:
            guard += [T.c.attempts == attempt, T.c.state == RunState.RUNNING.value]
        duration = sa.case(
            (T.c.started_at.is_(None), None),
            else_=sa.literal(now.timestamp()) - _epoch(T.c.started_at, self.engine),
        )
        query = (
            T.update()
            .where(*guard)
            .values(
                state=state.value,
                finished_at=now,
                duration=duration,
                lease_expires_at=None,
                waiting=None,
                **values,
            )
        )
        with self.engine.begin() as conn:
            if conn.execute(query).rowcount != 1:
                return False
            search.index(conn, [(run_id, search.error_text(values.get("error")))])
            return True

    def schedule_retry(
        self, run_id: str, attempt: int, error: dict[str, Any], delay: float
    ) -> int | None:
        """running -> retrying; returns the new message token, or ``None`` if not ours."""
        now = utcnow()
        query = (
            T.update()
            .where(T.c.id == run_id, T.c.attempts == attempt, T.c.state == RunState.RUNNING.value)
            .values(
                state=RunState.RETRYING.value,
                error=error,
                dispatch=T.c.dispatch + 1,
                lease_expires_at=None,
                next_attempt_at=now + dt.timedelta(seconds=delay),
            )
            .returning(T.c.dispatch)
        )
        with self.engine.begin() as conn:
            row = conn.execute(query).first()
        return int(row.dispatch) if row else None

    def hand_back(self, run_id: str, attempt: int, reason: str) -> RunRecord | None:
        """running -> pending for the next worker, when this attempt's worker stops before
        the run ends (its shutdown grace is over, or it exited). A new message token
        (the caller publishes it), and the attempt is given back: ``max_attempts`` grows by
        one, so the run keeps every retry its policy allows. A run asked to cancel ends
        cancelled instead. Returns the record as it now is; ``None`` if not ours."""
        now = utcnow()
        ours = (T.c.id == run_id, T.c.attempts == attempt, T.c.state == RunState.RUNNING.value)
        query = (
            T.update()
            .where(*ours, T.c.cancel_requested.is_(False))
            .values(
                state=RunState.PENDING.value,
                dispatch=T.c.dispatch + 1,
                max_attempts=T.c.max_attempts + 1,
                lease_expires_at=None,
                deadline_at=None,
                published_at=now,  # the reconciler publishes it again if that message is lost
            )
            .returning(T.c.dispatch)
        )
        line = {"run_id": run_id, "attempt": attempt, "at": now, "message": reason}
        with self.engine.begin() as conn:
            done = conn.execute(query).first() is not None
            if done:
                conn.execute(schema.run_logs.insert(), [line])
        if not done:
            error = {
                "type": "RunCancelled",
                "message": "cancelled; its worker stopped before the run did",
                "reason": "cancelled",
                "traceback": None,
            }
            if not self.cancelled(run_id, attempt, error):
                return None
        return self.get(run_id)

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
            return [_record(r) for r in conn.execute(query)]

    def heartbeat(
        self,
        held: Iterable[tuple[str, int]],
        lease: float | None,
        now: dt.datetime | None = None,
    ) -> set[str]:
        """Renew (if ``lease``) the leases of the (run, attempt) pairs held; return those
        asked to cancel."""
        held = list(held)
        if not held:
            return set()
        now = now or utcnow()
        ids = [run_id for run_id, _ in held]
        with self.engine.begin() as conn:
            if lease is not None:
                conn.execute(
                    T.update()
                    .where(
                        T.c.state == RunState.RUNNING.value,
                        # only the attempts held here: a worker whose run was reaped and
                        # started again elsewhere must not keep the new attempt's lease alive
                        sa.or_(*(sa.and_(T.c.id == r, T.c.attempts == a) for r, a in held)),
                    )
                    .values(lease_expires_at=now + dt.timedelta(seconds=lease))
                )
            rows = conn.execute(
                sa.select(T.c.id, T.c.attempts, T.c.cancel_requested).where(T.c.id.in_(ids))
            ).all()
        attempts = dict(held)
        return {r.id for r in rows if r.cancel_requested and attempts.get(r.id) == r.attempts}

    def write_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                T.update()
                .where(T.c.id == run_id, T.c.state == RunState.RUNNING.value)
                .values(progress=progress)
            )

    def write_logs(self, lines: Sequence[dict[str, Any]]) -> None:
        """Append log lines, and index them for search (one entry per run per batch)."""
        if lines:
            by_run: dict[str, list[str]] = {}
            for line in lines:
                by_run.setdefault(line["run_id"], []).append(line["message"])
            with self.engine.begin() as conn:
                conn.execute(schema.run_logs.insert(), list(lines))
                search.index(conn, [(r, "\n".join(m)) for r, m in by_run.items()])

    # --- control ---------------------------------------------------------------------------

    def request_cancel(self, run_id: str, tenant: str | None = None) -> RunRecord:
        """Cancel a waiting run at once; flag a running one for its worker to stop."""
        record = self.get(run_id, tenant)
        if record.terminal:
            raise errors.InvalidTransition(run_id, record.state.value, "cancel")
        now = utcnow()
        with self.engine.begin() as conn:
            done = conn.execute(
                T.update()
                .where(
                    T.c.id == run_id,
                    T.c.state.in_([s.value for s in (*WAITING, RunState.BLOCKED)]),
                )
                .values(
                    state=RunState.CANCELLED.value,
                    cancel_requested=True,
                    finished_at=now,
                    error=_CANCELLED_WAITING,
                    waiting=None,
                )
            ).rowcount
            if done:
                search.index(conn, [(run_id, search.error_text(_CANCELLED_WAITING))])
            else:
                conn.execute(
                    T.update()
                    .where(T.c.id == run_id, T.c.state == RunState.RUNNING.value)
                    .values(cancel_requested=True)
                )
        return self.get(run_id)

    def reap(
        self, now: dt.datetime, max_deliveries: int, hard_grace: float, limit: int = 500
    ) -> ReapResult:
        """Deal with running runs whose lease expired: their worker is gone.

        Past the deadline (timeout + ``hard_grace``): failed with a timeout. Out of attempts or
        lost ``max_deliveries`` times: failed, worker lost. Otherwise back to pending with a
        new message token; the caller publishes the returned records.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(T)
                .where(T.c.state == RunState.RUNNING.value, T.c.lease_expires_at < now)
                .limit(limit)
            ).all()
        requeued, failed = [], []
        for record in map(_record, rows):
            verdict = self._reap_one(record, now, max_deliveries, hard_grace)
            if verdict is True:
                requeued.append(self.get(record.id))
            elif verdict is False:
                failed.append(record.id)
        return ReapResult(requeued, failed)

    def _reap_one(
        self, r: RunRecord, now: dt.datetime, max_deliveries: int, hard_grace: float
    ) -> bool | None:
        reason = None
        if r.deadline_at is not None and now >= r.deadline_at + dt.timedelta(seconds=hard_grace):
            reason = ("timeout", "JobTimeout", f"killed after its {r.timeout:g} s timeout")
        elif r.cancel_requested:
            reason = ("cancelled", "RunCancelled", "cancelled; its worker was lost")
        elif r.attempts >= r.max_attempts or r.lost + 1 >= max_deliveries:
            reason = (
                "worker_lost",
                "WorkerLost",
                f"worker {r.worker} (pid {r.worker_pid}) was lost on attempt {r.attempts}",
            )
        if reason is not None:
            state = RunState.CANCELLED if reason[0] == "cancelled" else RunState.FAILED
            error = {
                "type": reason[1],
                "message": reason[2],
                "reason": reason[0],
                "traceback": None,
            }
            values = {"error": error, "lost": T.c.lost + 1}
            expired = (T.c.lease_expires_at < now,)
            done = self._finish(r.id, r.attempts, state, values, also=expired, now=now)
            return False if done else None
        guard = [
            T.c.id == r.id,
            T.c.state == RunState.RUNNING.value,
            T.c.attempts == r.attempts,
            T.c.lease_expires_at < now,
        ]
        with self.engine.begin() as conn:
            n = conn.execute(
                T.update()
                .where(*guard)
                .values(
                    state=RunState.PENDING.value,
                    dispatch=T.c.dispatch + 1,
                    lost=T.c.lost + 1,
                    lease_expires_at=None,
                    published_at=None,
                )
            ).rowcount
        return True if n else None

    def stale_waiting(
        self, now: dt.datetime, older_than: float, limit: int = 500
    ) -> list[RunRecord]:
        """Waiting runs whose message may be lost: never published, or published long ago."""
        cutoff = now - dt.timedelta(seconds=older_than)
        query = (
            sa.select(T)
            .where(
                T.c.state.in_([s.value for s in WAITING]),
                sa.or_(T.c.published_at.is_(None), T.c.published_at < cutoff),
                T.c.created_at < cutoff,
                sa.or_(T.c.next_attempt_at.is_(None), T.c.next_attempt_at < cutoff),
            )
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query)]


_GET = sa.select(T).where(T.c.id == sa.bindparam("rid"))
_GET_IN_TENANT = _GET.where(T.c.tenant == sa.bindparam("tenant"))
_MARK_PUBLISHED = (
    T.update()
    .where(T.c.id == sa.bindparam("rid"), T.c.dispatch == 1, T.c.published_at.is_(None))
    .values(published_at=sa.bindparam("at"))
)


_CANCELLED_WAITING = {
    "type": "RunCancelled",
    "message": "cancelled before it started",
    "reason": "cancelled",
    "traceback": None,
}


def _pending(now: dt.datetime) -> dict[str, Any]:
    """The columns of a new run that its producer does not choose."""
    return {
        "state": RunState.PENDING.value,
        "attempts": 0,
        "dispatch": 1,
        "lost": 0,
        "cancel_requested": False,
        "created_at": now,
        "published_at": now,
        "meta": {},
        "tags": [],
    }


def _has_tag(dialect: str) -> sa.TextClause:
    """The dialect's test for "the run's tags contain :tag_json's one tag"."""
    return sa.text(
        "jobsys_runs.tags @> CAST(:tag_json AS jsonb)"
        if dialect == "postgresql"
        else "EXISTS (SELECT 1 FROM json_each(jobsys_runs.tags) "
        "WHERE json_each.value = json_extract(:tag_json, '$[0]'))"
    )


def _epoch(column: Any, engine: sa.Engine) -> Any:
    """Seconds since the epoch of a datetime column, in SQL, per dialect."""
    if engine.dialect.name == "postgresql":
        return sa.func.extract("epoch", column)
    return (sa.func.julianday(column) - 2440587.5) * 86400.0
