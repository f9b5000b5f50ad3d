"""Flow limits at cluster scale: 3 worker nodes (``jobsys worker``, a Celery worker each, -c 4)
sharing one Redis and one run store, and the jobs of ``tests/limit_jobs.py``. Prints:

1. ``max_concurrency=3``: 60 runs; the most running at once, sampled from the run records
   every 50 ms, and from the bodies' own start/end records;
2. SIGKILL of a node holding slots: how long until its slots are taken again (the lease is
   ``JOBSYS_LEASE_SECONDS``, 3 s here);
3. ``per_key=1`` with 5 keys: 40 runs; the most running at once per key, and in all;
4. ``rate="20/s"``: 400 runs; how long they take, and the most starts in any 1 s window;
5. what a claim costs, with and without limits (in-process, on the same store).

    python -m tests.benchmarks.limits                                   # SQLite
    python -m tests.benchmarks.limits --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Not part of the suite (tests/integration/test_limits.py has small versions of each).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from jobsys.base import embedded
from jobsys.declare.flow import FlowLimits
from jobsys.store import limits, rows, runs, schema, stores
from tests.cluster import CATALOG, Cluster, cluster
from tests.integration.test_limits import most_at_once
from tests.waiting import eventually

CATALOG_LIMITS = f"{CATALOG},tests.limit_jobs"
T = schema.runs


class Sampler:
    """Counts the running runs of a job in the run records every ``every`` seconds."""

    def __init__(self, c: Cluster, job: str, every: float = 0.05) -> None:
        self.c, self.job, self.every = c, job, every
        self.running: list[int] = []
        self.holding: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        engine = self.c.store.engine
        while not self._stop.wait(self.every):
            now = runs.utcnow()
            running = (T.c.job == self.job, T.c.state == "running")
            with engine.connect() as conn:
                n = conn.execute(sa.select(sa.func.count()).where(*running)).scalar() or 0
                held = (
                    conn.execute(
                        sa.select(sa.func.count()).where(*running, T.c.lease_expires_at > now)
                    ).scalar()
                    or 0
                )
            self.running.append(int(n))
            self.holding.append(int(held))


def spans(c: Cluster, ids: list[str]) -> list[tuple[str, float, float | None]]:
    """(run id, start, end or None) of every execution of the runs' bodies."""
    out: list[tuple[str, float, float | None]] = []
    for run_id in ids:
        path = c.effects / run_id
        if not path.exists():
            continue
        started: float | None = None
        for line in path.read_text().splitlines():
            _, _, at, note = line.split(" ", 3)
            if note.strip() == "start":
                if started is not None:
                    out.append((run_id, started, None))
                started = float(at)
            elif note.strip() == "end" and started is not None:
                out.append((run_id, started, float(at)))
                started = None
        if started is not None:
            out.append((run_id, started, None))
    return out


def max_concurrency(c: Cluster) -> None:
    job = "tests.limited3"
    t0 = time.monotonic()
    with Sampler(c, job) as sampler:
        ids = [c.client.submit(job, {"seconds": 0.3}) for _ in range(60)]
        records = c.wait_all(ids, 300)
    took = time.monotonic() - t0
    done = sum(r.state is runs.RunState.COMPLETED for r in records)
    ran = [(s, e) for _, s, e in spans(c, ids) if e is not None]
    print(
        f"1. max_concurrency=3, 60 runs of 0.3 s over 3 nodes x 4 processes: {done}/60 "
        f"completed in {took:.1f} s (ideal {60 * 0.3 / 3:.1f} s); most running at once: "
        f"{max(sampler.running)} in the run records ({len(sampler.running)} samples every 50 ms), "
        f"{most_at_once(ran)} from the bodies; attempts used: "
        f"{sorted({r.attempts for r in records})}"
    )


def killed_node(c: Cluster) -> None:
    job = "tests.limited3"
    ids = [c.client.submit(job, {"seconds": 0.2, "first_seconds": 20}) for _ in range(9)]

    def three_running() -> list[runs.RunRecord] | None:
        found = [r for r in (c.store.get(i) for i in ids) if r.state is runs.RunState.RUNNING]
        return found if len(found) == 3 else None

    holding = eventually(three_running, 60, what="3 runs holding the slots")

    def node_of(r: runs.RunRecord) -> str:  # (worker names: n1-2@host, node n1)
        return (r.worker or "").split("@", 1)[0].split("-", 1)[0]

    node = node_of(holding[0])
    slots = sum(node_of(r) == node for r in holding)
    with Sampler(c, job) as sampler:
        c.kill(node)
        killed = time.time()
        leases = [r.lease_expires_at for r in holding if node_of(r) == node]

        def a_slot_retaken() -> float | None:
            starts = [s for _, s, _ in spans(c, ids) if s > killed]
            return min(starts) if starts else None

        retaken = eventually(a_slot_retaken, 60, interval=0.05, what="a freed slot to be taken")
        c.wait_all(ids, 300)
    lease = float(c.env["JOBSYS_LEASE_SECONDS"])
    expiry = max(x for x in leases if x is not None).timestamp() - killed
    print(
        f"2. SIGKILL of node {node} holding {slots} of the 3 slots: its leases expired "
        f"{expiry:.2f} s after the kill (lease {lease:g} s), a freed slot was taken "
        f"{retaken - killed:.2f} s after the kill (reaper pass every "
        f"{c.env['JOBSYS_REAPER_SECONDS']} s); most holding a lease at once meanwhile: "
        f"{max(sampler.holding)}"
    )


def per_key(c: Cluster) -> None:
    job = "tests.per_customer"
    keys = [f"customer-{i}" for i in range(5)]
    t0 = time.monotonic()
    ids = {c.client.submit(job, {"seconds": 0.2, "customer": k}): k for k in keys * 8}
    records = c.wait_all(list(ids), 300)
    took = time.monotonic() - t0
    ran = [(i, s, e) for i, s, e in spans(c, list(ids)) if e is not None]
    per = {k: most_at_once([(s, e) for i, s, e in ran if ids[i] == k]) for k in keys}
    done = sum(r.state is runs.RunState.COMPLETED for r in records)
    print(
        f"3. per_key=1, 5 keys x 8 runs of 0.2 s: {done}/40 completed in {took:.1f} s (ideal "
        f"{8 * 0.2:.1f} s); most at once per key: {max(per.values())} ({per}); in all: "
        f"{most_at_once([(s, e) for _, s, e in ran])}"
    )


class Hits:
    """The times the rate let a run through, as the moving window records them in Redis
    (read every 100 ms: each stays there for the window, 1 s)."""

    def __init__(self, c: Cluster, job: str) -> None:
        self.c, self.pattern = c, f"jobsys-rate:LIMITER/{job}/*"
        self.seen: set[float] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Hits:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self._read()

    def _read(self) -> None:
        for key in self.c.redis.scan_iter(self.pattern):
            self.seen.update(float(x) for x in self.c.redis.lrange(key, 0, -1))


def rate(c: Cluster) -> None:
    job = "tests.rated20"
    with Hits(c, job) as hits:
        ids = c.client.submit_many(job, [{} for _ in range(400)])
        t0 = time.monotonic()
        records = c.wait_all(ids, 600)
        took = time.monotonic() - t0
    starts = sorted(s for _, s, _ in spans(c, ids))
    claimed = sorted(r.started_at.timestamp() for r in records if r.started_at is not None)
    most = busiest_second(starts)
    first_second = sum(1 for t in starts if t < starts[0] + 1.0)
    done = sum(r.state is runs.RunState.COMPLETED for r in records)
    print(
        f"4. rate=20/s, 400 runs over 3 nodes x 4 processes: {done}/400 completed in "
        f"{took:.1f} s; starts spread over {starts[-1] - starts[0]:.1f} s (ideal 19.95 s); the "
        f"most let through in any 1 s window: {busiest_second(sorted(hits.seen))} (of "
        f"{len(hits.seen)} hits read from the window in Redis), {busiest_second(claimed)} of "
        f"the claims (run records' started_at), {most} of the body starts (first second: "
        f"{first_second}); "
        f"attempts used: {sorted({r.attempts for r in records})}"
    )


def busiest_second(times: list[float]) -> int:
    """The most of ``times`` (sorted) in any window of 1 s."""
    j = most = 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return most


def claim_cost(url: str) -> None:
    """Per-claim time of the hot path (a job without limits) against a limited job's claim
    (``limits.claim``: a lock, one or two counts, the claim), on the same store."""
    from tests.limit_jobs import limited3
    from workers.examples import add

    store = stores.Store.open(url)
    try:
        n = 300
        now = runs.utcnow()

        def made(spec: Any, payload: dict[str, Any]) -> list[str]:
            batch = [
                rows.new_run(
                    spec, payload, principal={}, principal_id="bench", tenant="default", now=now
                )
                for _ in range(n)
            ]
            store.insert(batch)
            return [str(r["id"]) for r in batch]

        plain, limited = made(add, {"a": 1, "b": 2}), made(limited3, {"seconds": 0})
        t0 = time.perf_counter()
        for run_id in plain:
            store.claim(run_id, 1, 30, 60)
        hot = (time.perf_counter() - t0) / n
        # Room for every run of the measure: it measures a claim that takes a slot.
        roomy = FlowLimits(max_concurrency=10**6)
        t0 = time.perf_counter()
        for run_id in limited:
            at = runs.utcnow()
            limits.claim(
                store.engine,
                limited3.name,
                roomy,
                run_id,
                1,
                at,
                at + dt.timedelta(seconds=30),
                at + dt.timedelta(seconds=60),
                "bench",
                0,
            )
        gated = (time.perf_counter() - t0) / n
        # The one change on the path of a job without limits: its insert binds limit_key
        # (null). Measured against the same row without it, in alternating rounds.
        with_key, without = [], []
        for _ in range(10):
            for keep, into in ((True, with_key), (False, without)):
                t0 = time.perf_counter()
                for _ in range(50):
                    row = rows.new_run(
                        add, {"a": 1, "b": 2}, principal={}, principal_id="b", tenant="d", now=now
                    )
                    if not keep:
                        del row["limit_key"]
                    store.insert([row])
                into.append((time.perf_counter() - t0) / 50)
        print(
            f"6. insert of a run without limits, {store.engine.dialect.name}: "
            f"{statistics.median(with_key) * 1e6:.0f} us with limit_key bound (null), "
            f"{statistics.median(without) * 1e6:.0f} us without (median of 10 rounds of 50)"
        )
        print(
            f"5. claim, {store.engine.dialect.name}, {n} each: a job without limits "
            f"{hot * 1e6:.0f} us (hotsql, one statement), a job with max_concurrency "
            f"{gated * 1e6:.0f} us (lock, count, claim in one transaction)"
        )
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="a PostgreSQL admin URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "cluster").mkdir()
        server = embedded.RedisServer(root / "redis", persist=False).start()
        try:
            with cluster(
                root / "cluster", server.url, args.database_url, JOBSYS_CATALOG=CATALOG_LIMITS
            ) as c:
                backend = "PostgreSQL" if args.database_url else "SQLite"
                print(f"flow limits on {backend}, 3 nodes x 4 processes, one Redis, one store")
                for node in ("n1", "n2", "n3"):
                    c.start_worker(node, concurrency=4)
                max_concurrency(c)
                per_key(c)
                rate(c)
                killed_node(c)
                claim_cost(c.database.url)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
