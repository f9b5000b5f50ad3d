"""Outside actors taking and completing runs at once; prints figures (README "Runs done by an
agent or a person"). Not part of the suite (which runs a small version:
tests/integration/test_actors.py).

    .venv/bin/python -m tests.benchmarks.actors [--runs 400] [--actors 4]
        [--database postgresql+psycopg://postgres@127.0.0.1:5432/test]

``--runs`` runs of the external job ``actors.review`` are submitted; ``--actors`` threads, each
an actor with a client of its own principal, take the next run of the job until none waits,
and for each send a progress report, a note and the output. Counted: runs taken twice or
left (must be 0), and the median and 95th percentile milliseconds of a take, a report and a
complete, and the runs done per second. (Through the client, as the HTTP routes and MCP tools
call it; the HTTP layer adds its own per-request cost.)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from jobsys import Principal
from jobsys.base import embedded, errors
from jobsys.service import client
from tests.cluster import CATALOG, Cluster, cluster


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[max(int(len(ordered) * 0.95) - 1, 0)]
    return f"median {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"


def race(c: Cluster, total: int, actors: int) -> dict[str, Any]:
    made = c.client.submit_many("actors.review", [{"url": f"d{i}"} for i in range(total)])
    timings: dict[str, list[float]] = {"take": [], "report": [], "complete": []}
    done: list[str] = []
    lock = threading.Lock()

    def actor(n: int) -> None:
        who = Principal(id=f"agent-{n}", roles=("reviewer",), tenant="default")
        mine = client.Client(c.settings, c.registry, principal=who, store=c.store, app=c.client.app)
        while True:
            t0 = time.perf_counter()
            try:
                taken = mine.actors.take_job("actors.review")
            except errors.NothingToTake:
                return
            t1 = time.perf_counter()
            run_id, token = taken.record.id, taken.token
            mine.actors.report(run_id, token, pct=50, message="half", note="checked")
            t2 = time.perf_counter()
            mine.actors.complete(run_id, token, {"verdict": "approve", "score": 5})
            t3 = time.perf_counter()
            with lock:
                timings["take"].append(t1 - t0)
                timings["report"].append(t2 - t1)
                timings["complete"].append(t3 - t2)
                done.append(run_id)

    started = time.perf_counter()
    threads = [threading.Thread(target=actor, args=(n,)) for n in range(actors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    records = [c.store.get(r) for r in made]
    return {
        "runs": total,
        "taken twice": len(done) - len(set(done)),
        "left": sum(1 for r in records if r.state.value != "completed"),
        "attempts above 1": sum(1 for r in records if r.attempts != 1),
        "take": _ms(timings["take"]),
        "report (progress + note)": _ms(timings["report"]),
        "complete": _ms(timings["complete"]),
        "runs done per second": f"{len(done) / elapsed:.0f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--actors", type=int, default=4)
    parser.add_argument("--database", default=None, help="A PostgreSQL admin URL (default: SQLite)")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for folder in ("redis", "c"):
            (base / folder).mkdir()
        redis = embedded.RedisServer(base / "redis", persist=False).start()
        try:
            env = {"JOBSYS_CATALOG": f"{CATALOG},tests.actor_jobs"}
            with cluster(base / "c", redis.url, a.database, **env) as c:
                figures = race(c, a.runs, a.actors)
        finally:
            redis.stop()
    backend = "PostgreSQL" if a.database else "SQLite"
    print(f"outside actors ({backend}, {a.actors} actors at once)")
    for key, value in figures.items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
