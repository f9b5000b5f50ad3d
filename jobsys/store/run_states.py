"""The states of a run, the moves between them, and the named groups of states.

Every group of states the code tests a run against is declared here, once, next to
``RunState``; SQL that names a group takes its text from ``sql_list`` (the hot claim in
``hotsql.py``), so the Python and the SQL cannot drift apart.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


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
"""Ended: nothing moves a run out of these."""
WAITING = frozenset({RunState.PENDING, RunState.RETRYING})
"""Waiting for a worker, with a message on the broker (or one the reconciler sends again):
the states a run is claimed from."""
ACTIVE = frozenset({RunState.PENDING, RunState.RUNNING, RunState.RETRYING})
"""Not over and not blocked: a schedule that may not overlap its previous run waits while
that run is in one of these."""
CANCEL_AT_ONCE = WAITING | {RunState.BLOCKED}
"""Not started: cancelling ends the run at once (a running one is asked to stop)."""

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


def values(group: Iterable[RunState]) -> list[str]:
    """A group's state names, in ``RunState``'s order (an ``IN`` list to bind)."""
    members = set(group)
    return [s.value for s in RunState if s in members]


def sql_list(group: Iterable[RunState]) -> str:
    """A group as SQL text, ``('pending', 'retrying')``: for a statement written as text."""
    return "(" + ", ".join(f"'{v}'" for v in values(group)) + ")"
