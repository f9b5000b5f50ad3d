"""The jobsys MCP tools, over a ``Client`` (built on the low-level ``mcp.server.Server``).

Generic tools (the names agents and the issue use):

* ``list-jobs``, ``execute-job`` (inline or background), ``get-job-status``,
  ``register-job``, ``remove-job`` (runtime job definitions, ``jobsys.definitions``);
* durable work: ``job_create`` (a background run, or a schedule), ``job_list``, ``job_show``,
  ``job_update``, ``job_pause``, ``job_resume``, ``job_cancel``, ``job_result``, ``job_search``.

Besides them, one tool per job the caller may execute, ``run__<job name>``, whose input schema
is the job's input JSON schema (from its pydantic model): it runs the job and waits up to
``JOB_TOOL_WAIT`` seconds for the output. The tool list is computed on every ``tools/list``, so
jobs registered at runtime appear (and removed ones go) without restarting the server.

Every failure is a tool result with ``isError`` whose text is the jobsys error's one-line
message (what went wrong and how to fix it) and whose structured content is the HTTP API's
error body, ``{"error": {"type", "message", "fields": [{"loc", "msg", "type"}]}}``. Unknown
tools and bad arguments are answered the same way, never with a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import importlib.metadata
import json
import logging
import re
import sys
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
import mcp.types as types
import pydantic
from anyio.streams.memory import MemoryObjectSendStream
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.models import InitializationOptions
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from jobsys import (
    cadence,
    definitions,
    errors,
    execute,
    jobs,
    runs,
    schedules,
    search,
    workflows,
)
from jobsys.client import Client, SubmitOptions

log = logging.getLogger("jobsys.mcp")

Context = ServerRequestContext[Any, Any]
ClientFor = Callable[[Context], Client]
"""Resolves the client of a request (one client over stdio; the token's principal over HTTP)."""

JOB_TOOL_PREFIX = "run__"
JOB_TOOL_WAIT = 60.0
"""Seconds a per-job tool waits for the output before answering with the run id."""
MAX_WAIT = 300.0
MAX_DEPTH = 32
"""Arguments nested deeper than this are refused (as the HTTP API refuses such bodies)."""
MAX_ARGUMENT_BYTES = 1 << 20
MAX_MESSAGE = 1000
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""Characters no database stores (PostgreSQL refuses NUL; lone surrogates cannot be encoded)."""
TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

# --- arguments -----------------------------------------------------------------------------

Name = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=200)]
Id = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=100)]
Short = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=200)]
Wait = Annotated[float, pydantic.Field(ge=0, le=MAX_WAIT)]
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


class RunOptions(Args):
    tags: list[Short] = pydantic.Field([], max_length=50, description="Tags of the run.")
    metadata: dict[str, Any] = pydantic.Field({}, description="Metadata of the run.")
    idempotency_key: Short | None = pydantic.Field(
        None, description="Submitting twice with the same key gives the same run."
    )
    priority: int | None = pydantic.Field(None, ge=0, le=9, description="0 (low) to 9 (high).")

    def submit_options(self) -> SubmitOptions:
        return SubmitOptions(
            idempotency_key=self.idempotency_key,
            tags=tuple(self.tags),
            metadata=self.metadata,
            priority=self.priority,
        )


class ExecuteArgs(RunOptions):
    job: Name = pydantic.Field(description="The job (or workflow) name, as list-jobs gives it.")
    input: dict[str, Any] = pydantic.Field({}, description="The job's input (its input_schema).")
    mode: Literal["inline", "background"] = pydantic.Field(
        "inline",
        description="inline: wait up to `timeout` s and return the output; background: "
        "return the run id at once (poll get-job-status).",
    )
    timeout: Wait = pydantic.Field(30.0, description="Inline mode: seconds to wait (0 to 300).")


class StatusArgs(Args):
    run_id: Id = pydantic.Field(description="A run id, or a workflow run id (wf_...).")
    logs: int = pydantic.Field(10, ge=0, le=200, description="How many of the last log lines.")


class RemoveArgs(Args):
    name: Name = pydantic.Field(description="The runtime-registered job to remove.")


Overlap = Literal["skip", "allow", "queue"]
Misfire = Literal["run_once", "skip"]


class When(Args):
    """The cadence and options of a schedule (one of every, cron, once, ongoing)."""

    every: float | None = pydantic.Field(None, description="Seconds between fires (>= 1).")
    cron: Short | None = pydantic.Field(None, description="Five cron fields, or @daily, ...")
    timezone: Short | None = pydantic.Field(None, description="IANA zone of `cron` (UTC).")
    once: Short | None = pydantic.Field(
        None, description="Fire once at this ISO 8601 time (with an offset or Z)."
    )
    ongoing: float | None = pydantic.Field(
        None, description="Every N seconds until the job says it is done."
    )
    start: Short | None = pydantic.Field(None, description="Not before this ISO 8601 time.")
    end: Short | None = pydantic.Field(None, description="Not after this ISO 8601 time.")
    max_runs: int | None = pydantic.Field(None, ge=1, description="Complete after this many.")
    jitter: float | None = pydantic.Field(None, ge=0, description="Random seconds added.")
    overlap: Overlap | None = pydantic.Field(None, description="While the last run is active.")
    misfire: Misfire | None = pydantic.Field(None, description="After downtime.")
    grace: float | None = pydantic.Field(None, ge=0, description="Seconds late still on time.")

    def changes(self) -> dict[str, Any]:
        """The ``cadence.schedule`` keywords given (and only those)."""
        kinds = {"interval": self.every, "cron": self.cron, "once": self.once}
        kinds["ongoing"] = self.ongoing
        chosen = [(k, v) for k, v in kinds.items() if v is not None]
        if len(chosen) > 1:
            raise _bad("schedule", "give only one of every, cron, once, ongoing")
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
    limit: Limit = 20


class IdArgs(Args):
    id: Id = pydantic.Field(description="A run id, a schedule id (sch_...) or a workflow run id.")


class UpdateArgs(When):
    id: Id = pydantic.Field(description="The schedule id (sch_...).")
    input: dict[str, Any] | None = pydantic.Field(None, description="New input of each run.")
    metadata: dict[str, Any] | None = pydantic.Field(None, description="New metadata.")


class ResultArgs(IdArgs):
    wait: Wait = pydantic.Field(0.0, description="Seconds to wait for it to finish (0 to 300).")


class SearchArgs(Args):
    query: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=500)] = (
        pydantic.Field(description="Keywords (all must match, as whole words).")
    )
    limit: Limit = 20


# --- errors --------------------------------------------------------------------------------


class ToolError(errors.JobsysError):
    """A tool call this server cannot take (unknown tool, malformed arguments)."""


class InvalidArguments(errors.InvalidInput):
    """A tool's arguments failed its input schema; ``errors`` names each bad field."""

    def __init__(self, tool: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(tool, problems, "arguments")
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in problems]
        self.args = (
            f"invalid arguments for tool {tool!r}: "
            + "; ".join(parts)
            + " (tools/list gives each tool's input schema)",
        )


def _bad(field: str, problem: str) -> errors.InvalidInput:
    return errors.InvalidInput("arguments", [{"loc": [field], "msg": problem, "type": "value"}])


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, control characters escaped, at most ``limit`` characters."""
    flat = " ".join(text.split())
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 12] + " (truncated)"


def error_body(exc: BaseException) -> dict[str, Any]:
    """The HTTP API's error body for an exception."""
    if isinstance(exc, errors.JobsysError):
        kind, message = type(exc).__name__, one_line(str(exc))
    else:  # a bug: say so, keep the details in the server's log
        log.error("jobsys mcp: unexpected error", exc_info=exc)
        kind = "InternalError"
        message = one_line(
            f"internal error ({type(exc).__name__}: {exc}); the call did not complete, "
            "retry it, and report this if it persists"
        )
    fields = []
    for e in getattr(exc, "errors", None) or []:
        if isinstance(e, dict):
            loc = [p if isinstance(p, int) else one_line(str(p), 100) for p in e.get("loc", [])]
            fields.append(
                {"loc": loc, "msg": one_line(str(e.get("msg", ""))), "type": str(e.get("type"))}
            )
    body: dict[str, Any] = {"type": kind, "message": message, "fields": fields}
    if isinstance(exc, errors.RunFailed):
        body["run_id"] = exc.run_id
    return {"error": body}


# --- answers -------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def ok(answer: dict[str, Any]) -> types.CallToolResult:
    safe = _json_safe(answer)
    text = json.dumps(safe, ensure_ascii=False)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=safe
    )


def failed(exc: BaseException) -> types.CallToolResult:
    body = error_body(exc)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=body["error"]["message"])],
        structured_content=body,
        is_error=True,
    )


def run_summary(r: runs.RunRecord) -> dict[str, Any]:
    return {
        "run_id": r.id,
        "job": r.job,
        "state": r.state.value,
        "progress": r.progress,
        "error": (r.error or {}).get("message"),
        "created_at": r.created_at.isoformat(),
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
    }


def run_status(c: Client, r: runs.RunRecord, n_logs: int = 10) -> dict[str, Any]:
    """What get-job-status and job_show give for a run."""
    out = {
        "run_id": r.id,
        "job": r.job,
        "state": r.state.value,
        "finished": r.terminal,
        "progress": r.progress,
        "output": r.output,
        "error": _public_error(r.error),
        "attempts": r.attempts,
        "max_attempts": r.max_attempts,
        "worker": r.worker,
        "tags": r.tags,
        "input": r.input,
        "created_at": r.created_at.isoformat(),
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
        "duration": r.duration,
        "schedule_id": r.schedule_id,
        "workflow_id": r.workflow_id,
    }
    if n_logs:
        lines = c.store.logs(r.id)[-n_logs:]
        out["logs"] = [
            {"at": line.at.isoformat(), "attempt": line.attempt, "message": line.message}
            for line in lines
        ]
    return out


def _public_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    if not error:
        return None
    return {k: error.get(k) for k in ("type", "message", "reason")}


def workflow_status(c: Client, w: workflows.WorkflowRecord) -> dict[str, Any]:
    steps = c.workflows.steps(w.id)
    return {
        "workflow_run_id": w.id,
        "workflow": w.workflow,
        "state": w.state.value,
        "finished": w.terminal,
        "output": w.output,
        "error": _public_error(w.error),
        "skipped": w.skipped,
        "steps": {
            name: {"state": s.state, "runs": [r.id for r in s.runs]} for name, s in steps.items()
        },
        "created_at": w.created_at.isoformat(),
        "finished_at": w.finished_at.isoformat() if w.finished_at else None,
    }


def schedule_json(s: schedules.ScheduleRecord) -> dict[str, Any]:
    out = s.to_json()
    out["schedule_id"] = out.pop("id")
    return out


# --- jobs ----------------------------------------------------------------------------------


def job_kind(spec: jobs.JobSpec) -> str:
    """``code`` (declared in the catalog), or ``alias`` / ``http`` (registered at runtime)."""
    if spec.module != definitions.MODULE:
        return "code"
    return "alias" if "alias_of" in spec.labels else "http"


def tool_name(job: str) -> str:
    """The per-job tool's name: ``run__<job>``, shortened with a hash past 128 characters."""
    name = JOB_TOOL_PREFIX + job
    if TOOL_NAME_RE.fullmatch(name):
        return name
    digest = hashlib.sha256(job.encode()).hexdigest()[:10]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", job)[: 128 - len(JOB_TOOL_PREFIX) - 11]
    return f"{JOB_TOOL_PREFIX}{cleaned}_{digest}"


def runnable_jobs(c: Client) -> Iterator[jobs.JobSpec]:
    """The visible jobs this principal may execute."""
    allowed = c.visible_jobs("execute")
    for spec in c.registry:
        if not spec.hidden and (allowed is None or spec.name in allowed):
            yield spec


def job_json(spec: jobs.JobSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": spec.description,
        "kind": job_kind(spec),
        "tags": list(spec.tags),
        "labels": dict(spec.labels),
        "input_schema": spec.input_schema(),
        "output_schema": spec.output_schema(),
        "tool": tool_name(spec.name),
    }


def _label_matches(spec: jobs.JobSpec, label: str) -> bool:
    key, sep, value = label.partition("=")
    return key in spec.labels and (not sep or spec.labels[key] == value)


def list_jobs(c: Client, a: ListJobsArgs) -> dict[str, Any]:
    visible = c.visible_jobs()
    matching = set(c.registry.matching(a.query)) if a.query else set()
    found = []
    for spec in c.registry:
        if (spec.hidden and not a.include_hidden) or (
            visible is not None and spec.name not in visible
        ):
            continue
        if a.tag and a.tag not in spec.tags:
            continue
        if (a.label and not _label_matches(spec, a.label)) or (
            a.query and spec.name not in matching
        ):
            continue
        found.append(job_json(spec))
    flows = []
    if not a.tag and not a.label:
        wanted = set(search.words(a.query)) if a.query else set()
        for wf in sorted(c.registry.workflows.values(), key=lambda w: w.name):
            if wanted and not wanted <= set(search.words(f"{wf.name} {wf.description}")):
                continue
            flows.append(
                {
                    "name": wf.name,
                    "description": wf.description,
                    "kind": "workflow",
                    "steps": [{"name": s.name, "job": s.job} for s in wf.steps],
                    "input_schema": wf.input_model.model_json_schema(),
                }
            )
    return {"jobs": found, "workflows": flows}


def _is_workflow(c: Client, name: str) -> bool:
    return name not in c.registry and name in c.registry.workflows


def execute_job(c: Client, a: ExecuteArgs) -> dict[str, Any]:
    if _is_workflow(c, a.job):
        workflow_id = c.workflows.submit(a.job, a.input)
        if a.mode == "background" or not a.timeout:
            return {"workflow_run_id": workflow_id, "state": "running"}
        try:
            record = c.workflows.wait(workflow_id, a.timeout)
        except errors.WaitTimeout:
            return {**workflow_status(c, c.workflows.get(workflow_id)), "waited": a.timeout}
        if record.state is not workflows.WorkflowState.COMPLETED:
            raise errors.RunFailed(workflow_id, record.state.value, record.error)
        return workflow_status(c, record)
    run_id = c.submit(a.job, a.input, a.submit_options())
    if a.mode == "background" or not a.timeout:
        return {
            "run_id": run_id,
            "job": a.job,
            "state": c.status(run_id).state.value,
            "next": "poll get-job-status (or job_result with wait) with this run_id",
        }
    return wait_for_output(c, run_id, a.timeout)


def wait_for_output(c: Client, run_id: str, timeout: float) -> dict[str, Any]:
    """The run's output once it completes; a ``RunFailed`` error if it fails; its state and
    the advice to poll if it is still going after ``timeout`` s."""
    try:
        record = c.wait(run_id, timeout)
    except errors.WaitTimeout:
        record = c.status(run_id)
        return {
            **run_status(c, record, 0),
            "next": f"still {record.state.value} after {timeout:g} s: poll get-job-status",
        }
    if record.state is not runs.RunState.COMPLETED:
        raise errors.RunFailed(run_id, record.state.value, record.error)
    return run_status(c, record, 0)


def get_job_status(c: Client, a: StatusArgs) -> dict[str, Any]:
    if a.run_id.startswith("wf_"):
        return workflow_status(c, c.workflows.get(a.run_id))
    return run_status(c, c.status(a.run_id), a.logs)


def definition_schema() -> dict[str, Any]:
    """The input schema of ``register-job``: the fields of every kind of definition."""
    properties: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    for model in (
        definitions.AliasDefinition,
        definitions.HttpDefinition,
        definitions.WorkflowDefinition,
    ):
        schema = model.model_json_schema()
        defs.update(schema.get("$defs", {}))
        for key, value in schema.get("properties", {}).items():
            properties.setdefault(key, value)
    properties["kind"] = {
        "type": "string",
        "enum": ["alias", "http", "workflow"],
        "description": "alias: a catalog job (`target`) with bound `defaults`, `metadata` and "
        "an optional `schedule`; http: a call to `url` (allow-listed hosts only); workflow: "
        "`workflow` steps of registered jobs.",
    }
    out: dict[str, Any] = {"type": "object", "properties": properties, "required": ["name", "kind"]}
    if defs:
        out["$defs"] = defs
    return out


def register_job(c: Client, arguments: dict[str, Any]) -> dict[str, Any]:
    registered = c.definitions.register(arguments)
    return {"registered": registered, "tool": tool_name(str(arguments.get("name")))}


def remove_job(c: Client, a: RemoveArgs) -> dict[str, Any]:
    c.definitions.remove(a.name)
    return {"removed": a.name}


# --- durable work --------------------------------------------------------------------------


def job_create(c: Client, a: CreateArgs) -> dict[str, Any]:
    if a.schedule is None:
        if _is_workflow(c, a.job):
            return {"kind": "workflow_run", "workflow_run_id": c.workflows.submit(a.job, a.input)}
        run_id = c.submit(a.job, a.input, a.submit_options())
        return {"kind": "run", "run_id": run_id, "state": c.status(run_id).state.value}
    changes = a.schedule.changes()
    if "kind" not in changes:
        raise _bad("schedule", "give one of every, cron, once, ongoing")
    definition = cadence.schedule(**changes, input=a.input, metadata=a.metadata or None)
    record = c.schedules.create(a.job, definition, name=a.name)
    return {"kind": "schedule", "schedule": schedule_json(record)}


def job_list(c: Client, a: ListArgs) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if a.what in ("all", "runs"):
        found = c.list(job=a.job, state=a.state, tag=a.tag, limit=a.limit)
        out["runs"] = [run_summary(r) for r in found]
    if a.what in ("all", "schedules"):
        state = a.state if a.what == "schedules" else None
        found_s = c.schedules.list(state=state, job=a.job, limit=a.limit)
        out["schedules"] = [schedule_json(s) for s in found_s]
    if a.what in ("all", "workflow_runs"):
        flows = [w for w in c.workflows.list(limit=a.limit) if a.job in (None, w.workflow)]
        out["workflow_runs"] = [
            {"workflow_run_id": w.id, "workflow": w.workflow, "state": w.state.value} for w in flows
        ]
    return out


def _schedule_id(id: str, action: str) -> str:
    if not id.startswith("sch_"):
        raise _bad(
            "id",
            f"only schedules (ids sch_...) can be {action}; job_cancel stops a run "
            "and job_create starts a new one",
        )
    return id


def job_show(c: Client, a: IdArgs) -> dict[str, Any]:
    if a.id.startswith("sch_"):
        record = c.schedules.get(a.id)
        return {**schedule_json(record), "versions": c.schedules.versions(a.id)}
    if a.id.startswith("wf_"):
        return workflow_status(c, c.workflows.get(a.id))
    return run_status(c, c.status(a.id), 20)


def job_update(c: Client, a: UpdateArgs) -> dict[str, Any]:
    changes = a.changes()
    if a.input is not None:
        changes["input"] = a.input
    if a.metadata is not None:
        changes["metadata"] = a.metadata
    if not changes:
        raise _bad("id", "nothing to change: give a cadence, input, metadata or an option")
    return {"schedule": schedule_json(c.schedules.update(_schedule_id(a.id, "updated"), **changes))}


def job_pause(c: Client, a: IdArgs) -> dict[str, Any]:
    return {"schedule": schedule_json(c.schedules.pause(_schedule_id(a.id, "paused")))}


def job_resume(c: Client, a: IdArgs) -> dict[str, Any]:
    return {"schedule": schedule_json(c.schedules.resume(_schedule_id(a.id, "resumed")))}


def job_cancel(c: Client, a: IdArgs) -> dict[str, Any]:
    if a.id.startswith("sch_"):
        return {"schedule": schedule_json(c.schedules.delete(a.id)), "deleted": True}
    if a.id.startswith("wf_"):
        return workflow_status(c, c.workflows.cancel(a.id))
    return run_status(c, c.cancel(a.id), 0)


def job_result(c: Client, a: ResultArgs) -> dict[str, Any]:
    if a.id.startswith("sch_"):
        raise _bad("id", "a schedule has no result: job_show gives its last_run_id")
    if a.id.startswith("wf_"):
        try:
            record = c.workflows.wait(a.id, a.wait) if a.wait else c.workflows.get(a.id)
        except errors.WaitTimeout:
            record = c.workflows.get(a.id)
        if record.terminal and record.state is not workflows.WorkflowState.COMPLETED:
            raise errors.RunFailed(a.id, record.state.value, record.error)
        return {"id": a.id, "state": record.state.value, "finished": record.terminal} | (
            {"output": record.output} if record.terminal else {}
        )
    try:
        run = c.wait(a.id, a.wait) if a.wait else c.status(a.id)
    except errors.WaitTimeout:
        run = c.status(a.id)
    if run.terminal and run.state is not runs.RunState.COMPLETED:
        raise errors.RunFailed(a.id, run.state.value, run.error)
    out = {"id": a.id, "job": run.job, "state": run.state.value, "finished": run.terminal}
    return out | ({"output": run.output} if run.terminal else {"progress": run.progress})


def job_search(c: Client, a: SearchArgs) -> dict[str, Any]:
    visible = c.visible_jobs()
    names = [n for n in c.registry.matching(a.query) if visible is None or n in visible]
    found = c.list(search=a.query, limit=a.limit)
    return {
        "jobs": [
            {"name": n, "description": c.registry.get(n).description, "tool": tool_name(n)}
            for n in names
        ],
        "runs": [run_summary(r) for r in found],
    }


# --- the tool table ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ToolDef:
    name: str
    description: str
    args: type[Args] | None
    """``None``: the arguments are passed on as they are (validated by the callee)."""
    run: Callable[[Client, Any], dict[str, Any]]
    read_only: bool = False
    changes_tools: bool = False

    def schema(self) -> dict[str, Any]:
        if self.args is None:
            return definition_schema()
        schema = self.args.model_json_schema()
        schema.pop("title", None)
        schema.pop("description", None)
        return schema


TOOLS: tuple[ToolDef, ...] = (
    ToolDef(
        "list-jobs",
        "List the jobs you may run (filter by tag, label `key=value`, keywords), each with "
        "its name, description, kind (code, alias, http), tags, labels and input JSON schema, "
        "and the workflows.",
        ListJobsArgs,
        list_jobs,
        read_only=True,
    ),
    ToolDef(
        "execute-job",
        "Run a job (or workflow) with an input. mode inline waits up to `timeout` s and returns "
        "the output (or, if it takes longer, the run id to poll); mode background returns the "
        "run id at once. Poll with get-job-status.",
        ExecuteArgs,
        execute_job,
    ),
    ToolDef(
        "get-job-status",
        "The state, progress, output or error, attempts and last log lines of a run (or the "
        "steps of a workflow run, wf_...).",
        StatusArgs,
        get_job_status,
        read_only=True,
    ),
    ToolDef(
        "register-job",
        "Register (or replace) a job at runtime from a declarative definition, never code: an "
        "alias of a job with bound defaults, metadata and an optional schedule; an HTTP call to "
        "an allow-listed host; or a workflow of registered jobs. Every worker runs it without a "
        "restart; its run__ tool appears in tools/list.",
        None,
        register_job,
        changes_tools=True,
    ),
    ToolDef(
        "remove-job",
        "Remove a job registered at runtime (runs already made keep their records).",
        RemoveArgs,
        remove_job,
        changes_tools=True,
    ),
    ToolDef(
        "job_create",
        "Create durable work: one background run of a job (no `schedule`), or a schedule of "
        "it: `schedule` with one of every (seconds), cron (+ timezone), once (ISO time), "
        "ongoing (seconds, until the job says done). Returns the run id or the schedule.",
        CreateArgs,
        job_create,
    ),
    ToolDef(
        "job_list",
        "List runs (newest first), schedules and workflow runs; filter by job, state, tag.",
        ListArgs,
        job_list,
        read_only=True,
    ),
    ToolDef(
        "job_show",
        "Show a run (with its last logs), a schedule (sch_..., with its versions) or a workflow "
        "run (wf_..., with its steps).",
        IdArgs,
        job_show,
        read_only=True,
    ),
    ToolDef(
        "job_update",
        "Change a schedule (sch_...): its cadence (every, cron, timezone, once, ongoing), input, "
        "metadata or options; fields not given keep their value. Makes a new version.",
        UpdateArgs,
        job_update,
    ),
    ToolDef(
        "job_pause",
        "Pause a schedule (sch_...): it stops firing until job_resume.",
        IdArgs,
        job_pause,
    ),
    ToolDef(
        "job_resume",
        "Resume a paused schedule (sch_...): it fires again from now (missed fires are not "
        "replayed).",
        IdArgs,
        job_resume,
    ),
    ToolDef(
        "job_cancel",
        "Cancel: a run (a waiting run never starts, a running one is stopped); a workflow run "
        "(wf_..., with its pending steps); a schedule (sch_...) is DELETED: it never fires again "
        "and its runs keep their history (use job_pause to stop it for a while).",
        IdArgs,
        job_cancel,
    ),
    ToolDef(
        "job_result",
        "The output of a run or workflow run, waiting up to `wait` s; an error if it failed; "
        "`finished: false` if it is still going.",
        ResultArgs,
        job_result,
        read_only=True,
    ),
    ToolDef(
        "job_search",
        "Search by keywords: jobs whose name, description, tags or labels hold them, and runs "
        "whose error or logs hold them (or whose job matches).",
        SearchArgs,
        job_search,
        read_only=True,
    ),
)
BY_NAME = {t.name: t for t in TOOLS}


@functools.cache
def generic_tools() -> tuple[types.Tool, ...]:
    return tuple(
        types.Tool(
            name=t.name,
            description=t.description,
            input_schema=t.schema(),
            annotations=types.ToolAnnotations(read_only_hint=t.read_only),
        )
        for t in TOOLS
    )


def job_tool(spec: jobs.JobSpec) -> types.Tool | None:
    schema = spec.input_schema()
    if schema.get("type") != "object":
        return None  # execute-job still runs it
    kind = job_kind(spec)
    about = f" ({kind} job)" if kind != "code" else ""
    return types.Tool(
        name=tool_name(spec.name),
        description=f"Run job {spec.name}{about} and wait up to {JOB_TOOL_WAIT:g} s for its "
        f"output (longer runs answer with the run id: poll get-job-status). {spec.description}",
        input_schema=schema,
    )


def list_tools(c: Client) -> list[types.Tool]:
    tools = list(generic_tools())
    for spec in runnable_jobs(c):
        tool = job_tool(spec)
        if tool is not None:
            tools.append(tool)
    return tools


def call(c: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run tool ``name``; raises jobsys errors (turned into tool errors by the caller)."""
    check_shape(name, arguments)
    tool = BY_NAME.get(name)
    if tool is not None:
        if tool.args is None:
            return tool.run(c, arguments)
        try:
            parsed = tool.args.model_validate(arguments)
        except pydantic.ValidationError as exc:
            raise InvalidArguments(name, execute.field_errors(exc)) from None
        return tool.run(c, parsed)
    if name.startswith(JOB_TOOL_PREFIX):
        for spec in runnable_jobs(c):
            if tool_name(spec.name) == name:
                run_id = c.submit(spec.name, arguments)
                return wait_for_output(c, run_id, JOB_TOOL_WAIT)
    raise unknown_tool(c, name)


def unknown_tool(c: Client, name: str) -> ToolError:
    known = [t.name for t in TOOLS] + [tool_name(s.name) for s in runnable_jobs(c)]
    close = difflib.get_close_matches(name[:200], known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ToolError(f"unknown tool {name[:200]!r}{hint} (tools/list gives the tools)")


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


# --- the server ----------------------------------------------------------------------------


class JobsysServer(Server[Any]):
    """A low-level MCP server that announces ``tools.listChanged``."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


def build_server(client_for: ClientFor) -> Server[Any]:
    """The MCP server; ``client_for(ctx)`` gives the client each request acts with."""

    async def on_list_tools(
        ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        try:
            client = client_for(ctx)
            tools = await anyio.to_thread.run_sync(list_tools, client)
        except Exception as exc:
            message = error_body(exc)["error"]["message"]
            raise MCPError(code=types.INTERNAL_ERROR, message=message) from None
        return types.ListToolsResult(tools=tools)

    async def on_call_tool(
        ctx: Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            client = client_for(ctx)
            arguments = params.arguments if params.arguments is not None else {}
            answer = await anyio.to_thread.run_sync(call, client, params.name, arguments)
        except Exception as exc:
            return failed(exc)
        tool = BY_NAME.get(params.name)
        if tool is not None and tool.changes_tools:
            await _tools_changed(ctx)
        return ok(answer)

    return JobsysServer(
        "jobsys",
        version=_version(),
        instructions="Typed background jobs: list-jobs shows what you can run and each input "
        "schema; execute-job or a run__<job> tool runs one; get-job-status follows it.",
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


def _version() -> str:
    try:
        return importlib.metadata.version("jobsys")
    except importlib.metadata.PackageNotFoundError:
        return "0"


async def _tools_changed(ctx: Context) -> None:
    try:
        await ctx.session.send_tool_list_changed()
    except Exception:  # a client that cannot take it still gets its answer
        log.debug("jobsys mcp: tools/list_changed not sent", exc_info=True)


async def serve_stdio(client: Client) -> None:
    """Serve the tools over this process's stdin and stdout, acting as ``client``."""
    server = build_server(lambda _ctx: client)
    async with stdio_server() as (sdk_read, write_stream):
        send, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_answer_unreadable, sdk_read, send, write_stream.send)
            await server.run(read_stream, write_stream, server.create_initialization_options())
            tg.cancel_scope.cancel()


async def _answer_unreadable(
    source: AsyncIterable[SessionMessage | Exception],
    sink: MemoryObjectSendStream[SessionMessage | Exception],
    reply_with: Callable[[SessionMessage], Awaitable[None]],
) -> None:
    """Pass the messages on; answer a request the SDK could not read (nested too deeply for
    its parser, not JSON-RPC) with an error naming its id, instead of leaving the client to
    time out."""
    async with sink:
        async for item in source:
            reply = unreadable_reply(item) if isinstance(item, Exception) else None
            if reply is None:
                await sink.send(item)
            else:
                await reply_with(reply)


def unreadable_reply(exc: Exception) -> SessionMessage | None:
    """The JSON-RPC error answering the request that failed to parse with ``exc``; ``None``
    when no request id can be found in it (a notification, or garbage)."""
    if not isinstance(exc, pydantic.ValidationError):
        return None
    for problem in exc.errors():
        raw = problem.get("input")
        request_id = _request_id(raw)
        if request_id is None:
            continue
        if problem["type"] == "json_invalid":
            code, message = types.PARSE_ERROR, f"the request is not readable JSON: {problem['msg']}"
            if "recursion" in problem["msg"]:
                message += f" (tool arguments may nest at most {MAX_DEPTH} levels)"
        else:
            code, message = types.INVALID_REQUEST, f"not a JSON-RPC request: {problem['msg']}"
        error = types.ErrorData(code=code, message=one_line(message))
        return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error))
    return None


_ID = re.compile(r'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")')


def _request_id(raw: Any) -> int | str | None:
    """The id of a request, from its parsed form or, failing that, its raw text (where the
    SDK's client writes the id before the params)."""
    if isinstance(raw, dict):
        found = raw.get("id") if "method" in raw else None
        return found if isinstance(found, int | str) and not isinstance(found, bool) else None
    if not isinstance(raw, str):
        return None
    head = raw[: raw.find('"params"')] if '"params"' in raw else raw[:1000]
    match = _ID.search(head)
    if match is None or '"method"' not in raw[:2000]:
        return None
    value = json.loads(match.group(1))
    return value if isinstance(value, int | str) else None


def main_stdio(client: Client) -> None:
    """Run the stdio server until the client closes stdin."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    anyio.run(serve_stdio, client)
