"""The one writer of terminal states: every run that ends (completed, failed, cancelled)
ends through ``TerminalWriter``.

Three statements, each guarded so that a redelivered, late or duplicate message can never
change a finished record:

- ``complete``: running -> completed for the attempt that holds the run, on the driver
  (``hotsql.py``: every job runs it, so SQLAlchemy's execution layer is left out);
- ``finish``: -> failed or cancelled, from the states the machine allows, fenced by the
  attempt that holds the run when one is given (a worker's end of its attempt; the reaper's)
  and by any further conditions (the reaper's expired lease);
- ``cancel_waiting``: a run that has not started (waiting or blocked) -> cancelled at once.

Each ``finish`` and ``cancel_waiting`` indexes the error's words for search in the same
transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from jobsys.store import hotsql, run_states, schema, search
from jobsys.store.records import utcnow
from jobsys.store.rows import run_error
from jobsys.store.run_states import RunState

T = schema.runs

_COMPLETE = (
    "UPDATE jobsys_runs SET state = 'completed', output = :output, finished_at = :now, "
    "duration = {since}, lease_expires_at = NULL "
    "WHERE id = :rid AND attempts = :attempt AND state = 'running'"
)
_COMPLETED = (
    "SELECT 1 FROM jobsys_runs WHERE id = :rid AND attempts = :attempt "
    "AND state = 'completed' AND finished_at = :now"
)
"""This completion's own row (its finish time tells it apart), read when the connection was
lost while ``_COMPLETE`` ran and a second run of it changed nothing."""
_SINCE = {
    "sqlite": "(julianday(:now) - julianday(started_at)) * 86400.0",
    "postgresql": "EXTRACT(EPOCH FROM (:now - started_at))",
}

CANCELLED_WAITING = run_error("cancelled", "RunCancelled", "cancelled before it started")
"""The error of a run cancelled before it started."""


class TerminalWriter:
    """Ends runs, for one engine (and its hot path's connections)."""

    def __init__(self, engine: sa.Engine, hot: hotsql.HotPath) -> None:
        self.engine = engine
        self._hot = hot
        self._complete = hot.statement(_COMPLETE.format(since=_SINCE[hot.dialect]))
        self._completed = hot.statement(_COMPLETED)

    def complete(self, run_id: str, attempt: int, output: Any, now: dt.datetime) -> bool:
        """running -> completed with ``output``, for the attempt that holds the run."""
        params = {
            "rid": run_id,
            "attempt": attempt,
            "output": self._hot.json(output),
            "now": self._hot.time(now),
        }
        return self._hot.write(self._complete, params, confirm=self._completed) == 1

    def finish(
        self,
        run_id: str,
        attempt: int | None,
        state: RunState,
        values: dict[str, Any],
        also: tuple[Any, ...] = (),
        now: dt.datetime | None = None,
    ) -> bool:
        """-> ``state`` (failed or cancelled) with ``values`` (its ``error``, ...): guarded by
        the state machine, by the attempt that holds the run (if given: then the run must be
        running that attempt) and by the ``also`` conditions."""
        now = now or utcnow()
        guard = [T.c.id == run_id, T.c.state.in_(run_states.sources(state)), *also]
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

    def cancel_waiting(self, conn: sa.Connection, run_id: str, now: dt.datetime) -> bool:
        """A run not started yet (waiting or blocked) -> cancelled, in the caller's
        transaction; ``False`` if it had started or ended."""
        return bool(self.cancel_waiting_many(conn, [run_id], now))

    def cancel_waiting_many(
        self, conn: sa.Connection, run_ids: Sequence[str], now: dt.datetime
    ) -> list[str]:
        """``cancel_waiting`` for many runs in one statement (a bulk cancel); returns the
        ids of those cancelled."""
        done = [
            str(i)
            for (i,) in conn.execute(
                T.update()
                .where(
                    T.c.id.in_(list(run_ids)),
                    T.c.state.in_(run_states.values(run_states.CANCEL_AT_ONCE)),
                )
                .values(
                    state=RunState.CANCELLED.value,
                    cancel_requested=True,
                    finished_at=now,
                    error=CANCELLED_WAITING,
                    waiting=None,
                    gate=None,  # (no longer waiting for a slot: out of ``ix_jobsys_runs_gated``)
                )
                .returning(T.c.id)
            )
        ]
        search.index(conn, [(i, search.error_text(CANCELLED_WAITING)) for i in done])
        return done


def _epoch(column: Any, engine: sa.Engine) -> Any:
    """Seconds since the epoch of a datetime column, in SQL, per dialect."""
    if engine.dialect.name == "postgresql":
        return sa.func.extract("epoch", column)
    return (sa.func.julianday(column) - 2440587.5) * 86400.0
