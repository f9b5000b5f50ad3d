"""Job hooks (``@job(on_completed=..., on_failed=..., on_cancelled=..., on_retrying=...)``):
called in the worker process that ran the attempt, with the run's record, once the run's new
state is committed and its result published (``broker.deliver`` reads the record with
``before`` as the attempt left it, and calls ``after`` last).

A hook is for in-process reactions; what must reach another system reliably is a webhook
subscription (``notifier.py``). A hook that raises is logged (``action`` ``hook_error``) and
changes nothing about the run; the run's record was written before it was called.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from jobsys.declare import jobs
from jobsys.engine.runtime import Runtime
from jobsys.store.records import RunRecord
from jobsys.worker import execute

log = logging.getLogger("jobsys.hooks")

EVENTS = {
    execute.Kind.COMPLETED: "completed",
    execute.Kind.FAILED: "failed",
    execute.Kind.CANCELLED: "cancelled",
    execute.Kind.RETRY: "retrying",
}
"""The outcome of an attempt, and the hook it calls."""


Call = tuple[str, Callable[[Any], Any], RunRecord]


def before(
    spec: jobs.JobSpec, runtime: Runtime, run_id: str, outcome: execute.Outcome
) -> Call | None:
    """The job's hook for ``outcome`` with the run's record as the attempt left it, read
    before anything is published (a retry's next attempt may start at once and move it on);
    ``None`` when there is no hook to call."""
    event = EVENTS.get(outcome.kind)
    hook = spec.hooks.get(event) if event else None
    if event is None or hook is None:
        return None
    try:
        return event, hook, runtime.store.get(run_id)
    except Exception:
        log.exception("jobsys: the run %s of a hook could not be read", run_id)
        return None


def after(spec: jobs.JobSpec, run_id: str, call: Call) -> None:
    """Call the hook (``before``'s answer), after the run's result was published."""
    event, hook, record = call
    try:
        hook(record)
    except Exception:
        log.exception(
            "jobsys: the on_%s hook of job %s failed for run %s (the run is not changed)",
            event,
            spec.name,
            run_id,
            extra={"action": "hook_error", "run_id": run_id, "job": spec.name},
        )
