"""Replaying the dead letters by one filter, measured: N runs that ended failed with all their
attempts used are inserted through the store, then ``Client.bulk.retry`` with the filter
``state=failed, exhausted=true`` (dry run first) retries them on a real ``jobsys worker``.
Prints the dry run's count and time, the retry's, how long until every retry completed, and
then the time to delete them all (the dead letters and their retries) by the same tag.

    python -m tests.benchmarks.bulk_replay --runs 500
    python -m tests.benchmarks.bulk_replay --runs 500 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        --broker-url redis://127.0.0.1:6379/45

The suite's test (``tests/integration/test_bulk.py``) does the same with fewer runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from jobsys.base import embedded
from jobsys.store import runs
from tests.cluster import cluster
from tests.integration.test_bulk import dead_letters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--database-url", default=None, help="a PostgreSQL admin URL; SQLite if none"
    )
    parser.add_argument("--broker-url", default=None, help="a Redis URL; a private one if none")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        broker = a.broker_url
        if broker is None:
            server = embedded.RedisServer(Path(tmp) / "redis", persist=False).start()
            broker = server.url
        try:
            measure(Path(tmp) / "cluster", broker, a.database_url, a.runs, a.concurrency)
        finally:
            if server is not None:
                server.stop()


def measure(tmp: Path, broker: str, database: str | None, n: int, concurrency: int) -> None:
    tmp.mkdir()
    with cluster(tmp, broker, database) as c:
        c.start_worker("w1", concurrency=concurrency)
        tag = f"replay-{uuid.uuid4().hex[:8]}"
        dead_letters(c, tag, n)  # failed, every attempt used (as the suite makes them)
        where = ["state=failed", "exhausted=true", f"tag={tag}"]
        t0 = time.perf_counter()
        dry = c.client.bulk.retry(where, dry_run=True)
        t1 = time.perf_counter()
        done = c.client.bulk.retry(where)
        t2 = time.perf_counter()
        while True:
            completed = c.store.select(
                runs.RunFilter(tag=tag, state=runs.RunState.COMPLETED, limit=n + 1)
            )
            if len(completed) >= n:
                break
            time.sleep(0.05)  # (polling the store for the drain's end)
        t3 = time.perf_counter()
        backend = "PostgreSQL" if database else "SQLite"
        print(f"{backend}, {n} exhausted runs, worker -c {concurrency}")
        print(f"  dry run:  matched {dry.matched}, would retry {dry.done}: {t1 - t0:.2f} s")
        print(f"  retry:    matched {done.matched}, retried {done.done}: {t2 - t1:.2f} s")
        print(f"  drained:  {len(completed)} completed {t3 - t2:.2f} s after the retry returned")
        assert dry.done == done.done == len(completed) == n
        t4 = time.perf_counter()
        counted = c.client.bulk.delete([f"tag={tag}"], dry_run=True)
        t5 = time.perf_counter()
        gone = c.client.bulk.delete([f"tag={tag}"])
        t6 = time.perf_counter()
        print(f"  delete:   dry run {counted.done} in {t5 - t4:.2f} s; deleted {gone.done} (the")
        print(f"            dead letters and their retries, with logs) in {t6 - t5:.2f} s")
        assert counted.done == gone.done == 2 * n


if __name__ == "__main__":
    main()
