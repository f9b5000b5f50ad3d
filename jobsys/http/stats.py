"""Aggregates over the store and the broker for ``/api/v1/stats`` and ``/metrics``.

Every figure is one aggregate SQL statement (``GROUP BY``, ``count``, ``min``, ``max``):
nothing here loads rows one by one. The counts by state and job scan the (state, job) index,
and the duration histogram every finished run: on a million runs that is 0.2 s and about 2 s
on SQLite, so each server keeps its answers for ``JOBSYS_STATS_CACHE_SECONDS`` (10 s): one scan per
scrape interval however many dashboards ask. Throughput and workers look only at the runs
created in the last ``RECENT`` (the created-at index).
Queue depths are Redis ``LLEN``s of each job queue and of the priority lists kombu keeps next
to it (``<queue>\\x06\\x16<step>``; the queue's own name is step 0), summed: which list holds
which priority (step 9 - p, ``engine/publishing.py``) does not matter here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import redis
import sqlalchemy as sa

from jobsys.base import config
from jobsys.declare import jobs
from jobsys.store import pauses, runs, schema

T = TypeVar("T")
R = schema.runs
S = schema.schedules

DURATION_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
"""Upper bounds (seconds) of the run duration histogram; ``+Inf`` is added."""
PRIORITY_SEP = "\x06\x16"
"""What kombu's Redis transport puts between a queue's name and a priority step."""
PRIORITY_STEPS = range(10)
RECENT = dt.timedelta(days=1)
"""Workers and throughput are looked for among the runs created this recently (and, for
workers, those running)."""


class TTLCache:
    """Answers by key, computed at most once per ``seconds`` (thread-safe)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._kept: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, compute: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and now - kept[0] < self.seconds:
                return cast(T, kept[1])
            value = compute()  # under the lock: one computation per key at a time
            if len(self._kept) > 1000:
                self._kept.clear()
            self._kept[key] = (time.monotonic(), value)
            return value


@dataclasses.dataclass(frozen=True)
class Scope:
    """Whose runs count: one tenant (``None``: every tenant), some jobs (``None``: all)."""

    tenant: str | None = None
    jobs: tuple[str, ...] | None = None

    def where(self, query: Any) -> Any:
        if self.tenant is not None:
            query = query.where(R.c.tenant == self.tenant)
        if self.jobs is not None:
            query = query.where(R.c.job.in_(self.jobs))
        return query


def runs_by_state_and_job(engine: sa.Engine, scope: Scope) -> dict[tuple[str, str], int]:
    """Number of runs per (state, job)."""
    query = scope.where(sa.select(R.c.state, R.c.job, sa.func.count()).group_by(R.c.state, R.c.job))
    with engine.connect() as conn:
        return {(str(r[0]), str(r[1])): int(r[2]) for r in conn.execute(query)}


def finished_since(engine: sa.Engine, scope: Scope, windows: Iterable[float]) -> dict[float, int]:
    """Runs that ended (completed, failed, cancelled) in each of the last ``windows`` seconds,
    in one statement."""
    now = runs.utcnow()
    windows = sorted(set(windows))
    if not windows:
        return {}
    columns = [
        sa.func.coalesce(
            sa.func.sum(sa.case((R.c.finished_at >= now - dt.timedelta(seconds=w), 1), else_=0)),
            0,
        )
        for w in windows
    ]
    oldest = now - dt.timedelta(seconds=windows[-1])
    query = scope.where(
        sa.select(*columns).where(R.c.created_at >= now - RECENT, R.c.finished_at >= oldest)
    )
    with engine.connect() as conn:
        row = conn.execute(query).one()
    return {w: int(row[i]) for i, w in enumerate(windows)}


@dataclasses.dataclass(frozen=True)
class Durations:
    """A job's histogram: cumulative counts per bucket bound, the total count and sum."""

    job: str
    buckets: list[tuple[float, int]]
    count: int
    total: float


def durations(
    engine: sa.Engine, scope: Scope, bounds: Sequence[float] = DURATION_BUCKETS
) -> list[Durations]:
    """Per job, the durations of its finished runs as a cumulative histogram (one query)."""
    cumulative = [
        sa.func.sum(sa.case((R.c.duration <= b, 1), else_=0)).label(f"le_{i}")
        for i, b in enumerate(bounds)
    ]
    query = scope.where(
        sa.select(R.c.job, sa.func.count(), sa.func.sum(R.c.duration), *cumulative)
        .where(
            R.c.duration.is_not(None),
            R.c.state.in_([runs.RunState.COMPLETED.value, runs.RunState.FAILED.value]),
        )
        .group_by(R.c.job)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        Durations(
            job=str(r[0]),
            count=int(r[1]),
            total=float(r[2] or 0.0),
            buckets=[(b, int(r[3 + i] or 0)) for i, b in enumerate(bounds)],
        )
        for r in rows
    ]


def schedule_lag(engine: sa.Engine, tenant: str | None = None) -> float:
    """Seconds the most overdue active schedule is late (0 when none is due)."""
    query = sa.select(sa.func.min(S.c.next_fire_at)).where(
        S.c.state == "active", S.c.next_fire_at.is_not(None)
    )
    if tenant is not None:
        query = query.where(S.c.tenant == tenant)
    with engine.connect() as conn:
        earliest = conn.execute(query).scalar()
    if earliest is None:
        return 0.0
    if earliest.tzinfo is None:
        earliest = earliest.replace(tzinfo=dt.UTC)
    return max(0.0, (runs.utcnow() - earliest).total_seconds())


def workers_seen(engine: sa.Engine, lease_seconds: float) -> dict[str, dt.datetime]:
    """When each worker (the node name in run records) was last seen: its latest claim, end,
    or lease renewal (a heartbeat renews the lease to ``now + lease_seconds``)."""
    now = runs.utcnow()
    query = (
        sa.select(
            R.c.worker,
            sa.func.max(R.c.started_at),
            sa.func.max(R.c.finished_at),
            sa.func.max(R.c.lease_expires_at),
        )
        .where(
            R.c.worker.is_not(None),
            sa.or_(
                R.c.created_at >= now - RECENT,
                R.c.state == runs.RunState.RUNNING.value,
            ),
        )
        .group_by(R.c.worker)
    )
    seen: dict[str, dt.datetime] = {}
    with engine.connect() as conn:
        for name, started, finished, lease in conn.execute(query):
            renewed = _aware(lease)
            stamps = [_aware(started), _aware(finished)]
            if renewed is not None:
                stamps.append(min(now, renewed - dt.timedelta(seconds=lease_seconds)))
            known = [s for s in stamps if s is not None]
            if known:
                seen[str(name)] = max(known)
    return seen


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def queue_names(registry: jobs.Registry, tenant: str | None = None) -> list[str]:
    """The queues to measure: the catalog's and the runtime jobs' of ``tenant`` (``None``:
    every tenant's)."""
    return sorted(registry.queues(tenant) | {"jobs"})


def queue_depths(settings: config.Settings, queues: Sequence[str]) -> dict[str, int] | None:
    """Messages waiting in each queue (all its priority lists); ``None`` if the broker cannot
    be reached."""
    try:
        url = settings.resolved_broker_url()
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    except Exception:
        return None
    try:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
            for step in PRIORITY_STEPS:
                if step:
                    pipe.llen(f"{queue}{PRIORITY_SEP}{step}")
        sizes = pipe.execute()
    except redis.exceptions.RedisError:
        return None
    finally:
        client.close()
    per_queue = len(PRIORITY_STEPS)
    return {
        q: sum(int(x) for x in sizes[i * per_queue : (i + 1) * per_queue])
        for i, q in enumerate(queues)
    }


def database_ok(engine: sa.Engine) -> str:
    """``ok``, or what went wrong reaching the database."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def broker_ok(settings: config.Settings) -> str:
    """``ok``, or what went wrong reaching the broker."""
    try:
        client = redis.Redis.from_url(
            settings.resolved_broker_url(), socket_timeout=2, socket_connect_timeout=2
        )
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    try:
        client.ping()
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    finally:
        client.close()
    return "ok"


def summary(
    engine: sa.Engine,
    settings: config.Settings,
    registry: jobs.Registry,
    scope: Scope,
) -> dict[str, Any]:
    """The figures of ``GET /api/v1/stats`` for one caller's scope."""
    counts = runs_by_state_and_job(engine, scope)
    by_state: dict[str, int] = {s.value: 0 for s in runs.RunState}
    by_job: dict[str, int] = {}
    by_job_state: dict[str, dict[str, int]] = {}
    for (state, job), n in counts.items():
        by_state[state] = by_state.get(state, 0) + n
        by_job[job] = by_job.get(job, 0) + n
        by_job_state.setdefault(job, {})[state] = n
    done = finished_since(engine, scope, (60, 300))
    seen = workers_seen(engine, settings.lease_seconds)
    now = runs.utcnow()
    return {
        "runs_by_state": by_state,
        "runs_by_job": dict(sorted(by_job.items())),
        "runs_by_job_state": dict(sorted(by_job_state.items())),
        "throughput": {"last_60s": done.get(60, 0), "last_300s": done.get(300, 0)},
        "queues": queue_depths(settings, queue_names(registry, scope.tenant)) or {},
        "workers": [
            {
                "name": name,
                "last_seen": at.isoformat(),
                "seconds_ago": round(max(0.0, (now - at).total_seconds()), 3),
            }
            for name, at in sorted(seen.items())
        ],
        "schedule_lag_seconds": round(schedule_lag(engine, scope.tenant), 3),
        # what pauses hold: their runs (pending, not started), and the pauses themselves
        "paused_runs": pauses.PauseStore(engine).count_parked(scope.tenant),
        "pauses": [p.to_json() for p in pauses.PauseStore(engine).find(scope.tenant)],
        "at": now.isoformat(),
    }
