"""``jobsys bench``'s query scenario: how fast the run store answers the reads the interfaces
make, on a table of realistic run records (``fill``), for each database given."""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from jobsys.ops.bench import percentiles
from jobsys.store import database, runs, schema, search, stores
from jobsys.store.rows import run_error

JOB_NAMES = [f"bench.job{i}" for i in range(20)]
STATES = ["completed"] * 90 + ["failed"] * 6 + ["cancelled"] * 2 + ["pending", "running"]


def fill(store: runs.RunStore, rows: int, chunk: int = 20_000) -> dt.datetime:
    """Insert ``rows`` realistic run records spread over 30 days; return the newest time."""
    end = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    step = dt.timedelta(days=30) / rows
    for start in range(0, rows, chunk):
        batch: list[dict[str, Any]] = []
        for i in range(start, min(rows, start + chunk)):
            created = end - step * (rows - i)
            state = STATES[i % len(STATES)]
            batch.append(
                {
                    "id": f"{i:032x}",
                    "job": JOB_NAMES[i % len(JOB_NAMES)],
                    "job_version": "1",
                    "state": state,
                    "queue": "jobs",
                    "priority": 5,
                    "input": {"n": i},
                    "output": {"ok": True} if state == "completed" else None,
                    "error": run_error("exception", "ValueError", f"bad value {i}")
                    if state == "failed"
                    else None,
                    "attempts": 1,
                    "max_attempts": 3,
                    "timeout": 300.0,
                    "dispatch": 1,
                    "lost": 0,
                    "meta": {},
                    "tags": ["bench"],
                    "principal": {"id": "bench"},
                    "principal_id": "bench",
                    "tenant": "default",
                    "cancel_requested": False,
                    "created_at": created,
                    "published_at": created,
                    "started_at": created,
                    "finished_at": created,
                    "duration": 0.01,
                }
            )
        with store.engine.begin() as conn:
            conn.execute(schema.runs.insert(), batch)
            search.index(
                conn, [(r["id"], search.error_text(r["error"])) for r in batch if r["error"]]
            )
    if store.engine.dialect.name == "postgresql":  # as autovacuum would, in time
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    return end


def queries(database_url: str, rows: int, samples: int = 200) -> dict[str, dict[str, float]]:
    """p50/p99 ms of the run-list and show queries on a table of ``rows`` records."""
    store = stores.Store.open(database_url)
    try:
        if store.count() < rows:
            fill(store, rows - store.count())
        end = store.select(runs.RunFilter(limit=1))[0].created_at
        some_ids = [f"{i:032x}" for i in range(0, rows, max(1, rows // samples))]
        failed = [i for i in range(0, rows, 97) if STATES[i % len(STATES)] == "failed"]
        cases: dict[str, Callable[[int], Any]] = {
            "list_by_state": lambda i: store.select(
                runs.RunFilter(state=runs.RunState(["failed", "pending", "completed"][i % 3]))
            ),
            "list_by_job": lambda i: store.select(runs.RunFilter(job=JOB_NAMES[i % 20])),
            "list_by_time_range": lambda i: store.select(
                runs.RunFilter(
                    since=end - dt.timedelta(days=1 + i % 20), until=end - dt.timedelta(days=i % 20)
                )
            ),
            "show_by_id": lambda i: store.get(some_ids[i % len(some_ids)]),
            # One failed run's error ("bad value 123456"), and a word in every failed run's.
            "search_rare_word": lambda i: store.select(
                runs.RunFilter(text=f"bad value {failed[i % len(failed)]}")
            ),
            "search_common_word": lambda i: store.select(runs.RunFilter(text="valueerror")),
        }
        out = {}
        for name, query in cases.items():
            timings = []
            for i in range(samples):
                start = time.perf_counter()
                query(i)
                timings.append((time.perf_counter() - start) * 1000)
            pct = percentiles(timings)
            out[name] = {"p50": round(pct["p50"], 3), "p99": round(pct["p99"], 3)}
        return out
    finally:
        store.close()


def database_version(url: str) -> str:
    engine = database.make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                return "SQLite " + str(conn.execute(sa.text("select sqlite_version()")).scalar())
            return str(conn.execute(sa.text("select version()")).scalar()).split(" on ")[0]
    finally:
        engine.dispose()


def sqlite_scratch() -> str:
    return f"sqlite:///{tempfile.mkdtemp(prefix='jobsys-bench-')}/runs.db"
