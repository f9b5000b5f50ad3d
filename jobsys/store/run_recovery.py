"""``Recovery``: the moves of runs that their worker did not make: runs released when the
runs they depend on end, delayed runs queued when they are due, runs handed back by a
stopping worker, runs whose worker was lost (the reaper). A part of ``RunStore``; every
terminal state is written by ``terminal.py``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa

from jobsys.store import actors, schema
from jobsys.store.records import ReapResult, RunRecord, record, utcnow
from jobsys.store.rows import delayed, run_error
from jobsys.store.run_reads import RunReads
from jobsys.store.run_states import TERMINAL, RunState

T = schema.runs
D = schema.run_deps
_DELAYED = (
    T.c.state == sa.literal_column(f"'{RunState.PENDING.value}'"),  # (a literal: see below)
    T.c.published_at.is_(None),
    T.c.next_attempt_at.is_not(None),
)
"""A delayed run not yet published: the rows of the partial index ``ix_jobsys_runs_due``
(``schema.py``), in the index's own words (the state a literal, not a bound parameter), so
that PostgreSQL's planner sees that a query with these conditions may use it."""
_DUE_ON_SQLITE = (
    sa.text(
        "SELECT id FROM jobsys_runs INDEXED BY ix_jobsys_runs_due WHERE state = 'pending' "
        "AND published_at IS NULL AND next_attempt_at IS NOT NULL "
        "AND next_attempt_at <= :until AND job NOT IN :skip "
        "ORDER BY next_attempt_at, priority DESC LIMIT :limit"
    )
    .bindparams(
        sa.bindparam("until", type_=schema.UTCDateTime),
        sa.bindparam("skip", expanding=True),
        sa.bindparam("limit"),
    )
    .columns(T.c.id)
)
"""``claim_due``'s choice on SQLite, which has no statistics to tell that the partial index
holds a few rows and ``state = 'pending'`` many: named (``INDEXED BY``), not guessed."""


class Recovery(RunReads):
    """Dependencies between runs, hand-backs and the reaper's pass."""

    # --- dependencies between runs ----------------------------------------------------------

    def add_dependencies(self, run_id: str, depends_on: Sequence[str]) -> None:
        """Record what a (blocked) run waits for; written before the run itself. The runs it
        waits for are marked, so that only their ends look for runs to release."""
        with self.engine.begin() as conn:
            conn.execute(D.insert(), [{"run_id": run_id, "depends_on": d} for d in depends_on])
            conn.execute(T.update().where(T.c.id.in_(depends_on)).values(has_dependents=True))

    def drop_dependencies(self, run_id: str) -> None:
        """Forget what ``run_id`` was to wait for: the run was not recorded after all (its
        idempotency key was taken). The runs it named keep their mark, which costs only a
        look for dependents when they end."""
        with self.engine.begin() as conn:
            conn.execute(D.delete().where(D.c.run_id == run_id))

    def dependents(self, run_id: str) -> list[str]:
        """The runs that wait for ``run_id`` (one indexed read when a run ends)."""
        return self._hot.dependents(run_id)

    def blocked(self, limit: int = 200) -> list[str]:
        """Blocked runs, for the reaper to release those whose dependencies have ended."""
        query = sa.select(T.c.id).where(T.c.state == RunState.BLOCKED.value).limit(limit)
        with self.engine.connect() as conn:
            return [str(r.id) for r in conn.execute(query)]

    def release_dependents(self, run_id: str | None, horizon: float) -> list[RunRecord]:
        """Release the blocked runs that wait for ``run_id``, which ended (``None``: every
        blocked run, the reaper's pass): each whose dependencies have all ended starts
        (``release``). Returns those now pending, for the caller to publish. The one path
        by which runs are released: when a run ends on a worker, when a run is cancelled,
        and on every reaper pass."""
        waiting = self.blocked() if run_id is None else self.dependents(run_id)
        return [r for d in waiting if (r := self.release(d, horizon)) is not None]

    def release(
        self, run_id: str, horizon: float, now: dt.datetime | None = None
    ) -> RunRecord | None:
        """A blocked run whose dependencies have all ended: pending (returned, to publish) if
        they completed or it runs anyway, unless it is due more than ``horizon`` seconds
        from now (its ``countdown`` or ``start_at``): then it waits in the store, delayed,
        for a reaper to publish when due (``claim_due``), and ``None`` is returned. Failed
        with reason ``dependency`` if one did not complete."""
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
        current = self.get(run_id)
        failed = [i for i, s in deps if s != RunState.COMPLETED.value]
        if failed and not current.meta.get("run_anyway"):
            message = f"run {failed[0]} it depends on did not complete"
            error = run_error("dependency", "DependencyFailed", message)
            self._end.finish(run_id, None, RunState.FAILED, {"error": error}, now=now)
            return None
        now = now or utcnow()
        due = current.next_attempt_at
        held = due is not None and due > now + dt.timedelta(seconds=horizon)
        values: dict[str, Any] = {"state": RunState.PENDING.value, "published_at": now}
        if held:
            assert due is not None
            values.update(published_at=None, waiting=delayed(due, now))
        with self.engine.begin() as conn:
            moved = conn.execute(
                T.update()
                .where(T.c.id == run_id, T.c.state == RunState.BLOCKED.value)
                .values(**values)
            ).rowcount
        return self.get(run_id) if moved == 1 and not held else None

    # --- delayed runs -----------------------------------------------------------------------

    def claim_due(
        self,
        now: dt.datetime,
        horizon: float,
        limit: int = 500,
        skip_jobs: Collection[str] = (),
    ) -> list[RunRecord]:
        """Claim the delayed runs due within ``horizon`` seconds of ``now`` (pending, never
        published, with a start time) for this reaper to publish, earliest first. Each is
        stamped published by the one guarded statement that picks it (on PostgreSQL the
        rows another reaper is claiming are skipped, ``SKIP LOCKED``, and a row it just
        claimed fails the guard; SQLite has one writer at a time), so of the reapers of
        every worker passing at once, one claims each. The caller publishes them with what
        is left of their delay as the countdown, and gives back (``unclaim_publish``) the
        ones it cannot publish. Indexed by ``ix_jobsys_runs_due``, which holds these rows
        only: the cost of a pass does not grow with the runs queued. Runs of ``skip_jobs``
        (jobs this reaper found it does not run) are left out, so that a backlog of another
        catalog's runs cannot fill every pass's ``limit``."""
        until = now + dt.timedelta(seconds=horizon)
        skip = sorted(skip_jobs)
        due: Any = (
            sa.select(T.c.id)
            .where(*_DELAYED, T.c.next_attempt_at <= until, T.c.job.not_in(skip))
            .order_by(T.c.next_attempt_at, T.c.priority.desc())
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if self.engine.dialect.name == "sqlite":  # (no statistics: it would scan by state)
            picked: Any = T.c.id.in_(_DUE_ON_SQLITE.bindparams(until=until, skip=skip, limit=limit))
        else:  # ``= ANY(ARRAY(...))``: the pick is made once. As ``IN (SELECT ... LIMIT)``,
            # PostgreSQL may run the subquery again for each row it updates (a nested-loop
            # semi-join), each time picking rows past those already taken: up to all of them.
            picked = T.c.id == sa.any_(sa.func.array(due.scalar_subquery()))
        query = (
            T.update()
            .where(picked, T.c.published_at.is_(None))
            .values(published_at=now)
            .returning(*T.c)
        )
        with self.engine.begin() as conn:
            claimed = [record(r) for r in conn.execute(query)]
        return sorted(claimed, key=lambda r: (r.next_attempt_at or now, -r.priority))

    # --- a stopping worker ------------------------------------------------------------------

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
            message = "cancelled; its worker stopped before the run did"
            error = run_error("cancelled", "RunCancelled", message)
            if not self._end.finish(run_id, attempt, RunState.CANCELLED, {"error": error}):
                return None
        return self.get(run_id)

    # --- the reaper -------------------------------------------------------------------------

    def reap(
        self,
        now: dt.datetime,
        max_deliveries: int,
        hard_grace: float,
        limit: int = 500,
        *,
        lease: float = 0.0,
        heartbeat: float = 0.0,
    ) -> ReapResult:
        """Deal with running runs whose lease expired: their worker is gone.

        Past the deadline (timeout + ``hard_grace``) with a worker that may still have been
        alive at the deadline: failed with a timeout. A worker renews a lease of ``lease``
        seconds every ``heartbeat`` seconds, so one whose last renewal came more than
        ``heartbeat`` seconds before the deadline died before it: its run was lost, not
        timed out, however late the reaper looks. Out of attempts or lost ``max_deliveries``
        times: failed, worker lost. Otherwise back to pending with a new message token; the
        caller publishes the returned records.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(T)
                .where(T.c.state == RunState.RUNNING.value, T.c.lease_expires_at < now)
                .limit(limit)
            ).all()
        requeued, failed = [], []
        for r in map(record, rows):
            verdict = self._reap_one(r, now, max_deliveries, hard_grace, lease, heartbeat)
            if verdict is True:
                requeued.append(self.get(r.id))
            elif verdict is False:
                failed.append(r.id)
        return ReapResult(requeued, failed)

    def _reap_one(
        self,
        r: RunRecord,
        now: dt.datetime,
        max_deliveries: int,
        hard_grace: float,
        lease: float,
        heartbeat: float,
    ) -> bool | None:
        reason = None
        actor_run = (r.worker or "").startswith(actors.ACTOR_PREFIX)
        if _timed_out(r, now, hard_grace, 0.0 if actor_run else heartbeat - lease):
            reason = ("timeout", "JobTimeout", f"killed after its {r.timeout:g} s timeout")
        elif r.cancel_requested:
            reason = ("cancelled", "RunCancelled", "cancelled; its worker was lost")
        elif actor_run:
            if r.attempts >= r.max_attempts:  # a silent actor: its attempts are used up
                reason = (
                    "timeout",
                    "JobTimeout",
                    f"{r.worker} sent no report within its lease on attempt {r.attempts} "
                    f"of {r.max_attempts}",
                )
        elif r.attempts >= r.max_attempts or r.lost + 1 >= max_deliveries:
            reason = (
                "worker_lost",
                "WorkerLost",
                f"worker {r.worker} (pid {r.worker_pid}) was lost on attempt {r.attempts}",
            )
        if reason is not None:
            state = RunState.CANCELLED if reason[0] == "cancelled" else RunState.FAILED
            values = {"error": run_error(*reason), "lost": T.c.lost + 1}
            expired = (T.c.lease_expires_at < now,)
            done = self._end.finish(r.id, r.attempts, state, values, also=expired, now=now)
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
                    # (an outside actor's run waits for the next actor, with no message)
                    published_at=now if actor_run else None,
                    **({"waiting": actors.waiting(now)} if actor_run else {}),
                )
            ).rowcount
        return True if n else None


def _timed_out(r: RunRecord, now: dt.datetime, hard_grace: float, alive_after: float) -> bool:
    """Whether ``r`` went past its deadline (plus ``hard_grace``) while its holder may still
    have been alive: its lease expiry, moved by ``alive_after`` seconds (the heartbeat minus
    the lease for a worker; 0 for an actor, whose lease never runs past the deadline), is
    at or after the deadline."""
    if r.deadline_at is None or now < r.deadline_at + dt.timedelta(seconds=hard_grace):
        return False
    if r.lease_expires_at is None:
        return True
    return r.lease_expires_at + dt.timedelta(seconds=alive_after) >= r.deadline_at
