"""Schedule records: a schedule's states and its record as read from the store."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import json
import uuid
from typing import Any

from jobsys.declare.cadence import Cadence, Options, ScheduleSpec
from jobsys.store.records import as_json


class ScheduleState(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    """A ``once`` that fired, an end or ``max_runs`` reached, an ongoing job that said done."""
    CANCELLED = "cancelled"
    """Deleted: it never fires again; its runs keep pointing at it."""


@dataclasses.dataclass(frozen=True)
class ScheduleRecord:
    id: str
    name: str
    job: str
    cadence: dict[str, Any]
    input: dict[str, Any]
    meta: dict[str, Any]
    options: dict[str, Any]
    principal: dict[str, Any]
    principal_id: str
    tenant: str
    state: ScheduleState
    version: int
    nominal_at: dt.datetime | None
    next_fire_at: dt.datetime | None
    """When it fires next (the cadence's time plus any jitter); ``None`` once it is over."""
    queued_fire_at: dt.datetime | None
    last_fire_at: dt.datetime | None
    last_run_id: str | None
    run_count: int
    result: Any
    source: str
    """``api`` (created at runtime) or ``code`` (declared with a job)."""
    code_hash: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    sealed: str | None = None
    """Secret input values, encrypted (``sealing.py``); never shown."""
    last_state: str | None = None
    """State of the last run it made."""
    description: str | None = None
    """What it is for, in words (``--description``)."""
    archived_at: dt.datetime | None = None
    """When a person archived it: paused and left out of default lists until unarchived."""

    @property
    def definition(self) -> ScheduleSpec:
        when, options = _parsed(json.dumps(self.cadence, sort_keys=True), json.dumps(self.options))
        return ScheduleSpec(when, self.input, self.meta, options)

    def to_json(self) -> dict[str, Any]:
        return as_json(self)


@functools.lru_cache(maxsize=4096)
def _parsed(cadence_json: str, options_json: str) -> tuple[Cadence, Options]:
    """Parsed and checked once per distinct definition (beat reads thousands per minute)."""
    return Cadence.from_json(json.loads(cadence_json)), Options.from_json(json.loads(options_json))


def new_schedule_id() -> str:
    return "sch_" + uuid.uuid4().hex[:20]
