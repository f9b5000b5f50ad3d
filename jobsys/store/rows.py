"""Row shapes: the one constructor of a new run row, of a new workflow-run row, and of a
run's error.

Every path that makes a run builds its row here: a submit (``Client.submit``), a schedule's
fire (``firing.py``) and a workflow's step (``workflow_runs.py``); every workflow run is
built by ``new_workflow_run`` (``WorkflowStore.create``, a fire of a schedule whose target
is a workflow); and every error stored on a run, whoever ends it, by ``run_error``. A new
column of ``jobsys_runs`` is given its value here.

A row holds the columns its path sets and no others (the rest take their defaults): the
runs inserted together in one statement must have the same columns, and the hot path binds
no more than it needs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import traceback as tb
import uuid
from collections.abc import Iterable
from typing import Any

from jobsys.declare import flow, jobs, workflows
from jobsys.store.records import new_run_id, without_nul
from jobsys.store.run_states import RunState

MAX_TRACEBACK_CHARS = 20_000
_PENDING, _BLOCKED = RunState.PENDING.value, RunState.BLOCKED.value
DELAYED = "delayed"
ACTOR = "actor"
"""``waiting["reason"]`` of a run kept in the store until it is due (``delayed``)."""


@dataclasses.dataclass(frozen=True)
class Fire:
    """The fire of a schedule a run belongs to."""

    schedule_id: str
    schedule_version: int
    fire_at: dt.datetime
    """The cadence's time of the fire (UTC)."""
    trigger: str
    """``scheduled``, ``manual`` or ``catch-up``."""
    key: str | None
    """Unique per fire (schedule and fire time); ``None`` for a manual fire."""


def new_run(
    spec: jobs.JobSpec,
    input: Any,
    *,
    principal: dict[str, Any],
    principal_id: str,
    tenant: str,
    now: dt.datetime,
    run_id: str | None = None,
    meta: dict[str, Any] | None = None,
    tags: Iterable[str] = (),
    sealed: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    delay: float | None = None,
    due: dt.datetime | None = None,
    held: bool = False,
    blocked: bool = False,
    published: bool = True,
    idempotency_key: str | None = None,
    parent_id: str | None = None,
    workflow_id: str | None = None,
    fire: Fire | None = None,
) -> dict[str, Any]:
    """A new run of ``spec`` as a row of ``jobsys_runs``, pending (or ``blocked``: waiting
    for the runs it depends on).

    ``priority``, ``max_attempts`` and ``timeout`` default to the job's; ``tags`` are added to
    the job's; ``delay`` or ``due``: seconds before it may start, or when (the reconciler does
    not count it lost before then); ``held``: it is due later than the delay horizon, so it
    waits in the store, unpublished, its ``waiting`` saying until when, and a worker's reaper
    publishes it when it is due (``RunStore.claim_due``); ``published``: its message is sent
    right after the insert (otherwise ``published_at`` stays empty until it is, and the
    reconciler sends it if no one does).
    A run a schedule's ``fire`` makes carries the fire; any other carries its idempotency
    key, parent and delay, and a workflow step its ``workflow_id``."""
    row: dict[str, Any] = {
        "id": run_id or new_run_id(),
        "job": spec.name,
        "job_version": spec.version,
        "state": _BLOCKED if blocked else _PENDING,
        "queue": spec.queue,
        "priority": spec.priority if priority is None else priority,
        "input": input,
        "attempts": 0,
        "max_attempts": spec.retry.max_attempts if max_attempts is None else max_attempts,
        "timeout": spec.timeout if timeout is None else timeout,
        "dispatch": 1,
        "lost": 0,
        "meta": {} if meta is None else meta,
        "tags": sorted(set(spec.tags).union(tags)),
        "principal": principal,
        "principal_id": principal_id,
        "tenant": tenant,
        "sealed": sealed,
        "cancel_requested": False,
        "created_at": now,
        "published_at": now if published and not blocked and not held else None,
        # (always bound, null for most jobs: the rows of one insert, a beat's fires of many
        # jobs among them, have the same columns)
        "limit_key": _limit_key(spec, input, principal_id, tenant),
    }
    if fire is not None:
        row["schedule_id"] = fire.schedule_id
        row["schedule_version"] = fire.schedule_version
        row["fire_at"] = fire.fire_at
        row["trigger"] = fire.trigger
        row["fire_key"] = fire.key
        return row
    row["idempotency_key"] = idempotency_key
    row["parent_id"] = parent_id
    if due is None and delay:
        due = now + dt.timedelta(seconds=delay)
    row["next_attempt_at"] = due
    if held and not blocked:  # (a blocked run says so when it is released: ``release``)
        row["waiting"] = delayed(due or now, now)
    elif spec.external and not blocked:  # (no worker runs it: ``actors.py``)
        row["waiting"] = actor_waiting(now)
    if workflow_id is not None:
        row["workflow_id"] = workflow_id
    return row


def _limit_key(spec: jobs.JobSpec, input: Any, principal_id: str, tenant: str) -> str | None:
    """The run's concurrency key, for a job that limits its runs per key."""
    if spec.flow is None or spec.flow.concurrency_key is None:
        return None
    return flow.key_of(spec.flow.concurrency_key, input, principal_id, tenant)


def actor_waiting(since: dt.datetime) -> dict[str, Any]:
    """Why a run of an external job waits (``RunRecord.waiting``): for an outside actor to
    take it (``actors.py``)."""
    return {
        "reason": ACTOR,
        "message": "waiting for an outside actor to take it (POST /api/v1/runs/{id}/take, the "
        "MCP tool job_take or `jobsys runs take`)",
        "since": since.astimezone(dt.UTC).isoformat(),
    }


def delayed(due: dt.datetime, since: dt.datetime) -> dict[str, Any]:
    """Why a run kept in the store until it is due waits (``RunRecord.waiting``): ``until``
    its start, an ISO time in UTC."""
    at = due.astimezone(dt.UTC)
    return {
        "reason": DELAYED,
        "message": f"delayed until {at:%Y-%m-%d %H:%M:%S} UTC: kept in the run store, queued "
        "when it is due",
        "until": at.isoformat(),
        "since": since.astimezone(dt.UTC).isoformat(),
    }


def defaults(now: dt.datetime) -> dict[str, Any]:
    """The columns of a new pending run that ``new_run`` sets and a hand-made row may leave
    out (``RunStore.insert`` fills them in)."""
    return {
        "state": _PENDING,
        "attempts": 0,
        "dispatch": 1,
        "lost": 0,
        "cancel_requested": False,
        "created_at": now,
        "published_at": now,
        "meta": {},
        "tags": [],
    }


def new_workflow_id() -> str:
    return "wf_" + uuid.uuid4().hex[:24]


def new_workflow_run(
    wf: workflows.Workflow,
    definition: dict[str, Any],
    input: dict[str, Any],
    *,
    principal: dict[str, Any],
    principal_id: str,
    tenant: str,
    now: dt.datetime,
    workflow_id: str | None = None,
    sealed: str | None = None,
) -> dict[str, Any]:
    """A new running workflow run as a row of ``jobsys_workflow_runs``. ``definition``: the
    workflow as the run keeps it (its secrets redacted), to which ``sealed``, the run's
    sealed secrets, is added; it times out ``wf.timeout`` seconds from ``now``."""
    return {
        "id": workflow_id or new_workflow_id(),
        "workflow": wf.name,
        "definition": {**definition, workflows.SEALED_KEY: sealed} if sealed else definition,
        "state": workflows.WorkflowState.RUNNING.value,
        "input": input,
        "skipped": [],
        "principal": principal,
        "principal_id": principal_id,
        "tenant": tenant,
        "created_at": now,
        "timeout_at": now + dt.timedelta(seconds=wf.timeout),
    }


def run_error(
    reason: str,
    error: BaseException | str,
    message: str | None = None,
    traceback: bool = False,
) -> dict[str, Any]:
    """A run's ``error``: ``type`` (the exception's class name, or ``error`` when it is a name),
    ``message`` (``message``, or else the exception's text), ``reason`` (``exception``,
    ``timeout``, ``cancelled``, ``worker_lost``, ``dependency``, ...) and ``traceback`` (the
    exception's, its last ``MAX_TRACEBACK_CHARS``, with ``traceback``; ``None`` otherwise).
    NUL characters, which the store cannot keep, are written ``\\x00``."""
    if isinstance(error, BaseException):
        kind = type(error).__name__
        text = str(error) if message is None else message
        trace = "".join(tb.format_exception(error))[-MAX_TRACEBACK_CHARS:] if traceback else None
    else:
        kind, text, trace = error, message or "", None
    return {
        "type": kind,
        "message": without_nul(text),
        "reason": reason,
        "traceback": without_nul(trace) if trace is not None else None,
    }
