"""The bounds of every duration jobsys takes from a declaration, a definition or a request.

A duration is a finite number of seconds between its bounds: NaN, infinities and values past
the maximum are refused where they are given, naming the field, so that no later arithmetic
(a ``timedelta``, a message's countdown) can overflow in a worker, a beat or a request.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

MAX_COUNTDOWN = 3600.0
"""A submit's ``countdown``: a delayed message waits in a worker's memory until it is due
(later starts are schedules)."""
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
