"""The pruner on a large store, while a drain runs; prints figures (README "Retention and
archiving"). Not part of the suite (which runs a small version:
tests/integration/test_retention.py).

    .venv/bin/python -m tests.benchmarks.prune [--old 900000] [--recent 100000]
        [--drain 300] [--concurrency 2]
        [--database postgresql+psycopg://postgres@127.0.0.1:5432/test] [--broker redis://...]

Fills the store in SQL (``generate_series`` on PostgreSQL, a recursive CTE on SQLite) with
``--old`` completed runs 40 days old and ``--recent`` an hour old, every tenth with a log line
(each run has its ``created`` event, written by the trigger). Policies: completed runs kept 1
day, the newest 10 of each job whatever their age. Then:

1. idle: a drain of ``--drain`` runs of ``examples.add`` on a real worker (``-c
   --concurrency``): its jobs/s;
2. pruning: the pruner (the code of each worker's pruner, ``RetentionStore.prune`` with the
   policy rules, ``JOBSYS_PRUNE_BATCH`` 1000) deletes the old runs in a thread of this process
   while drains of ``--drain`` runs follow each other; each drain's jobs/s;
3. after: runs deleted per second, the longest batch, the runs left (must be the recent ones
   and the drains'), and that every drained run completed (none lost or stalled).

Leave ``--broker`` out on a machine where others test: a cluster uses the Redis databases
0-11 of the Redis it is given (``tests/cluster``), which other test runs share, and their
workers take (and drop) its messages.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from jobsys.base import embedded
from jobsys.store import retention, runs, schema
from tests.cluster import Cluster, cluster
from tests.waiting import NotYet, eventually

POLICIES = {
    "JOBSYS_KEEP_COMPLETED": "1d",
    "JOBSYS_KEEP_LAST": "10",
    "JOBSYS_PRUNE_SECONDS": "0",  # the benchmark runs the pruner itself, to time it
    "JOBSYS_RECONCILE_SECONDS": "300",
}

COLUMNS = (
    "id, job, job_version, state, queue, priority, input, attempts, max_attempts, timeout, "
    "dispatch, lost, meta, tags, principal, principal_id, tenant, cancel_requested, "
    "created_at, started_at, finished_at, duration"
)


def fill(c: Cluster, start: int, n: int, age_seconds: float) -> float:
    """Insert ``n`` completed runs (ids ``start``...), made ``age_seconds`` ago and after,
    every tenth with a log line. Returns the seconds it took."""
    t0 = time.perf_counter()
    engine = c.store.engine
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            series = f"generate_series({start}, {start + n - 1}) AS n"
            made = f"now() - interval '{age_seconds} seconds' + n * interval '1 millisecond'"
            conn.execute(
                sa.text(
                    f"INSERT INTO jobsys_runs ({COLUMNS}) SELECT lpad(n::text, 32, '0'), "
                    "'examples.add', '1', 'completed', 'jobs', 5, '{\"a\": 1, \"b\": 2}', 1, 3, "
                    "60, 1, 0, '{}', '[]', '{}', 'local', 'default', false, "
                    f"{made}, {made}, {made} + interval '1 second', 0.001 FROM {series}"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO jobsys_run_logs (run_id, attempt, at, message) "
                    f"SELECT lpad(n::text, 32, '0'), 1, now(), 'a line' FROM {series} "
                    "WHERE n % 10 = 0"
                )
            )
        else:
            series = (
                f"WITH RECURSIVE s(n) AS (SELECT {start} UNION ALL SELECT n + 1 FROM s "
                f"WHERE n < {start + n - 1})"
            )
            made = f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-{age_seconds} seconds', "
            conn.execute(
                sa.text(
                    f"{series} INSERT INTO jobsys_runs ({COLUMNS}) SELECT printf('%032d', n), "
                    "'examples.add', '1', 'completed', 'jobs', 5, '{\"a\": 1, \"b\": 2}', 1, 3, "
                    "60, 1, 0, '{}', '[]', '{}', 'local', 'default', 0, "
                    f"{made} '+' || (n / 1000.0) || ' seconds'), "
                    f"{made} '+' || (n / 1000.0) || ' seconds'), "
                    f"{made} '+' || (n / 1000.0 + 1) || ' seconds'), 0.001 FROM s"
                )
            )
            conn.execute(
                sa.text(
                    f"{series} INSERT INTO jobsys_run_logs (run_id, attempt, at, message) "
                    "SELECT printf('%032d', n), 1, strftime('%Y-%m-%d %H:%M:%f', 'now'), "
                    "'a line' FROM s WHERE n % 10 = 0"
                )
            )
    return time.perf_counter() - t0


def drain(c: Cluster, n: int) -> tuple[float, int]:
    """Submit ``n`` runs at once and wait until all completed: (jobs/s, runs completed)."""
    t0 = time.perf_counter()
    ids = c.client.submit_many("examples.add", [{"a": i, "b": 1} for i in range(n)])
    T = schema.runs

    def done() -> int | NotYet:
        with c.store.engine.connect() as conn:
            finished = conn.execute(
                sa.select(sa.func.count()).where(T.c.id.in_(ids), T.c.state == "completed")
            ).scalar_one()
        return int(finished) if finished == n else NotYet(f"{finished} of {n}")

    completed = eventually(done, timeout=600)
    return n / (time.perf_counter() - t0), completed


def count(c: Cluster, table: sa.Table) -> int:
    with c.store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def measure(tmp: Path, broker: str, database: str | None, a: argparse.Namespace) -> None:
    with cluster(tmp, broker, database, **POLICIES) as c:
        c.store.count()  # migrated
        took = fill(c, 1, a.old, 40 * 86400)
        took += fill(c, a.old + 1, a.recent, 3600)
        total = count(c, schema.runs)
        events = count(c, schema.run_events)
        logs = count(c, schema.run_logs)
        backend = "PostgreSQL" if database else "SQLite"
        print(f"{backend}: filled {total:,} runs ({logs:,} log lines, {events:,} events) in")
        print(f"  {took:.1f} s; worker -c {a.concurrency}, drains of {a.drain} runs")
        c.start_worker("w1", concurrency=a.concurrency)
        drain(c, 20)  # warm up
        idle = [drain(c, a.drain)[0] for _ in range(2)]
        each = ", ".join(f"{x:.1f}" for x in idle)
        print(f"  idle drain:     {statistics.mean(idle):.1f} jobs/s ({each})")

        rules = retention.policy_rules(c.settings, c.registry, runs.utcnow())
        result: list[retention.PruneResult] = []
        pruner = threading.Thread(
            target=lambda: result.append(
                c.store.retention.prune(rules, batch=c.settings.prune_batch)
            )
        )
        t0 = time.perf_counter()
        pruner.start()
        busy, drained = [], 0
        while pruner.is_alive():
            rate, n = drain(c, a.drain)
            drained += n
            if pruner.is_alive():
                busy.append(rate)
        pruner.join()
        seconds = time.perf_counter() - t0
        r = result[0]
        left = count(c, schema.runs)
        kept = left - drained - idle_total(a)
        mean_busy = statistics.mean(busy) if busy else float("nan")
        print(
            f"  pruning drain:  {mean_busy:.1f} jobs/s over {len(busy)} drains "
            f"({mean_busy / statistics.mean(idle) * 100:.0f} % of idle)"
        )
        print(
            f"  pruned:         {r.runs:,} runs in {r.seconds:.1f} s: {r.runs / r.seconds:,.0f} "
            f"runs/s, {r.batches} batches, longest {r.longest_batch * 1000:.0f} ms"
        )
        print(
            f"  left:           {left:,} runs ({kept:,} of the recent {a.recent:,}), "
            f"{count(c, schema.run_logs):,} log lines, {count(c, schema.run_events):,} events"
        )
        print(f"  drained while pruning: {drained} runs, all completed; {seconds:.1f} s in all")


def idle_total(a: argparse.Namespace) -> int:
    return 20 + 2 * a.drain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=int, default=900_000)
    parser.add_argument("--recent", type=int, default=100_000)
    parser.add_argument("--drain", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--database", default=None, help="a PostgreSQL admin URL; SQLite if none")
    parser.add_argument("--broker", default=None, help="a Redis URL; a private one if none")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        broker = a.broker
        if broker is None:
            server = embedded.RedisServer(Path(tmp) / "redis", persist=False).start()
            broker = server.url
        try:
            (Path(tmp) / "cluster").mkdir()
            measure(Path(tmp) / "cluster", broker, a.database, a)
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
