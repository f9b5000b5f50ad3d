"""Request bodies of the HTTP API (pydantic models: validated, and shown in the OpenAPI
document). Unknown fields are refused, so a typo is an error instead of silently ignored."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, StrictInt

from jobsys.base import bounds
from jobsys.base.timeparse import DurationSeconds
from jobsys.declare import cadence, previews

Name = Annotated[str, Field(min_length=1, max_length=200)]
Tag = Annotated[str, Field(min_length=1, max_length=200)]
RunId = Annotated[str, Field(min_length=1, max_length=64)]
Seconds = Annotated[DurationSeconds, Field(allow_inf_nan=False)]
"""Seconds: a number, or a duration as people type it (``"30s"``, ``"5m"``, ``"1h30m"``)."""
Priority = Annotated[StrictInt, Field(ge=bounds.LOWEST_PRIORITY, le=bounds.HIGHEST_PRIORITY)]

MAX_WAIT = 300.0


def _in_range(value: dt.datetime) -> dt.datetime:
    """Instants a schedule can compute with (years 1970 to 9000, once in UTC)."""
    try:
        utc = value.astimezone(dt.UTC) if value.tzinfo is not None else value
    except OverflowError:
        raise ValueError("is out of range") from None
    if not 1970 <= utc.year <= 9000:
        raise ValueError("must be between the years 1970 and 9000")
    return value


Instant = Annotated[dt.datetime, pydantic.AfterValidator(_in_range)]


class Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class SubmitBody(Body):
    """Submit a run of a job."""

    input: dict[str, Any] = Field(default_factory=dict, description="The job's input.")
    wait: Annotated[Seconds, Field(ge=0, le=MAX_WAIT)] = Field(
        0, description="Seconds to wait for the run to finish (0: return at once, 202)."
    )
    tags: list[Tag] = Field(default_factory=list, max_length=64)
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: Name | None = Field(
        None, description="Submitting again with the same key returns the first run."
    )
    countdown: Seconds | None = Field(
        None,
        description="Seconds (or 30s, 2h, 3d) before the run may start, up to 366 days; a run "
        "due later than JOBSYS_DELAY_HORIZON_SECONDS waits in the run store (state pending, "
        "`waiting.reason` delayed) and is queued when due.",
    )
    start_at: dt.datetime | None = Field(
        None,
        description="When the run may start instead (ISO 8601 with its offset, e.g. "
        "2026-12-01T09:00:00Z); not with countdown.",
    )
    priority: StrictInt | None = Field(
        None,
        description=f"{bounds.PRIORITY_HELP}, an integer. Default: the job's (`priority` in "
        "GET /api/v1/jobs/{name}; 5 unless declared). Kept when the run is retried or requeued.",
    )
    depends_on: list[RunId] = Field(default_factory=list, max_length=100)
    run_anyway: bool = Field(False, description="Run once dependencies end, whatever their state.")
    require_queued: bool = Field(
        False,
        description="Queued on the broker or nothing: when the broker cannot take the run, "
        "answer 503 and keep no record (by default the run is kept, not yet queued, and sent "
        "when the broker is back).",
    )


WORKFLOW_PRIORITY = (
    f"The priority of the runs of the steps that give none of their own: {bounds.PRIORITY_HELP}. "
    "Default: each step's job's."
)


class WorkflowSubmitBody(Body):
    input: dict[str, Any] = Field(default_factory=dict)
    priority: Priority | None = Field(None, description=WORKFLOW_PRIORITY)


class RetryData(Body):
    max_attempts: int = Field(3, ge=1, le=1000)
    initial_backoff: Seconds = Field(1.0, ge=0, le=bounds.MAX_BACKOFF)
    multiplier: Seconds = Field(2.0, ge=1)
    max_backoff: Seconds = Field(60.0, ge=0, le=bounds.MAX_BACKOFF)
    jitter: Seconds = Field(0.1, ge=0, le=1)
    retry_on_timeout: bool = False


class StepData(Body):
    name: Name
    job: Name
    input: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[Name] = Field(default_factory=list, max_length=200)
    when: Literal["succeeded", "failed", "always"] = "succeeded"
    for_each: Annotated[str, Field(max_length=500)] | None = None
    delay: Seconds = Field(0.0, ge=0, le=bounds.MAX_STEP_DELAY)
    retry: RetryData | None = None
    timeout: Seconds | None = Field(None, gt=0, le=bounds.MAX_STEP_TIMEOUT)
    priority: Priority | None = Field(
        None,
        description=f"Of this step's runs, instead of the job's: {bounds.PRIORITY_HELP}.",
    )


class WorkflowData(Body):
    """A workflow given as data (the shape ``Workflow.to_data`` gives)."""

    name: Name
    description: Annotated[str, Field(max_length=10_000)] = ""
    timeout: Seconds = Field(600.0, gt=0, le=bounds.MAX_WORKFLOW_TIMEOUT)
    failure: Literal["fail_fast", "continue"] = "fail_fast"
    steps: list[StepData] = Field(min_length=1, max_length=500)


class AdHocWorkflowBody(Body):
    workflow: WorkflowData
    input: dict[str, Any] = Field(default_factory=dict)
    priority: Priority | None = Field(None, description=WORKFLOW_PRIORITY)


Kind = Literal["interval", "every", "cron", "once", "ongoing"]


SCHEDULE_PRIORITY = (
    f"The priority of the runs it makes: {bounds.PRIORITY_HELP}. Default: the job's (for a "
    "workflow, each step's own or its job's)."
)


class ScheduleOptions(Body):
    max_runs: int | None = Field(None, ge=1, le=1_000_000_000)
    jitter: Seconds | None = Field(None, ge=0, le=86_400)
    overlap: cadence.Overlap | None = None
    misfire: cadence.Misfire | None = None
    grace: Seconds | None = Field(None, ge=0, le=7 * 86_400)
    priority: Priority | None = Field(None, description=SCHEDULE_PRIORITY)


class ScheduleFields(Body):
    """The parts of a schedule; each given one is set (``every`` is ``interval``'s kind)."""

    kind: Kind | None = None
    every: Seconds | None = Field(None, ge=1, le=bounds.MAX_EVERY)
    cron: Annotated[str, Field(max_length=200)] | None = None
    timezone: Annotated[str, Field(max_length=100)] | None = None
    at: Instant | None = None
    start_at: Instant | None = None
    end_at: Instant | None = None
    input: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    max_runs: int | None = Field(None, ge=1, le=1_000_000_000)
    jitter: Seconds | None = Field(None, ge=0, le=86_400)
    overlap: cadence.Overlap | None = None
    misfire: cadence.Misfire | None = None
    grace: Seconds | None = Field(None, ge=0, le=7 * 86_400)
    priority: Priority | None = Field(None, description=SCHEDULE_PRIORITY)
    options: ScheduleOptions | None = Field(
        None,
        description="max_runs, jitter, overlap, misfire, grace, priority (also accepted flat).",
    )

    def changes(self) -> dict[str, Any]:
        """The ``cadence.schedule`` keywords of the fields given (and only those)."""
        given = self.model_dump(exclude_unset=True, exclude={"options"})
        if self.options is not None:
            given.update(self.options.model_dump(exclude_unset=True))
        out = {k: v for k, v in given.items() if v is not None}
        if out.get("kind") == "every":
            out["kind"] = "interval"
        for key in ("overlap", "misfire"):
            if key in out:
                out[key] = str(out[key])
        return out


Description = Annotated[str, Field(max_length=10_000)]


class ScheduleCreateBody(ScheduleFields):
    job: Name = Field(description="The job (or catalog workflow) each fire runs.")
    name: Name | None = None
    kind: Kind  # required here
    description: Description | None = Field(None, description="What it is for, in words.")
    paused: bool = Field(False, description="Create it inactive: it fires once resumed.")


class ScheduleUpdateBody(ScheduleFields):
    description: Description | None = Field(None, description="A new description.")


class SchedulePreviewBody(Body):
    """A cadence not saved, to preview: one of every, cron, at (``kind`` says which)."""

    kind: Kind
    every: Seconds | None = Field(None, ge=1, le=bounds.MAX_EVERY)
    cron: Annotated[str, Field(max_length=200)] | None = None
    timezone: Annotated[str, Field(max_length=100)] | None = Field(
        None, description="The cron's zone (UTC), and the zone wall-clock times are shown in."
    )
    at: Instant | None = None
    start_at: Instant | None = None
    end_at: Instant | None = None
    count: int = Field(10, ge=1, le=previews.MAX_PREVIEW, description="How many fires.")

    def cadence(self) -> cadence.Cadence:
        data = self.model_dump(exclude={"count"}, exclude_none=True, mode="json")
        if data["kind"] == "every":
            data["kind"] = "interval"
        if data["kind"] != "cron":
            data.pop("timezone", None)
        return cadence.Cadence.from_json(data)


class SubscriptionBody(Body):
    """Subscribe a URL to run events: of one job, schedule or workflow, or (none given) of
    every run of the tenant (an admin's)."""

    url: str = Field(max_length=2000, description="Where the notifications are POSTed.")
    events: list[str] = Field(
        max_length=10,
        description="Any of completed, failed, cancelled, retrying, progress.",
    )
    job: str | None = Field(None, max_length=200)
    schedule: str | None = Field(None, max_length=64)
    workflow: str | None = Field(None, max_length=200)
