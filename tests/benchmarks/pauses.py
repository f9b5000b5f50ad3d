"""Pausing a queue under load, and what the pause check costs the claim of every run; prints
figures (README "Pausing queues and jobs"). Not part of the suite (which runs a small version:
tests/integration/test_pauses.py).

    .venv/bin/python -m tests.benchmarks.pauses [--runs 400] [--rate 20] [--nodes 3]
        [--concurrency 2] [--database postgresql+psycopg://postgres@127.0.0.1:5432/test]

Under load: a producer submits ``--runs`` runs of ``tests.effect`` (0.05 s each, priorities
0-9 at random) at ``--rate`` per second to a cluster of ``--nodes`` worker nodes; a quarter of
the way in, the queue is paused; once every run is submitted and every message taken, it is
resumed. Counted: runs that started after ``pause`` returned (must be 0), runs lost or run
twice (must be 0), and how far from priority order the resumed runs started (each process
must take them exactly by priority; across processes a run may start at most ``processes - 1``
places from its place, the runs the others took meanwhile).

The claim: ``--claims`` claims of fresh rows with the claim's statement as it is, and as many
with its pause check taken out, alternating one by one, on an empty pause table and on one with
50 pauses of other queues: the median microseconds of a claim.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from jobsys.base import embedded
from jobsys.service.client import SubmitOptions
from jobsys.store import pauses, runs, schema, stores
from tests.cluster import Cluster, Database, cluster
from tests.waiting import NotYet, eventually


def under_load(c: Cluster, total: int, rate: float) -> dict[str, Any]:
    made: list[tuple[str, int]] = []
    paused_at: list[float] = []
    rng = random.Random(1)

    def produce() -> None:
        for i in range(total):
            if i == total // 4:
                c.client.pauses.pause_queue("jobs")
                paused_at.append(time.time())
            p = rng.randrange(10)
            made.append(
                (c.client.submit("tests.effect", {"seconds": 0.05}, SubmitOptions(priority=p)), p)
            )
            time.sleep(max(0.0, (i + 1) / rate - (time.monotonic() - start)))

    start = time.monotonic()
    producer = threading.Thread(target=produce)
    producer.start()
    producer.join()
    ids = [r for r, _ in made]
    pause_returned = dt.datetime.fromtimestamp(paused_at[0], dt.UTC)

    def settled() -> list[runs.RunRecord] | NotYet:
        records = [c.store.get(r) for r in ids]
        waiting = [r for r in records if r.state in runs.WAITING]
        held = [r for r in waiting if (r.waiting or {}).get("reason") == "paused"]
        active = [r for r in records if r.state is runs.RunState.RUNNING]
        done = len(waiting) == len(held) and not active
        return records if done else NotYet((len(waiting), len(held), len(active)))

    records = eventually(settled, 120, what="every message to be taken")
    before = [r for r in records if r.state is runs.RunState.COMPLETED]
    started_while_paused = [
        r for r in records if r.started_at is not None and r.started_at > pause_returned
    ]
    held = [r.id for r in records if r.state in runs.WAITING]
    depth = c.queue_length()
    t0 = time.monotonic()
    resumed = c.client.pauses.resume_queue("jobs")
    resume_seconds = time.monotonic() - t0
    finals = c.wait_all(ids, timeout=300)
    drained = time.monotonic() - t0
    lost = [r.id for r in finals if r.state is not runs.RunState.COMPLETED]
    twice = [r for r in ids if c.executions(r) != 1]
    starts = []
    for run_id in held:
        _, pid, at, *_ = (c.effects / run_id).read_text().splitlines()[0].split()
        starts.append((float(at), run_id, int(pid)))
    starts.sort()
    priority = dict(made)
    order = {r: i for i, (r, _) in enumerate(made)}
    expected = sorted(held, key=lambda r: (-priority[r], order[r]))
    place = {r: i for i, r in enumerate(expected)}
    processes = {pid for _, _, pid in starts}
    out_of_order_in_a_process = 0
    for pid in processes:
        mine = [r for _, r, p in starts if p == pid]
        want = [r for r in expected if r in set(mine)]
        out_of_order_in_a_process += sum(1 for a, b in zip(mine, want, strict=True) if a != b)
    window = len(processes) - 1
    beyond = [r for i, (_, r, _) in enumerate(starts) if abs(place[r] - i) > window]
    return {
        "runs submitted": total,
        "submit rate (/s)": rate,
        "completed before the pause": len(before),
        "runs started after pause returned": len(started_while_paused),
        "runs held (pending, parked)": len(held),
        "messages left on the broker while paused": depth,
        "resume: runs published": resumed.published,
        "resume: seconds to publish": round(resume_seconds, 3),
        "resume: seconds until all held runs completed": round(drained, 2),
        "runs lost (not completed)": len(lost),
        "runs executed other than once": len(twice),
        "worker processes": len(processes),
        "resumed runs out of priority order within a process": out_of_order_in_a_process,
        f"resumed runs more than {window} places from priority order": len(beyond),
    }


def claim_cost(url: str, claims: int) -> dict[str, float]:
    store = stores.Store.open(url)
    hot = store._hot
    plain = hot._claim.replace(f"AND {pauses.NOT_PAUSED} ", "")
    assert plain != hot._claim
    guarded = hot._claim
    figures: dict[str, float] = {}
    for label, extra in (("empty pause table", 0), ("50 pauses of other queues", 50)):
        with store.engine.begin() as conn:
            conn.execute(sa.delete(schema.pauses))
            for i in range(extra):
                conn.execute(
                    schema.pauses.insert().values(
                        scope="queue",
                        name=f"other{i}",
                        tenant="*",
                        paused_by="bench",
                        paused_at=runs.utcnow(),
                    )
                )
        # Claims alternate between the two statements, one by one, each timed on its own:
        # both see the same machine (other processes, caches), and the median of each is
        # robust to the pauses of a shared machine.
        times: dict[str, list[float]] = {"without": [], "with": []}
        ids = [runs.new_run_id() for _ in range(2 * claims)]
        for chunk in range(0, len(ids), 500):
            store.insert([_row(i) for i in ids[chunk : chunk + 500]])
        now = runs.utcnow()
        for n, run_id in enumerate(ids):
            name, sql = ("without", plain) if n % 2 else ("with", guarded)
            hot._claim = sql
            t0 = time.perf_counter()
            claimed = hot.claim(run_id, 1, now, now, now, "bench", 1)
            times[name].append((time.perf_counter() - t0) * 1e6)
            assert claimed is not None
        for name, values in times.items():
            key = f"claim, {label}, {name} the pause check (us, median of {len(values)})"
            figures[key] = round(statistics.median(values), 1)
        hot._claim = guarded
    with store.engine.begin() as conn:
        conn.execute(sa.delete(schema.pauses))
    store.close()
    return figures


def _row(run_id: str) -> dict[str, Any]:
    return {
        "id": run_id,
        "job": "bench.claim",
        "job_version": "1",
        "queue": "jobs",
        "priority": 5,
        "input": {},
        "max_attempts": 1,
        "timeout": 60.0,
        "meta": {},
        "tags": [],
        "principal": {"id": "bench"},
        "principal_id": "bench",
        "tenant": "default",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--claims", type=int, default=2000)
    parser.add_argument("--database", default=None, help="A PostgreSQL admin URL (default: SQLite)")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for folder in ("redis", "c", "db"):
            (base / folder).mkdir()
        redis = embedded.RedisServer(base / "redis", persist=False).start()
        try:
            figures: dict[str, Any] = {}
            if a.runs:  # (--runs 0: the claim's figures only)
                with cluster(base / "c", redis.url, a.database) as c:
                    for n in range(a.nodes):
                        c.start_worker(f"w{n + 1}", concurrency=a.concurrency)
                    figures = under_load(c, a.runs, a.rate)
            db = Database(base / "db", a.database)
            try:
                figures |= claim_cost(db.url, a.claims)
            finally:
                db.drop()
        finally:
            redis.stop()
    backend = "PostgreSQL" if a.database else "SQLite"
    print(f"pauses under load ({backend}, {a.nodes} nodes x {a.concurrency} processes)")
    for key, value in figures.items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
