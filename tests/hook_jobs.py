"""Jobs with hooks (``@job(on_completed=...)``), for tests/integration/test_hooks.py: each hook
writes what it was called with to ``$JOBSYS_TEST_EFFECTS/hook-<event>-<run id>``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pydantic

from jobsys import Job, JobContext, RetryPolicy, RunRecord, job


class Plan(pydantic.BaseModel):
    fail_attempts: int = 0
    """Attempts that fail before one succeeds."""
    give_up: bool = False
    """Fail every attempt (and end failed)."""


class Done(pydantic.BaseModel):
    attempt: int


def _write(event: str, run: RunRecord) -> None:
    folder = os.environ["JOBSYS_TEST_EFFECTS"]
    seen = {
        "event": event,
        "state": run.state.value,
        "attempt": run.attempts,
        "pid": os.getpid(),
        "at": time.time(),
        "finished_at": run.finished_at.timestamp() if run.finished_at else None,
    }
    with (Path(folder) / f"hook-{event}-{run.id}").open("a") as f:
        f.write(json.dumps(seen) + "\n")


def on_completed(run: RunRecord) -> None:
    _write("completed", run)


def on_failed(run: RunRecord) -> None:
    _write("failed", run)


def on_retrying(run: RunRecord) -> None:
    _write("retrying", run)


def broken(run: RunRecord) -> None:
    raise RuntimeError(f"the hook of {run.id} is broken")


@job(
    "hooks.watched",
    retry=RetryPolicy(max_attempts=3, initial_backoff=0, jitter=0),
    on_completed=on_completed,
    on_failed=on_failed,
    on_retrying=on_retrying,
)
def watched(data: Plan, ctx: JobContext) -> Done:
    """Fails its first ``fail_attempts`` attempts (every one with ``give_up``)."""
    if data.give_up or ctx.attempt <= data.fail_attempts:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return Done(attempt=ctx.attempt)


@job("hooks.broken", on_completed=broken)
def broken_hook(data: Plan) -> Done:
    """Completes; its hook raises."""
    return Done(attempt=1)


class ClassStyle(Job):
    """A class-style job whose hook is a method."""

    name = "hooks.class_style"
    Input = Plan
    Output = Done

    def run(self, input: Plan, ctx: JobContext) -> Done:
        return Done(attempt=ctx.attempt)

    def on_completed(self, run: RunRecord) -> None:  # type: ignore[override]
        _write("completed", run)
