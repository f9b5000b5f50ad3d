"""The bounds of every duration jobsys takes from a declaration, a definition or a request,
and the scale of run priorities.

A duration is a finite number of seconds between its bounds: NaN, infinities and values past
the maximum are refused where they are given, naming the field, so that no later arithmetic
(a ``timedelta``, a message's countdown) can overflow in a worker, a beat or a request.

A priority is an integer from ``LOWEST_PRIORITY`` (0) to ``HIGHEST_PRIORITY`` (9), the higher
taken first; runs of the same priority are taken in the order they were queued. It is the one
scale of every interface (``@job(priority=...)``, a submit, a schedule, a workflow step); only
``engine/publishing.py`` turns it into the broker's own numbers.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

MAX_COUNTDOWN = 366 * 86400.0
"""A submit's ``countdown``, and how far ahead its ``start_at`` may be: a year. (A countdown
of a Unix time given by mistake is refused instead of starting in 50 years; a run due later
than ``JOBSYS_DELAY_HORIZON_SECONDS`` waits in the run store, not on the broker.)"""
START_AT_SLACK = 60.0
"""How far in the past a submit's ``start_at`` may be (a clock a little behind, a time
computed a moment ago): the run starts at once. Earlier is refused as a mistake."""
MAX_STEP_DELAY = 86400.0
"""A workflow step's ``delay``."""
MAX_BACKOFF = 86400.0
"""A retry policy's ``initial_backoff`` and ``max_backoff``."""
MAX_STEP_TIMEOUT = 86400.0
"""A workflow step's ``timeout``."""
MAX_WORKFLOW_TIMEOUT = 7 * 86400.0
"""A workflow's ``timeout``."""
MAX_EVERY = 366 * 86400.0
"""A schedule's ``every`` (a year)."""
LATEST_INSTANT = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)
"""A schedule's ``at``, ``start_at`` and ``end_at`` come before it."""
LOWEST_PRIORITY = 0
HIGHEST_PRIORITY = 9
DEFAULT_PRIORITY = 5
"""A job's priority when its declaration names none."""
PRIORITY_HELP = "0 (lowest) to 9 (highest), taken first; the same priority in the order queued"
"""The priority scale in the words every interface shows."""


def seconds(value: Any, maximum: float, positive: bool = False) -> str | None:
    """What is wrong with ``value`` as a duration of at most ``maximum`` seconds (above 0 if
    ``positive``, else at least 0), or ``None`` when it is fine."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number of seconds, got {value!r}"
    if not math.isfinite(value):
        return f"must be a finite number of seconds, got {value}"
    low = "above 0" if positive else "at least 0"
    if value > maximum or value < 0 or (positive and value == 0):
        return f"must be {low} and at most {maximum:g} seconds, got {value:g}"
    return None


def priority(value: Any) -> str | None:
    """What is wrong with ``value`` as a priority, or ``None`` when it is fine."""
    scale = f"{LOWEST_PRIORITY} (lowest) to {HIGHEST_PRIORITY} (highest)"
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number from {scale}, got {value!r}"
    if not LOWEST_PRIORITY <= value <= HIGHEST_PRIORITY:
        return f"must be from {scale}, got {value}"
    return None
