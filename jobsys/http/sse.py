"""Server-sent events of one run: ``log`` per new line, ``state`` (the whole record) when the
run's state, attempts or cancel request change, ``progress`` (only the progress) when just its
progress changed, ``end`` once it is finished; then the stream closes.

No thread is held between polls: every ``POLL_SECONDS`` the store is read in the threadpool
(one status and one log query), and the coroutine sleeps in between. The record is read before
the logs, and a worker flushes a run's logs before it records the end, so the last lines are
always sent before ``end``. A comment goes out every ``KEEPALIVE_SECONDS`` so that proxies keep
an idle stream open.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from jobsys.service.client import Client
from jobsys.store import runs

POLL_SECONDS = 0.3
KEEPALIVE_SECONDS = 15.0


def event(name: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, default=str)}\n\n"


def line_json(line: runs.LogLine) -> dict[str, Any]:
    """A log line as JSON (lines carry no level: every line a job logs is ``info``)."""
    return {
        "id": line.id,
        "run_id": line.run_id,
        "attempt": line.attempt,
        "at": line.at.isoformat(),
        "level": "info",
        "message": line.message,
    }


def _read(c: Client, run_id: str, after: int) -> tuple[runs.RunRecord, list[runs.LogLine]]:
    record = c.status(run_id)
    return record, c.store.logs(run_id, after)


def _signature(record: runs.RunRecord) -> str:
    """What a ``state`` event is sent for: the record's state, attempts, cancel request."""
    return json.dumps([record.state.value, record.attempts, record.cancel_requested])


def _progress(record: runs.RunRecord) -> dict[str, Any] | None:
    """The progress a ``progress`` event carries (without its time: a job that reports the
    same progress again has not progressed)."""
    if not record.progress:
        return None
    return {k: v for k, v in record.progress.items() if k != "at"}


async def events(c: Client, run_id: str, after: int, request: Request) -> AsyncIterator[str]:
    last, last_progress = "", None
    quiet_since = time.monotonic()
    while True:
        record, lines = await run_in_threadpool(_read, c, run_id, after)
        for line in lines:
            after = line.id
            yield event("log", line_json(line), line.id)
        signature, progress = _signature(record), _progress(record)
        changed = signature != last
        if changed:
            last, last_progress = signature, progress
            yield event("state", record.to_json())
        elif progress != last_progress:
            last_progress, changed = progress, True
            yield event("progress", {"run_id": run_id, "progress": record.progress})
        if record.terminal:
            yield event("end", {"run_id": run_id, "state": record.state.value})
            return
        if lines or changed:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)
