"""Run records as read from the store: ``RunRecord`` and the smaller shapes beside it
(a log line, a claim, a filter, a reaper pass), and the helpers every layer uses on run
values (times, ids, NUL characters, JSON)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from typing import Any

import sqlalchemy as sa

from jobsys.base import bounds
from jobsys.store.run_states import TERMINAL, RunState


def as_json(record: Any) -> dict[str, Any]:
    """A record dataclass as JSON-ready values: times in ISO 8601, enums by value, and never
    its ``sealed`` secrets."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        if field.name == "sealed":
            continue
        value = getattr(record, field.name)
        if isinstance(value, dt.datetime):
            value = value.isoformat()
        elif isinstance(value, enum.Enum):
            value = value.value
        out[field.name] = value
    return out


NUL_MESSAGE = "contains a NUL character (\\u0000), which the run store cannot keep; remove it"


def nul_locs(value: Any, limit: int = 5) -> list[list[Any]]:
    """Where the JSON ``value`` holds a NUL character, in a string or a key (at most
    ``limit`` places): PostgreSQL keeps one neither in ``jsonb`` nor in text, so such a value
    is refused before it is written (the same on every backend)."""
    found: list[list[Any]] = []
    todo: list[tuple[Any, list[Any]]] = [(value, [])]
    while todo and len(found) < limit:
        item, loc = todo.pop()
        if isinstance(item, str):
            if "\x00" in item:
                found.append(loc)
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and "\x00" in key:
                    key = without_nul(key)
                    found.append([*loc, key])
                todo.append((child, [*loc, key]))
        elif isinstance(item, list | tuple):
            todo.extend((child, [*loc, i]) for i, child in enumerate(item))
    return found


def nul_errors(value: Any, *prefix: Any) -> list[dict[str, Any]]:
    """``nul_locs`` as field errors (``InvalidInput``'s shape), under ``prefix``."""
    return [
        {"loc": [*prefix, *loc], "type": "value_error", "msg": NUL_MESSAGE}
        for loc in nul_locs(value)
    ]


def without_nul(text: str) -> str:
    """``text`` with each NUL character written ``\\x00`` (log lines, messages, errors)."""
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_run_id() -> str:
    return uuid.uuid4().hex


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One run, as stored. Times are UTC; durations are seconds."""

    id: str
    job: str
    job_version: str
    state: RunState
    queue: str
    priority: int
    input: dict[str, Any]
    output: Any
    error: dict[str, Any] | None
    """``type``, ``message``, ``traceback`` and ``reason`` (exception, timeout, worker_lost)."""
    attempts: int
    """Attempts started so far (1 after the first start)."""
    max_attempts: int
    timeout: float
    dispatch: int
    """Token of the current message; a message with an older token is stale and ignored."""
    lost: int
    """Times a worker vanished while running this run."""
    progress: dict[str, Any] | None
    meta: dict[str, Any]
    tags: list[str]
    principal: dict[str, Any]
    principal_id: str
    tenant: str
    idempotency_key: str | None
    parent_id: str | None
    schedule_id: str | None
    workflow_id: str | None
    cancel_requested: bool
    worker: str | None
    worker_pid: int | None
    created_at: dt.datetime
    published_at: dt.datetime | None
    started_at: dt.datetime | None
    """When the first attempt started."""
    finished_at: dt.datetime | None
    duration: float | None
    """Seconds from the first start to the end."""
    lease_expires_at: dt.datetime | None
    deadline_at: dt.datetime | None
    next_attempt_at: dt.datetime | None
    """Not before this: the next attempt of a retrying run, or the start of a run submitted
    with a ``countdown`` or ``start_at``. Cleared when an attempt starts."""
    schedule_version: int | None = None
    fire_at: dt.datetime | None = None
    """For a run a schedule made: the fire it belongs to (the cadence's time, UTC)."""
    trigger: str | None = None
    """``scheduled``, ``manual`` (trigger now) or ``catch-up`` (after downtime)."""
    fire_key: str | None = None
    has_dependents: bool | None = None
    waiting: dict[str, Any] | None = None
    """Why a waiting run waits, when known: ``reason`` (``no_worker``: no live worker knows
    its job; ``parked``: the worker that took its message does not know the job, others do;
    ``not_queued``: the broker did not answer its producer; ``delayed``: it is kept in the
    store until its start, ``until``, an ISO time in UTC), ``message``, ``since`` and (a
    worker's) ``worker``. Cleared when the run starts or ends."""
    limit_key: str | None = None
    """The run's concurrency key (its job's ``concurrency_key``, computed at submit)."""
    gate: str | None = None
    """``concurrency`` while the run waits for a free slot of its job or key."""
    archived_at: dt.datetime | None = None
    """When a person archived the run: it is left out of default lists (``--archived``
    shows it), kept, and never pruned by the retention policies."""
    withheld: str | None = None
    """Set (saying why) when the reader may list this run but not read it: its input, output,
    error and progress are left out (``Client.shown``); never stored."""
    sealed: str | None = None
    """The secret input values, encrypted; never shown (``input`` holds ``**********``)."""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_json(self) -> dict[str, Any]:
        return as_json(self)


@dataclasses.dataclass(frozen=True)
class LogLine:
    id: int
    run_id: str
    attempt: int
    at: dt.datetime
    message: str


@dataclasses.dataclass(frozen=True)
class Claim:
    """What a worker gets when it claims a run: the attempt it now owns."""

    run_id: str
    attempt: int
    meta: dict[str, Any]
    schedule_id: str | None = None
    fire_at: dt.datetime | None = None
    trigger: str | None = None
    input: Any = None
    principal: dict[str, Any] = dataclasses.field(default_factory=dict)
    sealed: str | None = None
    """The run's secret input values, encrypted (``sealing.py``)."""
    workflow_id: str | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    """The run's own limits (a workflow step may override its job's)."""
    has_dependents: bool = False
    """Runs wait for this one: its end must release them."""
    priority: int = bounds.DEFAULT_PRIORITY
    """The run's priority: its next message (a retry, a hand-back) is sent at it."""


@dataclasses.dataclass(frozen=True)
class RunFilter:
    job: str | None = None
    state: RunState | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    tag: str | None = None
    principal_id: str | None = None
    tenant: str | None = None
    schedule_id: str | None = None
    """Only the runs this schedule made."""
    workflow_id: str | None = None
    """Only the steps of this workflow run (``wf_...``)."""
    parent_id: str | None = None
    """Only the runs made from this one (its retries)."""
    exhausted: bool | None = None
    """``True``: only runs that used all their attempts; ``False``: only runs that did not."""
    paused: bool | None = None
    """``True``: only waiting runs a pause holds (``pauses.py``); ``False``: none of those."""
    text: str | None = None
    """Keywords: runs whose error or logs hold all of them (``search.py``)..."""
    text_jobs: tuple[str, ...] = ()
    """...or whose job is one of these (the caller matched names, descriptions and tags)."""
    text_readable: tuple[str, ...] | None = None
    """Only runs of these jobs are matched by their error or logs (the ones the principal may
    read); ``None``: any job's."""
    jobs: tuple[str, ...] | None = None
    """Only runs of these jobs (the ones the principal may list); ``None``: any job."""
    archived: bool | None = False
    """``False`` (default lists): runs not archived; ``True``: archived runs only; ``None``:
    both."""
    limit: int = 50


@dataclasses.dataclass(frozen=True)
class ReapResult:
    requeued: list[RunRecord]
    failed: list[str]


def record(row: sa.Row[Any]) -> RunRecord:
    """A row of ``jobsys_runs`` as a ``RunRecord``."""
    return from_columns(row._asdict())


def from_columns(data: dict[str, Any]) -> RunRecord:
    """A ``RunRecord`` of every column of a ``jobsys_runs`` row, by name, typed as read."""
    data["state"] = RunState(data["state"])
    return RunRecord(**data)
