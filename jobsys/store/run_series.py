"""Runs over time, for the dashboard's overview: how many runs were submitted and how many
ended in each state, bucket by bucket, and each job's duration percentiles in a window.

Every figure is one grouped statement over the run records (``GROUP BY`` the bucket and the
state, or a window function for the percentiles), read-only and never on the path a job
takes. Submits are bucketed by ``created_at`` (its index), ends by ``finished_at`` among the
runs created at most ``CREATED_BEFORE`` before the window starts, so that the created-at
index bounds the scan: a run that ended more than a day after it was submitted is left out
of the ends (as in the throughput of ``GET /api/v1/stats``). A bucket is ``[start + i *
bucket, start + (i + 1) * bucket)`` in UTC; epochs are computed by the database
(``strftime('%s')`` on SQLite, ``extract(epoch)`` on PostgreSQL).

Cost (``tests/benchmarks/overview_series.py``, 200,000 runs over two days, on a busy
2-CPU machine): the last hour's counts and percentiles 76 + 83 ms on SQLite, 81 + 108 ms on
PostgreSQL (the day before the window is scanned for ends); the last day's (100,000 runs)
293 + 364 ms and 369 + 629 ms. The server keeps an answer ``JOBSYS_STATS_CACHE_SECONDS``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from jobsys.store import run_states, schema

R = schema.runs
ENDED = tuple(s.value for s in sorted(run_states.TERMINAL))
"""The states a run ends in, each a series of its own: cancelled, completed, failed."""
TIMED = (run_states.RunState.COMPLETED.value, run_states.RunState.FAILED.value)
"""The runs whose duration counts (a cancelled run's is how long it ran before it stopped)."""
CREATED_BEFORE = dt.timedelta(days=1)
"""Ends are looked for among runs created at most this long before the window starts."""


@dataclasses.dataclass(frozen=True)
class Window:
    """``count`` buckets of ``bucket_seconds`` from ``start`` (UTC, a whole multiple of the
    bucket since the epoch); the last one holds ``now``."""

    start: dt.datetime
    bucket_seconds: int
    count: int

    @classmethod
    def ending(cls, now: dt.datetime, span_seconds: int, bucket_seconds: int) -> Window:
        count = span_seconds // bucket_seconds
        last = int(now.timestamp()) // bucket_seconds * bucket_seconds
        start = dt.datetime.fromtimestamp(last - (count - 1) * bucket_seconds, dt.UTC)
        return cls(start=start, bucket_seconds=bucket_seconds, count=count)

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.bucket_seconds * self.count)

    def starts(self) -> list[dt.datetime]:
        step = dt.timedelta(seconds=self.bucket_seconds)
        return [self.start + i * step for i in range(self.count)]

    def index(self, at: dt.datetime) -> int | None:
        """The bucket ``at`` falls in (``None``: outside the window)."""
        i = int((at - self.start).total_seconds() // self.bucket_seconds)
        return i if 0 <= i < self.count else None


@dataclasses.dataclass(frozen=True)
class Percentiles:
    """A job's durations (seconds) among its runs that completed or failed in the window:
    the nearest-rank median and 95th percentile, and how many runs they are of."""

    job: str
    count: int
    p50: float
    p95: float


def _where(query: Any, tenant: str | None, jobs: Sequence[str] | None) -> Any:  # the caller's scope
    if tenant is not None:
        query = query.where(R.c.tenant == tenant)
    if jobs is not None:
        query = query.where(R.c.job.in_(tuple(jobs)))
    return query


def _bucket(engine: sa.Engine, column: Any, window: Window) -> Any:
    """The bucket number of ``column`` (an integer expression the database computes)."""
    if engine.dialect.name == "sqlite":
        epoch: Any = sa.cast(sa.func.strftime("%s", column), sa.Integer)
    else:
        epoch = sa.cast(sa.func.floor(sa.extract("epoch", column)), sa.BigInteger)
    origin = int(window.start.timestamp())
    return sa.cast((epoch - origin) // window.bucket_seconds, sa.Integer)  # >= 0: floored


def counts(
    engine: sa.Engine,
    window: Window,
    tenant: str | None = None,
    jobs: Sequence[str] | None = None,
) -> dict[str, list[int]]:
    """Per bucket: ``submitted`` (runs created), and for each state a run ends in, the runs
    that ended in it (two grouped statements)."""
    series = {name: [0] * window.count for name in ("submitted", *ENDED)}
    created = _bucket(engine, R.c.created_at, window).label("b")
    submitted = _where(
        sa.select(created, sa.func.count())
        .where(R.c.created_at >= window.start, R.c.created_at < window.end)
        .group_by(created),
        tenant,
        jobs,
    )
    finished = _bucket(engine, R.c.finished_at, window).label("b")
    ended = _where(
        sa.select(R.c.state, finished, sa.func.count())
        .where(
            R.c.created_at >= window.start - CREATED_BEFORE,
            R.c.finished_at >= window.start,
            R.c.finished_at < window.end,
            R.c.state.in_(ENDED),
        )
        .group_by(R.c.state, finished),
        tenant,
        jobs,
    )
    with engine.connect() as conn:
        for bucket, n in conn.execute(submitted):
            _add(series["submitted"], bucket, n)
        for state, bucket, n in conn.execute(ended):
            _add(series[str(state)], bucket, n)
    return series


def _add(series: list[int], bucket: Any, n: Any) -> None:
    if bucket is not None and 0 <= int(bucket) < len(series):
        series[int(bucket)] += int(n)


def percentiles(
    engine: sa.Engine,
    window: Window,
    tenant: str | None = None,
    jobs: Sequence[str] | None = None,
) -> list[Percentiles]:
    """Per job, p50 and p95 of the durations of its runs that completed or failed in the
    window (nearest rank: the value at rank ``ceil(p * n)``), in one statement; by job name."""
    ranked = _where(
        sa.select(
            R.c.job,
            R.c.duration,
            sa.func.row_number().over(partition_by=R.c.job, order_by=R.c.duration).label("rn"),
            sa.func.count().over(partition_by=R.c.job).label("n"),
        ).where(
            R.c.created_at >= window.start - CREATED_BEFORE,
            R.c.finished_at >= window.start,
            R.c.finished_at < window.end,
            R.c.state.in_(TIMED),
            R.c.duration.is_not(None),
        ),
        tenant,
        jobs,
    ).subquery()
    # ceil(p * n) in integers, the same on every database: (n + 1) / 2 and (95 n + 99) / 100
    p50 = sa.func.max(sa.case((ranked.c.rn == (ranked.c.n + 1) // 2, ranked.c.duration)))
    p95 = sa.func.max(sa.case((ranked.c.rn == (ranked.c.n * 95 + 99) // 100, ranked.c.duration)))
    query = (
        sa.select(ranked.c.job, sa.func.max(ranked.c.n), p50, p95)
        .group_by(ranked.c.job)
        .order_by(ranked.c.job)
    )
    with engine.connect() as conn:
        return [
            Percentiles(job=str(job), count=int(n), p50=float(a or 0.0), p95=float(b or 0.0))
            for job, n, a, b in conn.execute(query)
        ]
