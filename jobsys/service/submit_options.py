"""``SubmitOptions``, how to submit a run, and their checks: each bad option is refused with
``InvalidInput`` naming it, before anything is recorded or queued.

A run's start (``countdown`` or ``start_at``) is worked out here, once, as a ``Start``: due
now, due soon (within ``JOBSYS_DELAY_HORIZON_SECONDS``: its message is published at once
with the countdown, and its worker keeps it until it is due), or due later, held: it waits
in the run store, not on the broker, and a worker's reaper publishes it when it is due.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from jobsys.base import bounds, errors
from jobsys.store import runs

MAX_COUNTDOWN_SECONDS = bounds.MAX_COUNTDOWN
"""The longest ``countdown``, and how far ahead a ``start_at`` may be (366 days)."""


@dataclasses.dataclass(frozen=True)
class SubmitOptions:
    """How to submit, kept apart from the job's input."""

    idempotency_key: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] | None = None
    countdown: float | None = None
    """Seconds to wait before the run may start (at most ``MAX_COUNTDOWN_SECONDS``, 366 days).
    A run due later than ``JOBSYS_DELAY_HORIZON_SECONDS`` (60 s) waits in the run store,
    ``pending`` with ``waiting["reason"] == "delayed"``, and is queued when it is due."""
    start_at: dt.datetime | str | None = None
    """When the run may start, instead of ``countdown``: an aware datetime, or an ISO 8601
    time with its offset (``"2026-12-01T09:00:00Z"``). A time without an offset is refused
    (it could be any of 24 hours), and so is one more than a minute past."""
    depends_on: tuple[str, ...] = ()
    """Runs to wait for: this run starts once they have all completed, with their outputs in
    ``ctx.dependencies``; if one fails it ends failed (reason ``dependency``)..."""
    run_anyway: bool = False
    """...unless this is set: then it runs once they have all ended, whatever their state."""
    priority: int | None = None
    """0 (lowest) to 9 (highest): runs of a higher priority are taken first, those of the same
    priority in the order queued. ``None``: the job's (``@job(priority=...)``, 5 by default).
    The run keeps it when it is retried, requeued, handed back or published when due."""
    parent_id: str | None = None
    require_queued: bool = False
    """Queued on the broker or nothing: if the broker cannot take the run (after Celery's
    publish retries), raise ``BrokerUnavailable`` and leave no record. By default a run the
    broker cannot take now is kept, pending and not yet queued, and sent when it is back.
    (A run held in the store until it is due is not queued at submit: it is kept.)"""


@dataclasses.dataclass(frozen=True)
class Start:
    """When a run may start, as its options say."""

    due: dt.datetime | None = None
    """Not before this (UTC); ``None``: at once."""
    held: bool = False
    """Due later than the delay horizon: kept in the store, unpublished, until it is due."""

    def countdown(self) -> float | None:
        """Seconds left until it is due, for a message published now; ``None``: none."""
        if self.due is None:
            return None
        left = (self.due - runs.utcnow()).total_seconds()
        return left if left > 0 else None


def check(job: str, options: SubmitOptions, now: dt.datetime, horizon: float) -> Start:
    """The start of a run of ``job`` submitted with ``options`` at ``now``; ``InvalidInput``
    naming each bad option (``countdown``, ``start_at``, ``priority``, and strings the
    store cannot keep)."""
    problems = runs.nul_errors(
        {
            "metadata": options.metadata or {},
            "tags": list(options.tags),
            "idempotency_key": options.idempotency_key or "",
        }
    )
    if not problems:
        problem = None if options.priority is None else bounds.priority(options.priority)
        if problem:
            problems = [{"loc": ["priority"], "type": "value_error", "msg": problem}]
    if problems:
        raise errors.InvalidInput(job, problems, "options")
    try:
        due = _due(options, now)
    except ValueError as exc:
        field, message = exc.args
        raise errors.InvalidInput(
            job, [{"loc": [field], "type": "value_error", "msg": message}], "options"
        ) from None
    if due is None:
        return Start()
    return Start(due, held=(due - now).total_seconds() > horizon)


def _due(options: SubmitOptions, now: dt.datetime) -> dt.datetime | None:
    """When the run is due; ``ValueError(field, message)`` for a bad value."""
    countdown, start_at = options.countdown, options.start_at
    if countdown is not None and start_at is not None:
        raise ValueError("start_at", "give countdown or start_at, not both")
    if countdown is not None:
        limit = MAX_COUNTDOWN_SECONDS
        if isinstance(countdown, bool) or not isinstance(countdown, int | float):
            raise ValueError("countdown", f"must be a number of seconds, got {countdown!r}")
        if not math.isfinite(countdown) or not 0 <= countdown <= limit:
            raise ValueError(
                "countdown",
                f"must be between 0 and {limit:.0f} s (366 days), got {countdown:g} "
                "(for a time, give start_at; for runs again and again, a schedule)",
            )
        return now + dt.timedelta(seconds=countdown) if countdown else None
    if start_at is None:
        return None
    at = _instant(start_at)
    if at < now - dt.timedelta(seconds=bounds.START_AT_SLACK):
        raise ValueError(
            "start_at",
            f"{at.isoformat()} is {(now - at).total_seconds():.0f} s in the past: give a time "
            "to come (or none, to start at once)",
        )
    if at > now + dt.timedelta(seconds=MAX_COUNTDOWN_SECONDS):
        raise ValueError(
            "start_at",
            f"{at.isoformat()} is more than 366 days ahead (for a run that late, a schedule)",
        )
    return at if at > now else None


def _instant(value: dt.datetime | str) -> dt.datetime:
    """``value`` as an aware datetime in UTC."""
    example = "for example 2026-12-01T09:00:00Z or 2026-12-01T10:00:00+01:00"
    if isinstance(value, str):
        text = value.strip()
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                "start_at", f"{text[:60]!r} is not an ISO 8601 time ({example})"
            ) from None
    if not isinstance(value, dt.datetime):
        raise ValueError("start_at", f"must be a time ({example}), got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            "start_at",
            f"{value.isoformat()} has no UTC offset or zone, so it could be any of 24 hours: "
            f"add one ({example})",
        )
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("start_at", f"{value.isoformat()} is out of range") from None
