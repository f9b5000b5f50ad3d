"""The history of a run: every state it went through and every attempt, as events.

A run record holds a run as it is now: its last error, its last worker. Its history is kept in
``jobsys_run_events``, one row per change, written by the database itself: triggers on
``jobsys_runs`` add a row when a run is made (``created``) and each time its ``state``
changes (``state``: from, to, the attempt, the worker, and the error when it went to
``retrying``, ``failed`` or ``cancelled``), in the transaction of the change. Whatever writes a
transition (the hot path's own statements, the terminal writer, the reaper, a cancel), the
event comes with it or not at all, and the per-job path sends no extra statement: the cost is
the trigger's insert inside the statement the path already runs (docs/performance.md).

What the database cannot know, who asked for a change, the store adds in the same transaction
as the change (``action``): ``cancel_requested`` by whom, ``retried`` as which new run by whom.
Deleting a run deletes its events (a trigger too), whatever deletes it.

Times are seconds since the epoch (a float column): both databases write them from their own
clock (``clock_timestamp()``, SQLite's ``julianday('now')``, to the millisecond there).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from jobsys.store import schema
from jobsys.store.event_triggers import TABLE, create_triggers

__all__ = [
    "TABLE",
    "Attempt",
    "RunEvent",
    "action",
    "actions",
    "attempts",
    "create_triggers",
    "read",
]


@dataclasses.dataclass(frozen=True)
class RunEvent:
    """One change of a run: ``created``, ``state`` (a transition), or an ``action`` someone
    took (``detail`` says which: ``cancel_requested``, ``retried``)."""

    id: int
    run_id: str
    at: dt.datetime
    kind: str
    from_state: str | None
    to_state: str | None
    attempt: int
    worker: str | None
    actor: str | None
    error: dict[str, Any] | None
    detail: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["at"] = self.at.isoformat()
        return data


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One attempt of a run, read off its events: when it started and ended, on which
    worker, how it ended (the state it went to) and with which error."""

    attempt: int
    worker: str | None
    started_at: dt.datetime
    ended_at: dt.datetime | None
    outcome: str | None
    """The state the attempt ended in (``completed``, ``retrying``, ``failed``, ...); ``None``
    while it runs."""
    error: dict[str, Any] | None

    @property
    def duration(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "worker": self.worker,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "duration": self.duration,
            "outcome": self.outcome,
            "error": self.error,
        }


def attempts(history: list[RunEvent]) -> list[Attempt]:
    """The attempts of a run, in order: each begins with a move to ``running`` and ends with
    the next move out of it."""
    found: list[Attempt] = []
    current: RunEvent | None = None
    for event in history:
        if event.kind != "state":
            continue
        if event.to_state == "running":
            current = event
            continue
        if current is not None and event.from_state == "running":
            found.append(_attempt(current, event))
            current = None
    if current is not None:
        found.append(_attempt(current, None))
    return found


def _attempt(start: RunEvent, end: RunEvent | None) -> Attempt:
    return Attempt(
        attempt=start.attempt,
        worker=start.worker,
        started_at=start.at,
        ended_at=end.at if end else None,
        outcome=end.to_state if end else None,
        error=end.error if end else None,
    )


E = schema.run_events


def read(conn: sa.Connection, run_id: str) -> list[RunEvent]:
    """The events of a run, oldest first."""
    rows = conn.execute(sa.select(E).where(E.c.run_id == run_id).order_by(E.c.id))
    return [_event(r) for r in rows]


def action(
    conn: sa.Connection,
    run_id: str,
    attempt: int,
    actor: str,
    detail: dict[str, Any],
) -> None:
    """Record what someone did to a run (``detail["action"]`` names it), in the caller's
    transaction (the one that makes the change)."""
    conn.execute(
        E.insert().values(
            run_id=run_id,
            at=dt.datetime.now(dt.UTC).timestamp(),
            kind="action",
            attempt=attempt,
            actor=actor,
            detail=detail,
        )
    )


def actions(conn: sa.Connection, done: list[tuple[str, int, dict[str, Any]]], actor: str) -> None:
    """Record what ``actor`` did to many runs at once (a bulk action): ``(run id, attempt,
    detail)`` each, in the caller's transaction, one statement."""
    if not done:
        return
    at = dt.datetime.now(dt.UTC).timestamp()
    conn.execute(
        E.insert(),
        [
            {
                "run_id": run_id,
                "at": at,
                "kind": "action",
                "attempt": attempt,
                "actor": actor,
                "detail": detail,
            }
            for run_id, attempt, detail in done
        ],
    )


def _event(row: Any) -> RunEvent:
    return RunEvent(
        id=int(row.id),
        run_id=row.run_id,
        at=dt.datetime.fromtimestamp(float(row.at), dt.UTC),
        kind=row.kind,
        from_state=row.from_state,
        to_state=row.to_state,
        attempt=int(row.attempt or 0),
        worker=row.worker,
        actor=row.actor,
        error=_json(row.error),
        detail=_json(row.detail),
    )


def _json(value: Any) -> dict[str, Any] | None:
    """A JSON column copied by a trigger: SQLite hands back the text (or the bytes of a bare
    number, ``schema.sqlite_storable``) where the column type did not decode it."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, bytes | str):
        loaded = json.loads(value)
        return loaded if isinstance(loaded, dict) else {"value": loaded}
    return {"value": value}
