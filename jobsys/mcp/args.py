"""The arguments of the MCP tools: their pydantic models and the checks of their shape.

Each generic tool's input schema is its model's JSON schema. Arguments are checked in two steps:
``check_shape`` first (any tool, per-job tools included), then the tool's model. ``check_shape``
refuses what the HTTP API refuses in a body: arguments that are not an object, nested deeper
than ``MAX_DEPTH``, larger than ``MAX_ARGUMENT_BYTES`` once encoded, or holding strings no
database stores. Either way the error is ``InvalidArguments``, naming each bad field.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import pydantic

from jobsys.base import bounds
from jobsys.base.timeparse import DurationSeconds
from jobsys.mcp.answers import InvalidArguments, bad_argument
from jobsys.service.client import SubmitOptions

MAX_WAIT = 300.0
MAX_DEPTH = 32
"""Arguments nested deeper than this are refused (as the HTTP API refuses such bodies)."""
MAX_ARGUMENT_BYTES = 1 << 20
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""Characters no database stores (PostgreSQL refuses NUL; lone surrogates cannot be encoded)."""

# --- the models ----------------------------------------------------------------------------

Name = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=200)]
Id = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=100)]
Short = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=200)]
Wait = Annotated[DurationSeconds, pydantic.Field(ge=0, le=MAX_WAIT)]
Seconds = DurationSeconds
"""A number of seconds, or a duration such as ``"30s"``, ``"5m"``, ``"1h30m"``, ``"2d"``."""
Limit = Annotated[int, pydantic.Field(ge=1, le=500)]


class Args(pydantic.BaseModel):
    """Arguments of a tool: JSON types as the schema says (no ``"60"`` for 60) and unknown
    fields refused (a typo is named, not ignored)."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class ListJobsArgs(Args):
    tag: Short | None = pydantic.Field(None, description="Only jobs with this tag.")
    label: Short | None = pydantic.Field(
        None, description="Only jobs with this label: `key=value`, or `key` for any value."
    )
    query: Short | None = pydantic.Field(
        None, description="Keywords that the job's name, description, tags or labels hold."
    )
    include_hidden: bool = pydantic.Field(False, description="Include hidden jobs.")


class DescribeArgs(Args):
    job: Name = pydantic.Field(description="The job's name (list_jobs gives them).")


class RunOptions(Args):
    tags: list[Short] = pydantic.Field([], max_length=50, description="Tags of the run.")
    metadata: dict[str, Any] = pydantic.Field({}, description="Metadata of the run.")
    idempotency_key: Short | None = pydantic.Field(
        None, description="Submitting twice with the same key gives the same run."
    )
    priority: int | None = pydantic.Field(
        None,
        ge=bounds.LOWEST_PRIORITY,
        le=bounds.HIGHEST_PRIORITY,
        description=f"{bounds.PRIORITY_HELP}. Default: the job's (describe_job shows it). For "
        "a workflow: of its steps that set none; for a schedule (job_create): of each run.",
    )
    require_queued: bool = pydantic.Field(
        False,
        description="Queued on the broker or nothing: fail and keep no record when the broker "
        "cannot take the run (by default it is kept and sent when the broker is back).",
    )
    countdown: Seconds | None = pydantic.Field(
        None,
        description="One run of a job: seconds (or 30s, 2h, 3d) before it may start, up to 366 "
        "days. It waits, pending, its `waiting` saying until when; cancel it to drop it.",
    )
    start_at: Short | None = pydantic.Field(
        None,
        description="One run of a job: when it may start instead of countdown, an ISO 8601 "
        "time with its offset (2026-12-01T09:00:00Z).",
    )

    def submit_options(self) -> SubmitOptions:
        return SubmitOptions(
            idempotency_key=self.idempotency_key,
            tags=tuple(self.tags),
            metadata=self.metadata,
            priority=self.priority,
            require_queued=self.require_queued,
            countdown=self.countdown,
            start_at=self.start_at,
        )

    def no_start(self, what: str) -> None:
        """Refuse a countdown or start time given for ``what`` (they are for one run)."""
        for field in ("countdown", "start_at"):
            if getattr(self, field) is not None:
                raise bad_argument(field, f"is for one run of a job, not {what}")


class ExecuteArgs(RunOptions):
    job: Name = pydantic.Field(description="The job (or workflow) name, as list_jobs gives it.")
    input: dict[str, Any] = pydantic.Field({}, description="The job's input (its input_schema).")
    mode: Literal["inline", "background"] = pydantic.Field(
        "inline",
        description="inline: wait up to `timeout` s and return the output; background: "
        "return the run id at once (poll get_job_status).",
    )
    timeout: Wait = pydantic.Field(30.0, description="Inline mode: seconds to wait (0 to 300).")


class StatusArgs(Args):
    run_id: Id = pydantic.Field(description="A run id, or a workflow run id (wf_...).")
    logs: int = pydantic.Field(10, ge=0, le=200, description="How many of the last log lines.")


class RunArgs(Args):
    run_id: Id = pydantic.Field(description="A run id.")


class RemoveArgs(Args):
    name: Name = pydantic.Field(description="The runtime-registered job to remove.")


Overlap = Literal["skip", "allow", "queue"]
Misfire = Literal["run_once", "skip"]


class When(Args):
    """The cadence and options of a schedule (one of every, cron, once, ongoing)."""

    every: Seconds | None = pydantic.Field(
        None, description="Seconds between fires (>= 1), or a duration: 30s, 5m, 1h30m, 2d."
    )
    cron: Short | None = pydantic.Field(None, description="Five cron fields, or @daily, ...")
    timezone: Short | None = pydantic.Field(None, description="IANA zone of `cron` (UTC).")
    once: Short | None = pydantic.Field(
        None, description="Fire once at this ISO 8601 time (with an offset or Z)."
    )
    ongoing: Seconds | None = pydantic.Field(
        None, description="Every N seconds (or 5m, 1h ...) until the job says it is done."
    )
    start: Short | None = pydantic.Field(None, description="Not before this ISO 8601 time.")
    end: Short | None = pydantic.Field(None, description="Not after this ISO 8601 time.")
    max_runs: int | None = pydantic.Field(None, ge=1, description="Complete after this many.")
    jitter: Seconds | None = pydantic.Field(None, ge=0, description="Random seconds added.")
    overlap: Overlap | None = pydantic.Field(None, description="While the last run is active.")
    misfire: Misfire | None = pydantic.Field(None, description="After downtime.")
    grace: Seconds | None = pydantic.Field(None, ge=0, description="Seconds late still on time.")

    def changes(self) -> dict[str, Any]:
        """The ``cadence.schedule`` keywords given (and only those)."""
        kinds = {"interval": self.every, "cron": self.cron, "once": self.once}
        kinds["ongoing"] = self.ongoing
        chosen = [(k, v) for k, v in kinds.items() if v is not None]
        if len(chosen) > 1:
            raise bad_argument("schedule", "give only one of every, cron, once, ongoing")
        out: dict[str, Any] = {}
        for kind, value in chosen:
            key = {"interval": "every", "ongoing": "every", "cron": "cron", "once": "at"}[kind]
            out.update(kind=kind, **{key: value})
        rest: dict[str, Any] = {
            "timezone": self.timezone,
            "start_at": self.start,
            "end_at": self.end,
        }
        rest |= {"max_runs": self.max_runs, "jitter": self.jitter, "overlap": self.overlap}
        rest |= {"misfire": self.misfire, "grace": self.grace}
        out.update({k: v for k, v in rest.items() if v is not None})
        return out


class CreateArgs(RunOptions):
    job: Name = pydantic.Field(description="The job (or workflow, for a schedule) name.")
    input: dict[str, Any] = pydantic.Field({}, description="The job's input.")
    schedule: When | None = pydantic.Field(
        None, description="Omit for one background run; give a cadence for a schedule."
    )
    name: Short | None = pydantic.Field(None, description="A label for the schedule.")


class ListArgs(Args):
    what: Literal["all", "runs", "schedules", "workflow_runs"] = "all"
    job: Name | None = pydantic.Field(None, description="Only this job's runs and schedules.")
    state: Short | None = pydantic.Field(None, description="Only this state (queued, running...).")
    tag: Short | None = pydantic.Field(None, description="Only runs with this tag.")
    schedule: Id | None = pydantic.Field(None, description="Only runs this schedule made.")
    workflow: Id | None = pydantic.Field(
        None, description="Only steps of this workflow run (wf_...)."
    )
    parent: Id | None = pydantic.Field(None, description="Only runs made from this run.")
    exhausted: bool | None = pydantic.Field(
        None,
        description="Only runs that used all their attempts (true) or not (false); with "
        "state failed: the dead letters.",
    )
    paused: bool | None = pydantic.Field(
        None, description="Only the waiting runs a pause holds (true), or all but those (false)."
    )
    archived: bool = pydantic.Field(
        False, description="Only archived runs and schedules (left out otherwise)."
    )
    limit: Limit = 20


class IdArgs(Args):
    id: Id = pydantic.Field(description="A run id, a schedule id (sch_...) or a workflow run id.")


class UpdateArgs(When):
    id: Id = pydantic.Field(description="The schedule id (sch_...).")
    input: dict[str, Any] | None = pydantic.Field(None, description="New input of each run.")
    metadata: dict[str, Any] | None = pydantic.Field(None, description="New metadata.")
    priority: int | None = pydantic.Field(
        None,
        ge=bounds.LOWEST_PRIORITY,
        le=bounds.HIGHEST_PRIORITY,
        description=f"New priority of each run: {bounds.PRIORITY_HELP}.",
    )


class ResultArgs(IdArgs):
    wait: Wait = pydantic.Field(0.0, description="Seconds to wait for it to finish (0 to 300).")


class SearchArgs(Args):
    query: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=500)] = (
        pydantic.Field(
            description="Keywords (all must match, as whole words), or words matched by "
            "meaning (mode semantic or hybrid)."
        )
    )
    mode: Literal["keyword", "semantic", "hybrid"] | None = pydantic.Field(
        default=None,
        description="keyword: whole words; semantic: by meaning (needs the server's "
        "JOBSYS_EMBEDDER); hybrid: both, fused (best first). Default: hybrid when an "
        "embedder is set, else keyword.",
    )
    limit: Limit = 20


class NoArgs(Args):
    """A tool that takes no arguments (any given is refused, by name)."""


# --- the shape -----------------------------------------------------------------------------


def check_shape(tool: str, arguments: Any) -> None:
    """Refuse arguments that are not an object, nested deeper than ``MAX_DEPTH``, larger than
    ``MAX_ARGUMENT_BYTES`` once encoded, or holding strings no database can store (a NUL
    character, a lone surrogate): as the HTTP API refuses such bodies."""
    if not isinstance(arguments, dict):
        raise InvalidArguments(tool, [_field([], "must be a JSON object", "type")])
    _walk(tool, arguments)
    if len(json.dumps(arguments, default=str)) > MAX_ARGUMENT_BYTES:
        problem = f"larger than {MAX_ARGUMENT_BYTES} bytes; pass references, not data"
        raise InvalidArguments(tool, [_field([], problem, "too_large")])


def _field(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def _walk(tool: str, value: Any) -> None:
    """Check the depth and the strings of ``value`` (iteratively: no recursion limit)."""
    stack: list[tuple[Any, list[Any]]] = [(value, [])]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, dict | list):
            if len(loc) >= MAX_DEPTH:
                problem = f"nested deeper than {MAX_DEPTH} levels; flatten the input"
                raise InvalidArguments(tool, [_field(loc[:4], problem, "too_deep")])
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    _check_text(tool, key, [*loc, key[:40]])
                stack.append((child, [*loc, key if isinstance(key, int) else key[:40]]))
        elif isinstance(item, str):
            _check_text(tool, item, loc)


def _check_text(tool: str, text: str, loc: list[Any]) -> None:
    if UNSTORABLE.search(text):
        problem = "holds a NUL character or a lone surrogate, which cannot be stored; remove it"
        raise InvalidArguments(tool, [_field(loc[:8], problem, "string_unstorable")])


class PauseArgs(Args):
    """``job_pause``, ``job_resume``: a schedule by id, or a job by name."""

    id: Id | None = pydantic.Field(None, description="A schedule id (sch_...).")
    job: Name | None = pydantic.Field(
        None, description="A job's name: none of its runs starts while it is paused."
    )


class QueueArgs(Args):
    """``queue_pause``, ``queue_resume``: a queue by name, or everything."""

    name: Name | None = pydantic.Field(None, description="The queue's name (see queue_list).")
    all: bool = pydantic.Field(False, description="Every queue (everything), instead of one.")
