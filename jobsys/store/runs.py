"""``RunStore``: every change of a run record, one method per move of the state machine.

Runs are inserted by ``RunStore`` (submits, retries, workflow steps: rows built by
``rows.new_run``) and by a schedule's fire (``fires.py``: a batch at a time through
``bulksql.py``, rows built by the same constructor); after that every change of a run record
goes through ``RunStore``: its hottest statements (insert, claim) run on the driver
(``hotsql.py``), and every terminal state (completed, failed, cancelled) is written by
``terminal.py``. (``jobsys bench`` also writes rows of its own to measure with.)

Each state transition is one guarded ``UPDATE ... WHERE state IN (allowed) AND attempts = ...``:
a row changes only if its current state allows the move, so a redelivered, late or duplicate
message can never corrupt a finished record. Functions that compare against "now" take it from
the caller.

The parts of the store: the states and their groups (``run_states.py``), the records
(``records.py``), the rows of new runs and their errors (``rows.py``), the reads
(``run_reads.py``), dependencies, hand-backs and the reaper (``run_recovery.py``); their
names stay importable from here.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from jobsys.base import errors
from jobsys.store import events, run_states, schema, search
from jobsys.store.records import (
    NUL_MESSAGE,
    Claim,
    LogLine,
    ReapResult,
    RunFilter,
    RunRecord,
    as_json,
    new_run_id,
    nul_errors,
    nul_locs,
    utcnow,
    without_nul,
)
from jobsys.store.rows import defaults as row_defaults
from jobsys.store.run_recovery import Recovery
from jobsys.store.run_states import (
    ACTIVE,
    ALLOWED,
    CANCEL_AT_ONCE,
    TERMINAL,
    WAITING,
    RunState,
    can_move,
    sources,
)

__all__ = [
    "ACTIVE",
    "ALLOWED",
    "CANCEL_AT_ONCE",
    "NUL_MESSAGE",
    "TERMINAL",
    "WAITING",
    "Claim",
    "LogLine",
    "ReapResult",
    "RunFilter",
    "RunRecord",
    "RunState",
    "RunStore",
    "as_json",
    "can_move",
    "new_run_id",
    "nul_errors",
    "nul_locs",
    "sources",
    "utcnow",
    "without_nul",
]

T = schema.runs


class RunStore(Recovery):
    """Every read and write of run records. One instance per process, shared by threads."""

    # --- producer side ---------------------------------------------------------------------

    def insert(self, rows: Sequence[dict[str, Any]], now: dt.datetime | None = None) -> bool:
        """Insert pending runs (``rows.new_run``; a hand-made row gets ``rows.defaults``) in
        one statement; ``False`` if a single run's idempotency key is taken (then
        ``find_key`` gives the run that holds it)."""
        full = _complete(rows, now)
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
        try:
            self._hot.insert(_complete(rows, None))
        except self._hot.integrity_errors:
            return False
        return True

    def create(self, values: dict[str, Any], now: dt.datetime | None = None) -> RunRecord | None:
        """Insert one pending run and read it back; ``None`` if its idempotency key is taken."""
        if not self.insert([values], now):
            return None
        return self.get(values["id"])

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

    def claim_stale(
        self,
        now: dt.datetime,
        older_than: float,
        limit: int = 500,
        skip_jobs: Collection[str] = (),
    ) -> list[RunRecord]:
        """Claim the waiting runs whose message may be lost (never published, or published
        more than ``older_than`` seconds ago) for this reconciler to publish: each is stamped
        published in the same statement, guarded by that staleness, so of many reconcilers
        passing at once one claims it (PostgreSQL re-checks the guard of a row another
        transaction just changed). Oldest first, by priority."""
        stale = self.stale_waiting(now, older_than, limit, skip_jobs)
        if not stale:
            return []
        cutoff = now - dt.timedelta(seconds=older_than)
        with self.engine.begin() as conn:
            claimed = {
                str(i)
                for (i,) in conn.execute(
                    T.update()
                    .where(
                        T.c.id.in_([r.id for r in stale]),
                        T.c.state.in_(run_states.values(WAITING)),
                        sa.or_(T.c.published_at.is_(None), T.c.published_at < cutoff),
                    )
                    .values(published_at=now)
                    .returning(T.c.id)
                )
            }
        mine = [r for r in stale if r.id in claimed]
        return sorted(mine, key=lambda r: (-r.priority, r.created_at))

    def unclaim_publish(self, run_id: str, published_at: dt.datetime | None) -> None:
        """Give back a claim to publish (``claim_stale``, ``claim_publish``) that was not
        used: the run's publish time as it was, so another process publishes it."""
        with self.engine.begin() as conn:
            conn.execute(
                T.update()
                .where(T.c.id == run_id, T.c.state.in_(run_states.values(WAITING)))
                .values(published_at=published_at)
            )

    def claim_publish(self, run_id: str, now: dt.datetime | None = None) -> bool:
        """Claim a run not yet queued (``mark_unqueued``) for this producer's outbox to send;
        False if it was sent already (a reconciler did) or no longer waits."""
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    T.update()
                    .where(
                        T.c.id == run_id,
                        T.c.state.in_(run_states.values(WAITING)),
                        T.c.published_at.is_(None),
                    )
                    .values(published_at=now or utcnow())
                ).rowcount
            )

    def mark_unqueued(self, run_ids: Sequence[str], waiting: dict[str, Any]) -> None:
        """The broker could not take these new runs: they wait, recorded and not yet queued
        (no publish time, so the reconciler sees them at once), saying why."""
        with self.engine.begin() as conn:
            conn.execute(
                T.update()
                .where(T.c.id.in_(list(run_ids)), T.c.state.in_(run_states.values(WAITING)))
                .values(published_at=None, waiting=waiting)
            )

    def mark_queued(self, run_id: str) -> None:
        """A run the outbox has sent waits no more for the broker (``waiting`` cleared)."""
        with self.engine.begin() as conn:
            conn.execute(
                T.update()
                .where(T.c.id == run_id, T.c.state.in_(run_states.values(WAITING)))
                .values(waiting=sa.null())
            )

    def discard_unqueued(self, run_ids: Sequence[str]) -> None:
        """Remove new runs the broker could not take, for a producer that asked to have its
        runs queued or nothing (``require_queued``): no record is left behind."""
        with self.engine.begin() as conn:
            conn.execute(
                T.delete().where(
                    T.c.id.in_(list(run_ids)),
                    T.c.state == RunState.PENDING.value,
                    T.c.attempts == 0,
                )
            )

    def mark_waiting(self, run_id: str, dispatch: int | None, waiting: dict[str, Any]) -> bool:
        """Say why a waiting run waits (``RunRecord.waiting``), if it still waits for the
        message of token ``dispatch`` (any token if ``None``). Off the per-job path: written
        only for a message its worker cannot run."""
        guard = [T.c.id == run_id, T.c.state.in_(run_states.values(WAITING))]
        if dispatch is not None:
            guard.append(T.c.dispatch == dispatch)
        with self.engine.begin() as conn:
            return bool(conn.execute(T.update().where(*guard).values(waiting=waiting)).rowcount)

    def fail_unpublished(self, run_id: str, error: dict[str, Any]) -> bool:
        """The first publish failed: end the run failed with the broker error."""
        return self._end.finish(run_id, None, RunState.FAILED, {"error": error})

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

    def set_deadline(self, run_id: str, attempt: int, deadline: dt.datetime) -> None:
        """The hard deadline of a run whose timeout is not its job's (a workflow step's)."""
        with self.engine.begin() as conn:
            conn.execute(
                T.update()
                .where(T.c.id == run_id, T.c.attempts == attempt)
                .values(deadline_at=deadline)
            )

    def complete(self, run_id: str, attempt: int, output: Any) -> bool:
        """running -> completed, for the attempt that holds the run."""
        return self._end.complete(run_id, attempt, output, utcnow())

    def fail(self, run_id: str, attempt: int | None, error: dict[str, Any]) -> bool:
        """-> failed with ``error`` (``rows.run_error``): for the attempt that holds the run,
        or (``None``) from any state that may fail."""
        return self._end.finish(run_id, attempt, RunState.FAILED, {"error": error})

    def cancelled(self, run_id: str, attempt: int, error: dict[str, Any]) -> bool:
        """running -> cancelled, for the attempt that holds the run (it stopped when asked)."""
        return self._end.finish(run_id, attempt, RunState.CANCELLED, {"error": error})

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

    def record_action(self, run_id: str, attempt: int, actor: str, detail: dict[str, Any]) -> None:
        """Keep in the run's history what someone did to it (``detail["action"]``)."""
        with self.engine.begin() as conn:
            events.action(conn, run_id, attempt, actor, detail)

    def request_cancel(
        self, run_id: str, tenant: str | None = None, actor: str | None = None
    ) -> RunRecord:
        """Cancel a run not started yet at once; flag a running one for its worker to stop.
        ``actor``: who asked, kept in the run's history."""
        current = self.get(run_id, tenant)
        if current.terminal:
            raise errors.InvalidTransition(run_id, current.state.value, "cancel")
        with self.engine.begin() as conn:
            if actor is not None:
                events.action(conn, run_id, current.attempts, actor, {"action": "cancel_requested"})
            self.cancel_in(conn, run_id)
        return self.get(run_id)

    def cancel_in(self, conn: sa.Connection, run_id: str) -> None:
        """``request_cancel``'s change, in the caller's transaction: a run not started yet is
        cancelled, a running one flagged for its worker to stop, an ended one left as it is."""
        if not self._end.cancel_waiting(conn, run_id, utcnow()):
            conn.execute(
                T.update()
                .where(T.c.id == run_id, T.c.state == RunState.RUNNING.value)
                .values(cancel_requested=True)
            )


def _complete(rows: Sequence[dict[str, Any]], now: dt.datetime | None) -> list[dict[str, Any]]:
    """The rows with the defaults of a new run (``rows.defaults``, as of ``now``) where they
    leave them out; a row of ``rows.new_run`` has them all and is taken as it is."""
    if all(row.keys() >= _DEFAULTED for row in rows):
        return list(rows)
    defaults = row_defaults(now or utcnow())
    return [{**defaults, **row} for row in rows]


_DEFAULTED = frozenset(row_defaults(utcnow()))
_MARK_PUBLISHED = (
    T.update()
    .where(T.c.id == sa.bindparam("rid"), T.c.dispatch == 1, T.c.published_at.is_(None))
    .values(published_at=sa.bindparam("at"))
)
