"""Runs: submit (background or waited for), list, filter, search, show, history (events), logs
(also streamed), result, cancel, retry."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from jobsys.base import errors, timeparse
from jobsys.base.timeparse import DurationSeconds
from jobsys.http import sse
from jobsys.http.auth import ClientDep, StreamClientDep
from jobsys.http.errors import ApiError
from jobsys.http.models import MAX_WAIT, SubmitBody
from jobsys.service import client as client_mod
from jobsys.store import runs

router = APIRouter(prefix="/api/v1", tags=["runs"])

RunIdPath = Annotated[str, Path(min_length=1, max_length=64, description="A run id.")]
WaitQuery = Annotated[
    DurationSeconds,
    Query(ge=0, le=MAX_WAIT, allow_inf_nan=False, description="Seconds to wait (or 30s, 2m)."),
]


def run_url(run_id: str) -> str:
    return f"/api/v1/runs/{run_id}"


def wait_for(c: client_mod.Client, run_id: str, seconds: float) -> runs.RunRecord:
    """The run's record once it is finished, or when ``seconds`` have passed (polling the
    store: safe from any number of threads, unlike a shared result-backend subscription)."""
    deadline = time.monotonic() + seconds
    pause = 0.05
    while True:
        record = c.status(run_id)
        left = deadline - time.monotonic()
        if record.terminal or left <= 0:
            return record
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, 0.5)


def _finished(record: runs.RunRecord) -> dict[str, Any]:
    return {
        "run_id": record.id,
        "state": record.state.value,
        "output": record.output,
        "error": record.error,
        "run": record.to_json(),
    }


@router.post(
    "/jobs/{name}/runs",
    tags=["jobs"],
    status_code=202,
    summary="Submit a run (background: 202 with its id; with wait: 200 with its output)",
)
def submit(
    name: Annotated[str, Path(min_length=1, max_length=200)],
    c: ClientDep,
    body: Annotated[SubmitBody | None, Body()] = None,
) -> JSONResponse:
    body = body or SubmitBody.model_validate({})
    options = client_mod.SubmitOptions(
        idempotency_key=body.idempotency_key,
        tags=tuple(body.tags),
        metadata=body.metadata,
        countdown=body.countdown,
        start_at=body.start_at,
        depends_on=tuple(body.depends_on),
        run_anyway=body.run_anyway,
        priority=body.priority,
        require_queued=body.require_queued,
    )
    run_id = c.submit(name, body.input, options)
    if body.wait > 0:
        record = wait_for(c, run_id, body.wait)
        if record.terminal:
            return JSONResponse(_finished(record), status_code=200)
        state = record.state.value
    else:
        state = c.status(run_id).state.value  # pending, blocked, or an idempotent repeat's
    return JSONResponse({"run_id": run_id, "state": state, "url": run_url(run_id)}, 202)


def parse_instant(text: str | None, field: str, ahead: bool = False) -> dt.datetime | None:
    """An ISO 8601 time (UTC if it names no offset) or an age such as ``30m``, ``2h``, ``7d``
    (``ahead``: a time from now, not ago)."""
    if text is None or text == "":
        return None
    try:
        return timeparse.parse_instant(text, 1 if ahead else -1)
    except ValueError as exc:
        raise ApiError(
            422,
            "InvalidRequest",
            f"{field}: {exc}",
            [{"loc": ["query", field], "msg": "not a time", "type": "datetime_parsing"}],
        ) from None


@router.get("/runs", summary="List runs, newest first (filters and keyword or semantic search)")
def list_runs(
    c: ClientDep,
    job: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
    tag: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[str | None, Query(max_length=64, description="ISO time or 30m/2h/7d")] = None,
    until: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[str | None, Query(max_length=500, description="Keywords")] = None,
    mode: Annotated[
        Literal["keyword", "semantic", "hybrid"] | None,
        Query(
            description="How q matches: whole words, meaning (needs JOBSYS_EMBEDDER), or both "
            "fused (best first); default hybrid when an embedder is set, else keyword."
        ),
    ] = None,
    principal: Annotated[str | None, Query(max_length=200)] = None,
    schedule: Annotated[
        str | None, Query(max_length=64, description="Only runs this schedule made.")
    ] = None,
    workflow: Annotated[
        str | None, Query(max_length=64, description="Only steps of this workflow run (wf_...).")
    ] = None,
    parent: Annotated[
        str | None, Query(max_length=64, description="Only runs made from this run.")
    ] = None,
    exhausted: Annotated[
        bool | None,
        Query(description="Only runs that used all their attempts (true) or not (false)."),
    ] = None,
    paused: Annotated[
        bool | None,
        Query(description="Only the waiting runs a pause holds (true), or all but those."),
    ] = None,
    archived: Annotated[
        bool, Query(description="Only archived runs (default lists leave them out).")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    mode_used, found = c.list_scored(
        job=job or None,
        state=state or None,
        since=parse_instant(since, "since"),
        until=parse_instant(until, "until"),
        tag=tag or None,
        principal_id=principal or None,
        limit=limit,
        search=q or None,
        schedule_id=schedule or None,
        workflow_id=workflow or None,
        parent_id=parent or None,
        exhausted=exhausted,
        paused=paused,
        archived=archived,
        mode=mode,
    )
    if not q:
        return {"runs": [r.to_json() for r, _ in found]}
    # a search says its mode; a ranked one (semantic, hybrid) gives each run its score
    return {
        "runs": [r.to_json() | ({} if s is None else {"score": s}) for r, s in found],
        "mode": mode_used,
    }


@router.get("/runs/{run_id}", summary="One run: input, output, progress, attempts, error")
def show_run(run_id: RunIdPath, c: ClientDep) -> dict[str, Any]:
    return c.status(run_id).to_json()


@router.get("/runs/{run_id}/events", summary="The run's history: state changes and attempts")
def run_events(run_id: RunIdPath, c: ClientDep) -> dict[str, Any]:
    """Every change of the run's state (from, to, attempt, worker, error), who cancelled or
    retried it, and its attempts with their timings and errors, oldest first."""
    return c.events(run_id).to_json()


@router.get("/runs/{run_id}/logs", summary="The run's log lines after a line id")
def run_logs(
    run_id: RunIdPath,
    c: ClientDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> dict[str, Any]:
    return {"logs": [sse.line_json(x) for x in c.logs(run_id, after)]}


@router.get(
    "/runs/{run_id}/logs/stream",
    summary="Server-sent events: log, state (the record, on a change of state), progress, end",
    response_class=StreamingResponse,
)
async def stream_logs(
    run_id: RunIdPath,
    request: Request,
    c: StreamClientDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    last_event_id: Annotated[str | None, Header(max_length=30)] = None,
) -> StreamingResponse:
    await run_in_threadpool(c.status, run_id)  # 404 / 403 now, before the stream starts
    if last_event_id and last_event_id.isdigit():
        after = max(after, int(last_event_id))
    return StreamingResponse(
        sse.events(c, run_id, after, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/runs/{run_id}/result", summary="The run's output (waiting up to ?wait= seconds)")
def run_result(run_id: RunIdPath, c: ClientDep, wait: WaitQuery = 0) -> JSONResponse:
    record = wait_for(c, run_id, wait) if wait else c.status(run_id)
    if not record.terminal:
        raise errors.InvalidTransition(run_id, record.state.value, "read the result of")
    out: dict[str, Any] = {"run_id": record.id, "state": record.state.value}
    out["output"] = record.output if record.state is runs.RunState.COMPLETED else None
    if record.state is not runs.RunState.COMPLETED:
        out["error"] = record.error
    return JSONResponse(out)


@router.post("/runs/{run_id}/cancel", summary="Cancel: a waiting run never starts")
def cancel_run(run_id: RunIdPath, c: ClientDep) -> dict[str, Any]:
    return c.cancel(run_id).to_json()


@router.post(
    "/runs/{run_id}/retry", status_code=202, summary="Submit a failed or cancelled run again"
)
def retry_run(run_id: RunIdPath, c: ClientDep) -> dict[str, Any]:
    new_id = c.retry(run_id)
    return {"run_id": new_id, "retry_of": run_id, "url": run_url(new_id)}
