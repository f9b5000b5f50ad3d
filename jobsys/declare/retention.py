"""A job's retention, as declared: how long its ended runs are kept, by how they ended
(``keep_completed="7d"``, ``keep_failed="30d"``, ``keep_cancelled``), and how many of its
newest ended runs are kept whatever their age (``keep_last``). Checked when the job is
declared, each problem naming the option; applied by the pruner (``jobsys.store.retention``),
where a job that declares none follows the global settings (``JOBSYS_KEEP_*``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jobsys.base import errors, timeparse

NEVER = "never"
"""Kept for ever (an age option)."""


@dataclasses.dataclass(frozen=True)
class Retention:
    """A job's own retention; ``None`` where it declares none (the global setting applies).
    Ages are in seconds; ``float("inf")`` is ``never``."""

    keep_completed: float | None = None
    keep_failed: float | None = None
    keep_cancelled: float | None = None
    keep_last: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if field.name != "keep_last":
                value = NEVER if value == float("inf") else timeparse.describe_seconds(value)
            out[field.name] = value
        return out


def declare(
    job: str,
    keep_completed: str | float | None = None,
    keep_failed: str | float | None = None,
    keep_cancelled: str | float | None = None,
    keep_last: int | None = None,
) -> Retention | None:
    """The job's retention (``None`` when it declares none), or ``JobDeclarationError``
    naming the option."""
    ages = {
        "keep_completed": keep_completed,
        "keep_failed": keep_failed,
        "keep_cancelled": keep_cancelled,
    }
    if all(v is None for v in ages.values()) and keep_last is None:
        return None
    seconds = {name: _age(job, name, value) for name, value in ages.items()}
    if keep_last is not None and (
        isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0
    ):
        raise errors.JobDeclarationError(
            job, "keep_last", f"must be a whole number of runs, 0 or more, got {keep_last!r}"
        )
    return Retention(keep_last=keep_last, **seconds)


def _age(job: str, name: str, value: str | float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == NEVER:
        return float("inf")
    try:
        seconds = timeparse.parse_seconds(value)
    except ValueError as exc:
        raise errors.JobDeclarationError(job, name, f"{exc}, or 'never'") from None
    if not seconds > 0 or seconds == float("inf"):
        raise errors.JobDeclarationError(
            job, name, f"must be a positive duration like '7d', or 'never', got {value!r}"
        )
    return seconds
