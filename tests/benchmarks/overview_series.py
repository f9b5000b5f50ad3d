"""What the overview's series (``GET /api/v1/stats/series``, ``jobsys/store/run_series.py``)
cost on a large run table: the bucket counts and the p50/p95 per job, for the last hour and
the last day, on SQLite and on PostgreSQL.

    python -m tests.benchmarks.overview_series [--runs 200000] [--reps 5] [--pg-url URL]

``--runs`` ended runs of 10 jobs are spread evenly over the last two days (a day of them
in the 1d window, 1/48 of them in the 1h window) in one store per backend; each query is
timed ``--reps`` times and the median printed. The server keeps an answer for
``JOBSYS_STATS_CACHE_SECONDS`` (10 s), so this is at most one computation per scope and window
every 10 s. A benchmark (it prints figures), not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from jobsys.store import run_series, runs, stores
from tests.cluster import Database
from tests.integration.test_store import run_row

PG = (
    os.environ.get("JOBSYS_TEST_DATABASE_URL")
    or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SPAN = dt.timedelta(days=2)
BATCH = 5000


def fill(store: runs.RunStore, count: int, now: dt.datetime) -> None:
    rng = random.Random(7)
    rows = []
    for i in range(count):
        created = now - SPAN * (i / count)
        duration = rng.expovariate(1 / 0.5)
        row = run_row() | {
            "job": f"bench.job{i % 10}",
            "state": rng.choice(("completed",) * 8 + ("failed", "cancelled")),
            "created_at": created,
            "started_at": created,
            "finished_at": min(now, created + dt.timedelta(seconds=duration)),
            "duration": duration,
            "attempts": 1,
        }
        rows.append(row)
        if len(rows) == BATCH:
            store.insert(rows)
            rows = []
    if rows:
        store.insert(rows)


def median_ms(call: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(url: str, backend: str, count: int, reps: int) -> None:
    store = stores.Store.open(url)
    try:
        now = runs.utcnow()
        start = time.perf_counter()
        fill(store, count, now)
        print(f"{backend:>10}: {count} runs inserted in {time.perf_counter() - start:.1f} s")
        engine = store.engine
        for name, (span, bucket) in (("1h", (3600, 60)), ("1d", (86400, 900))):
            window = run_series.Window.ending(runs.utcnow(), span, bucket)
            counted = run_series.counts(engine, window, "default")
            a = median_ms(lambda w=window: run_series.counts(engine, w, "default"), reps)
            b = median_ms(lambda w=window: run_series.percentiles(engine, w, "default"), reps)
            ended = sum(sum(counted[s]) for s in run_series.ENDED)
            print(
                f"{backend:>10} {name}: counts {a:7.1f} ms, p50/p95 per job {b:7.1f} ms"
                f" ({sum(counted['submitted'])} submitted, {ended} ended in the window;"
                f" median of {reps})"
            )
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--pg-url", default=PG)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure(f"sqlite:///{Path(tmp) / 'series.db'}", "SQLite", args.runs, args.reps)
        db = Database(Path(tmp), args.pg_url)
        try:
            measure(db.url, "PostgreSQL", args.runs, args.reps)
        finally:
            db.drop()


if __name__ == "__main__":
    main()
