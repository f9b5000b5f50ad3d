"""The figures of the dashboard's overview, ``GET /api/v1/stats/series?window=1h|1d``.

Runs per bucket by state, the failure rate and each job's duration percentiles come from the
run records (``store/run_series.py``), for the caller's scope (its tenant, the jobs it may
list). Queue depth and live workers have no history in the store: each server process keeps
its own ring of samples (``Samples``), taken every ``SAMPLE_SECONDS`` by a thread of the
server while it runs (and when an answer is computed, if the last sample is older), for
``KEEP``. So they start when the server starts, and two servers may show slightly different
samples. A sample keeps the depth of each queue, and an answer sums only the caller's queues
(``stats.queue_names(registry, tenant)``, as ``GET /api/v1/stats`` lists them: the catalog's
and its tenant's runtime jobs'), so no tenant learns another's backlog. Live workers are the
cluster's, shared by every tenant: their count is shown to every caller (it says whether
anything serves the queues, and ``GET /api/v1/stats`` already lists the workers seen).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import threading
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

from jobsys.base import config
from jobsys.declare import jobs
from jobsys.http import stats
from jobsys.store import presence, run_series, runs

WINDOWS: dict[str, tuple[int, int]] = {"1h": (3600, 60), "1d": (86400, 900)}
"""A window's span and bucket, in seconds: an hour by the minute, a day by the quarter hour."""
SAMPLE_SECONDS = 15.0
"""How often each server samples queue depth and live workers."""
KEEP = dt.timedelta(days=1)
"""How long a server keeps its samples (the longest window)."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """At ``at``: messages waiting in each queue that had any (``None``: the broker did not
    answer) and the workers live then (a heartbeat within their lost limit)."""

    at: dt.datetime
    depths: Mapping[str, int] | None
    workers: int

    def queued(self, queues: Collection[str]) -> int | None:
        """Messages waiting in ``queues`` (``None``: the broker did not answer)."""
        if self.depths is None:
            return None
        return sum(n for q, n in self.depths.items() if q in queues)


class Samples:
    """A ring of this process's samples, oldest first (thread-safe)."""

    def __init__(self, every: float = SAMPLE_SECONDS, keep: dt.timedelta = KEEP) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._ring: collections.deque[Sample] = collections.deque(
            maxlen=int(keep.total_seconds() // every) + 1
        )

    def take(self, now: dt.datetime, measure: Callable[[dt.datetime], Sample]) -> None:
        """Add ``measure(now)`` unless the last sample is younger than ``every``."""
        with self._lock:
            last = self._ring[-1].at if self._ring else None
            if last is not None and (now - last).total_seconds() < self.every:
                return
            self._ring.append(measure(now))

    def since(self, start: dt.datetime) -> list[Sample]:
        with self._lock:
            return [s for s in self._ring if s.at >= start]


def measure(
    engine: Any, settings: config.Settings, registry: jobs.Registry
) -> Callable[[dt.datetime], Sample]:
    """What one sample reads: the depths of every tenant's queues (Redis ``LLEN``s) and the
    workers' heartbeat rows."""
    last: list[Mapping[str, int]] = []

    def sample(now: dt.datetime) -> Sample:
        measured = stats.queue_depths(settings, stats.queue_names(registry))
        depths: Mapping[str, int] | None = None
        if measured is not None:
            # only the queues holding messages, and the previous sample's mapping when nothing
            # changed: a day of samples of many idle queues stays small
            depths = {q: n for q, n in measured.items() if n}
            if last and last[0] == depths:
                depths = last[0]
            last[:] = [depths]
        known = presence.PresenceStore(engine).known()
        return Sample(at=now, depths=depths, workers=sum(1 for w in known if not w.lost(now)))

    return sample


@contextlib.asynccontextmanager
async def sampling(
    samples: Samples, sample: Callable[[dt.datetime], Sample]
) -> AsyncIterator[None]:
    """A thread that samples every ``samples.every`` while the server runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a database down: try again next time
                samples.take(runs.utcnow(), sample)
            stop.wait(samples.every)

    thread = threading.Thread(target=loop, name="jobsys-overview-samples", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _per_bucket(
    window: run_series.Window, points: list[Sample], queues: Collection[str]
) -> dict[str, list[int | None]]:
    """The highest depth of ``queues`` (summed) and worker count sampled in each bucket
    (``None``: none)."""
    queued: list[int | None] = [None] * window.count
    workers: list[int | None] = [None] * window.count
    for p in points:
        i = window.index(p.at)
        if i is None:
            continue
        depth = p.queued(queues)
        if depth is not None:
            queued[i] = max(queued[i] or 0, depth)
        workers[i] = max(workers[i] or 0, p.workers)
    return {"queued": queued, "workers": workers}


def _failure_rate(counts: dict[str, list[int]]) -> list[float | None]:
    """Failed / ended (completed, failed, cancelled) per bucket; ``None`` where none ended."""
    rates: list[float | None] = []
    for i, failed in enumerate(counts["failed"]):
        ended = sum(counts[s][i] for s in run_series.ENDED)
        rates.append(failed / ended if ended else None)
    return rates


def series(
    engine: Any,
    samples: Samples,
    window_name: str,
    scope: stats.Scope,
    queues: Collection[str],
    now: dt.datetime,
) -> dict[str, Any]:
    """The answer of ``GET /api/v1/stats/series`` for ``scope``, whose queues are ``queues``."""
    span, bucket = WINDOWS[window_name]
    window = run_series.Window.ending(now, span, bucket)
    counts = run_series.counts(engine, window, scope.tenant, scope.jobs)
    durations = run_series.percentiles(engine, window, scope.tenant, scope.jobs)
    return {
        "window": window_name,
        "bucket_seconds": bucket,
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "buckets": [b.isoformat() for b in window.starts()],
        "runs": counts,
        "totals": {name: sum(values) for name, values in counts.items()},
        "failure_rate": _failure_rate(counts),
        "durations": [dataclasses.asdict(d) for d in durations],
        "samples": {
            "every_seconds": samples.every,
            **_per_bucket(window, samples.since(window.start), frozenset(queues)),
        },
        "at": now.isoformat(),
    }
