"""How the MCP tools answer: the tool results and the errors.

A success is a tool result whose text is the answer as JSON and whose structured content is the
same object. Every failure is a tool result with ``isError`` whose text is the jobsys error's
one-line message (what went wrong and how to fix it) and whose structured content is the HTTP
API's error body, ``{"error": {"type", "message", "fields": [{"loc", "msg", "type"}]}}``; an
unexpected exception is answered as an ``InternalError`` and logged, never with a traceback.

Also here: the JSON views of runs, workflow runs and schedules that several tools give.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import mcp.types as types

from jobsys.base import errors
from jobsys.service.client import Client, waiting_message
from jobsys.store import run_states, runs, schedules, workflow_runs

log = logging.getLogger("jobsys.mcp")

MAX_MESSAGE = 1000

# --- errors --------------------------------------------------------------------------------


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


def bad_argument(field: str, problem: str) -> errors.InvalidInput:
    """The error of one bad field of a tool's arguments."""
    return errors.InvalidInput("arguments", [{"loc": [field], "msg": problem, "type": "value"}])


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, control characters escaped, at most ``limit`` characters."""
    flat = " ".join(text.split())
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 12] + " (truncated)"


def error_body(exc: BaseException) -> dict[str, Any]:
    """The HTTP API's error body for an exception (its type, message and fields, as
    ``jobsys.base.errors`` gives them)."""
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
    for e in errors.fields(exc) if isinstance(exc, errors.JobsysError) else []:
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
    """What get_job_status and job_show give for a run."""
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
    waiting = waiting_message(r)
    if waiting:  # why it has not started (no live worker knows its job, a start time)
        out["waiting"] = waiting
        if r.waiting and r.waiting.get("reason"):  # (``delayed``, ``concurrency_limit``...)
            out["waiting_reason"] = r.waiting["reason"]
    if r.next_attempt_at is not None and r.state in run_states.WAITING:
        out["not_before"] = r.next_attempt_at.isoformat()
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


def workflow_status(c: Client, w: workflow_runs.WorkflowRecord) -> dict[str, Any]:
    steps = c.workflows.steps(w.id)
    return {
        "workflow_run_id": w.id,
        "workflow": w.workflow,
        "state": w.state.value,
        "finished": w.terminal,
        "output": w.output,
        "error": _public_error(w.error),
        "skipped": w.skipped,
        "withheld": list(w.withheld),
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
