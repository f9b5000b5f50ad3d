"""Jobs with flow limits, for the tests of concurrency limits, rate limits and ``BackOff``
(tests/integration/test_limits.py, tests/benchmarks/limits.py). Each body appends a start
and an end line to ``$JOBSYS_TEST_EFFECTS/<run id>`` (``tests.jobs.record_effect``), so tests
measure from the bodies themselves how many ran at once and when each started."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pydantic

from jobsys import BackOff, JobContext, RetryPolicy, job
from tests.jobs import Done, Gate, record_effect


class Work(pydantic.BaseModel):
    seconds: float = 0.0
    customer: str | None = None
    first_seconds: float = 0.0
    """Seconds the first attempt sleeps instead (a run whose worker the test kills)."""


def _work(data: Work, ctx: JobContext) -> Done:
    record_effect(ctx, "start")
    time.sleep(data.first_seconds if ctx.attempt == 1 and data.first_seconds else data.seconds)
    record_effect(ctx, "end")  # (the sleep above is the body's work)
    return Done(pid=os.getpid())


@job("tests.limited", timeout=60, max_concurrency=2)
def limited(data: Work, ctx: JobContext) -> Done:
    """At most 2 at once, cluster-wide."""
    return _work(data, ctx)


@job("tests.limited3", timeout=60, max_concurrency=3)
def limited3(data: Work, ctx: JobContext) -> Done:
    """At most 3 at once, cluster-wide (the benchmark's)."""
    return _work(data, ctx)


@job("tests.solo", timeout=60, max_concurrency=1, retry=RetryPolicy(max_attempts=3))
def solo(data: Work, ctx: JobContext) -> Done:
    """One at a time: the test kills the worker holding the slot."""
    return _work(data, ctx)


@job("tests.per_customer", timeout=60, concurrency_key="customer", per_key=1)
def per_customer(data: Work, ctx: JobContext) -> Done:
    """One run per customer at a time."""
    return _work(data, ctx)


@job("tests.rated", timeout=60, rate="5/s")
def rated(data: Work, ctx: JobContext) -> Done:
    """At most 5 starts in any second."""
    return _work(data, ctx)


@job("tests.rated20", timeout=60, rate="20/s")
def rated20(data: Work, ctx: JobContext) -> Done:
    """At most 20 starts in any second (the benchmark's)."""
    return _work(data, ctx)


class Told(pydantic.BaseModel):
    seconds: float = 1.0
    marker: str


@job("tests.backs_off", timeout=30, retry=RetryPolicy(max_attempts=1))
def backs_off(data: Told, ctx: JobContext) -> Done:
    """Backs off once (the API said to), then completes: with a single attempt allowed, it
    completes only if backing off used none."""
    record_effect(ctx, "start")
    marker = Path(data.marker)
    if not marker.exists():
        marker.write_text("told")
        raise BackOff(data.seconds, reason="the API said 429, retry after")
    return Done(pid=os.getpid())


@job("tests.gated_solo", timeout=120, max_concurrency=1)
def gated_solo(data: Gate, ctx: JobContext) -> Done:
    """One at a time, each holding its slot until the file ``path`` exists."""
    record_effect(ctx, "start")
    deadline = time.monotonic() + 110
    while not Path(data.path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # (the body's work: waiting for the gate)
    return Done(pid=os.getpid())
