"""What the run history (``jobsys/store/events.py``) costs a job: each job's three hot-path
statements (insert, claim, complete), on the run store alone, with the triggers that write
the events and without them, interleaved, on SQLite and on PostgreSQL.

    python -m tests.benchmarks.events_cost [--jobs 2000] [--reps 5] [--pg-url URL]

Two stores of the same backend are made (one with its triggers dropped); each repetition runs
``--jobs`` jobs one at a time on each, in turn, and the medians of the time per job are
printed with their ratio. The store's share of a whole job (broker, worker, result) is what
the side-by-side benchmark (``tests.benchmarks.compare``) measures; this isolates the
triggers. A benchmark (it prints figures), not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from jobsys.store import runs, stores
from tests.cluster import Database
from tests.integration.test_store import run_row

PG = (
    os.environ.get("JOBSYS_TEST_DATABASE_URL")
    or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

DROP = {
    "sqlite": (
        "DROP TRIGGER jobsys_run_events_created",
        "DROP TRIGGER jobsys_run_events_state",
        "DROP TRIGGER jobsys_run_events_deleted",
    ),
    "postgresql": (
        "DROP TRIGGER jobsys_run_events_created ON jobsys_runs",
        "DROP TRIGGER jobsys_run_events_state ON jobsys_runs",
        "DROP TRIGGER jobsys_run_events_deleted ON jobsys_runs",
    ),
}


def per_job(store: runs.RunStore, jobs: int) -> float:
    """Seconds per job: insert, claim and complete ``jobs`` runs one at a time."""
    made = [run_row() for _ in range(jobs)]
    start = time.perf_counter()
    for row in made:
        store.insert([row])
        claim = store.claim(row["id"], 1, 30.0, 60.0)
        assert claim is not None
        assert store.complete(row["id"], claim.attempt, {"ok": True})
    return (time.perf_counter() - start) / jobs


def measure(url_of: Callable[[str], str], backend: str, jobs: int, reps: int) -> None:
    with_events = stores.Store.open(url_of("with"))
    without = stores.Store.open(url_of("without"))
    with without.engine.begin() as conn:
        for sql in DROP[without.engine.dialect.name]:
            conn.exec_driver_sql(sql)
    try:
        per_job(with_events, 200), per_job(without, 200)  # warm up
        a: list[float] = []
        b: list[float] = []
        for _ in range(reps):
            a.append(per_job(with_events, jobs))
            b.append(per_job(without, jobs))
        ma, mb = statistics.median(a), statistics.median(b)
        print(
            f"{backend:>10}: with events {ma * 1e6:7.0f} us/job, without {mb * 1e6:7.0f} us/job,"
            f" ratio {ma / mb:.3f} ({(ma - mb) * 1e6:+.0f} us/job; {reps} reps of {jobs} jobs)"
        )
    finally:
        with_events.close()
        without.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--pg-url", default=PG)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure(lambda name: f"sqlite:///{Path(tmp) / name}.db", "SQLite", args.jobs, args.reps)
        made: list[Database] = []

        def pg(name: str) -> str:
            made.append(Database(Path(tmp) / name, args.pg_url))
            return made[-1].url

        try:
            measure(pg, "PostgreSQL", args.jobs, args.reps)
        finally:
            for db in made:
                db.drop()


if __name__ == "__main__":
    main()
