"""What an active webhook subscription costs a drain, and how soon a notification arrives;
prints figures (README "Notifications: webhooks and job hooks"). Not part of the suite (which
runs the behaviour: tests/integration/test_webhooks.py).

    .venv/bin/python -m tests.benchmarks.webhooks [--runs 1000] [--reps 2] [--concurrency 2]
        [--notify 1.0] [--database postgresql+psycopg://postgres@127.0.0.1:5432/test]

One worker node of ``--concurrency`` processes and a local receiver (a threaded
``http.server`` answering 200). Each repetition drains ``--runs`` runs of ``tests.effect`` (no
work), submitted in one batch (``submit_many``), and the drain is the time from the submit to
the last run's end (its record's ``finished_at``). Drains alternate without a
subscription and with one (every ``completed`` run of the tenant, so one notification per
run), so both see the same machine. With the subscription, the time to deliver of each
notification is the receiver's clock at arrival minus the event's time (the ``at`` of the
payload, the database's clock at the run's end; one machine, one clock).
"""

from __future__ import annotations

import argparse
import http.server
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from jobsys.base import embedded
from jobsys.store import schema
from tests.cluster import Cluster, cluster
from tests.servers import free_port
from tests.waiting import NotYet, eventually


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.got: dict[str, float] = {}
        self.event_at: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = time.time()
                data = json.loads(body)
                with receiver.lock:
                    receiver.got.setdefault(data["id"], now)
                    receiver.event_at[data["id"]] = _epoch(data["at"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _epoch(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso).timestamp()


def drain(c: Cluster, total: int) -> tuple[float, list[str]]:
    """Submit ``total`` runs in one batch, wait for all to end; the seconds from the submit to
    the last run's end, and the run ids."""
    t0 = time.time()
    ids = c.client.submit_many("tests.effect", [{}] * total)
    done = sa.select(sa.func.count(), sa.func.max(schema.runs.c.finished_at)).where(
        schema.runs.c.id.in_(ids), schema.runs.c.state == "completed"
    )

    def ended() -> Any:
        time.sleep(0.2)  # (the pace of the poll: one query in a while, not a busy loop)
        with c.store.engine.connect() as conn:
            count, last = conn.execute(done).one()
        return last if count == total else NotYet(count)

    last = eventually(ended, 600, what="every run ended")
    return schema.UTCDateTime().process_result_value(last, None).timestamp() - t0, ids


def worker_cpu(c: Cluster) -> float:
    """CPU seconds used so far by the worker node's processes (the supervisor and its
    children)."""
    total = 0.0
    for proc in c.processes.values():
        try:
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measured(c: Cluster, total: int) -> tuple[float, list[str], float, float]:
    """A drain, with the CPU seconds the workers and this process (the receiver) used in it
    and until its notifications were in (``delivered``, waited on by the caller)."""
    cpu0, mine0 = worker_cpu(c), time.process_time()
    seconds, ids = drain(c, total)
    return seconds, ids, cpu0, mine0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--notify", type=float, default=1.0, help="JOBSYS_NOTIFY_SECONDS")
    parser.add_argument("--database", default=None, help="A PostgreSQL admin URL (default: SQLite)")
    a = parser.parse_args()
    receiver = Receiver()
    url = f"http://127.0.0.1:{receiver.port}/hook"
    env = {
        "JOBSYS_WEBHOOK_HOSTS": f"127.0.0.1:{receiver.port}",
        "JOBSYS_NOTIFY_SECONDS": str(a.notify),
        "JOBSYS_REAPER_SECONDS": "15",
    }
    drains: dict[str, list[float]] = {"without": [], "with": []}
    cpu: dict[str, list[float]] = {"without": [], "with": [], "receiver": []}
    delays: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "redis").mkdir()
        (base / "c").mkdir()
        redis = embedded.RedisServer(base / "redis", persist=False).start()
        try:
            with cluster(base / "c", redis.url, a.database, **env) as c:
                c.start_worker("w1", concurrency=a.concurrency)
                drain(c, min(200, a.runs))  # warm-up
                for _ in range(a.reps):
                    seconds, _, cpu0, mine0 = measured(c, a.runs)
                    drains["without"].append(a.runs / seconds)
                    cpu["without"].append(worker_cpu(c) - cpu0)
                    sub = c.client.subscribe(url, ["completed"]).subscription
                    seconds, ids, cpu0, mine0 = measured(c, a.runs)
                    drains["with"].append(a.runs / seconds)

                    def delivered(sub_id: str = sub.id, want: int = len(ids)) -> bool | NotYet:
                        with receiver.lock:
                            mine = [k for k in receiver.got if k.startswith(sub_id)]
                        return len(mine) >= want or NotYet(len(mine))

                    eventually(delivered, 300, what="every notification delivered")
                    cpu["with"].append(worker_cpu(c) - cpu0)
                    cpu["receiver"].append(time.process_time() - mine0)
                    with receiver.lock:
                        for key, at in receiver.got.items():
                            if key.startswith(sub.id):
                                delays.append(at - receiver.event_at[key])
                    c.client.subscriptions.delete(sub.id)
        finally:
            redis.stop()
            receiver.server.shutdown()
    backend = "PostgreSQL" if a.database else "SQLite"
    without, with_ = statistics.median(drains["without"]), statistics.median(drains["with"])
    delays.sort()
    print(
        f"webhooks ({backend}, 1 node x {a.concurrency} processes, {a.runs} runs, "
        f"{a.reps} reps, JOBSYS_NOTIFY_SECONDS={a.notify})"
    )
    print(f"  drain/s without a subscription: {[round(x) for x in drains['without']]}")
    print(
        f"  drain/s with a subscription (one notification per run): "
        f"{[round(x) for x in drains['with']]}"
    )
    print(f"  ratio (median with / median without): {with_ / without:.3f}")
    per = 1000 / a.runs
    print(
        "  worker CPU s per 1,000 runs: without "
        f"{statistics.median(cpu['without']) * per:.2f}, with (until every notification was "
        f"sent) {statistics.median(cpu['with']) * per:.2f}; this process (the receiver, and "
        f"the polls) {statistics.median(cpu['receiver']) * per:.2f}"
    )
    print(
        f"  time to deliver (s): p50 {statistics.median(delays):.3f}, "
        f"p90 {delays[int(0.9 * (len(delays) - 1))]:.3f}, "
        f"p99 {delays[int(0.99 * (len(delays) - 1))]:.3f}, max {delays[-1]:.3f} "
        f"({len(delays)} notifications)"
    )


if __name__ == "__main__":
    main()
