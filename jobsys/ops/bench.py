"""``jobsys bench``: measure a jobsys installation (the embedded default or a cluster).

Every scenario measures real processes: worker processes are started here against the
configured broker and run store, on a queue of their own (``workers.bench``), and stopped at
the end. Drain rates come from the completion times celery_api.Celery stores with each result
(``date_done``), so the same measurement applies to bare celery_api.Celery (``tests/benchmarks``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import psutil
import redis
import sqlalchemy as sa

from jobsys.base import config, embedded
from jobsys.declare import cadence, catalog, permissions
from jobsys.engine import celery_api
from jobsys.service import client
from jobsys.store import runs, schema, stores
from jobsys.store.rows import run_error

BENCH_MODULE = "workers.bench"
BENCH_QUEUE = "jobsys-bench"
PARKING_QUEUE = "jobsys-bench-parking"
"""Workers start on this empty queue; the bench adds the real queue once they are all up."""


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}


class Target(Protocol):
    """What a benchmark drives: jobsys, or bare Celery for comparison."""

    name: str
    node_prefix: str
    """The start of the node names of the workers it starts (``bench@%h``: ``bench``, or
    ``bench-1``, ``bench-2`` ...): other workers on the broker (a running ``jobsys up``) are
    left alone."""

    @property
    def app(self) -> celery_api.Celery: ...

    queue: str

    def start_workers(self, processes: int, log: Path) -> subprocess.Popen[bytes]: ...
    def nodes(self, processes: int) -> int: ...
    def enqueue(self, n: int) -> list[str]: ...
    def enqueue_batch(self, n: int) -> list[str]: ...
    def roundtrip(self) -> None: ...
    def result_redis(self) -> redis.Redis: ...
    def reset(self) -> None: ...


@dataclasses.dataclass
class JobsysTarget:
    """jobsys's full path: validation, run record, Celery message, worker, record, result."""

    settings: config.Settings
    name: str = "jobsys"
    queue: str = BENCH_QUEUE
    node_prefix: str = "bench"
    _client: client.Client | None = None

    @property
    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "JOBSYS_HOME": str(s.home),
            "JOBSYS_BROKER_URL": s.resolved_broker_url(),
            "JOBSYS_RESULT_URL": s.resolved_result_url(),
            "JOBSYS_DATABASE_URL": s.database_url,
            "JOBSYS_CATALOG": ",".join(self.catalog),
        }

    @property
    def catalog(self) -> tuple[str, ...]:
        return (*[m for m in self.settings.catalog if m != BENCH_MODULE], BENCH_MODULE)

    @property
    def client(self) -> client.Client:
        if self._client is None:
            settings = dataclasses.replace(self.settings, catalog=self.catalog)
            self._client = client.Client(settings, catalog.load_registry(self.catalog))
        return self._client

    @property
    def app(self) -> celery_api.Celery:
        return self.client.app

    def start_workers(self, processes: int, log: Path) -> subprocess.Popen[bytes]:
        argv = [
            "worker",
            "-c",
            str(processes),
            "-Q",
            PARKING_QUEUE,
            "-n",
            f"{self.node_prefix}@%h",
            "-l",
            "WARNING",
        ]
        return embedded.spawn(argv, self.env, log)

    def nodes(self, processes: int) -> int:
        return processes  # inline mode: every process is a worker node

    def enqueue(self, n: int) -> list[str]:
        return [self.client.submit("bench.noop", {}) for _ in range(n)]

    def enqueue_batch(self, n: int) -> list[str]:
        return self.client.submit_many("bench.noop", [{}] * n)

    def roundtrip(self) -> None:
        self.client.wait(self.client.submit("bench.noop", {}), timeout=30)

    def result_redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.resolved_result_url())

    def reset(self) -> None:
        broker = redis.Redis.from_url(self.settings.resolved_broker_url())
        for key in broker.scan_iter(f"{BENCH_QUEUE}*"):
            broker.delete(key)


def wait_ready(
    target: Target, proc: subprocess.Popen[bytes], log: Path, processes: int, timeout: float = 60
) -> list[str]:
    """Wait until every worker node started here answers a ping over the broker; return
    their names. Other workers on the same broker (a running ``jobsys up``) do not count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
        nodes = own_nodes(target, target.app.control.ping(timeout=0.5))
        if len(nodes) >= target.nodes(processes):
            return nodes
    raise RuntimeError(f"worker not ready after {timeout} s: {log}")


def own_nodes(target: Target, replies: Sequence[dict[str, Any]]) -> list[str]:
    """The nodes among control ``replies`` that are the target's own workers."""
    names = sorted(name for reply in replies for name in reply)
    mine = re.compile(rf"{re.escape(target.node_prefix)}(-\d+)?@.*")
    return [n for n in names if mine.fullmatch(n)]


def start_consuming(target: Target, nodes: Sequence[str]) -> None:
    """Point the idle workers started here, and only those, at the queue under test (a
    worker of another catalog would only set the bench's messages aside, ``parking.py``)."""
    replies = target.app.control.add_consumer(
        target.queue, reply=True, timeout=5, destination=list(nodes)
    )
    if len(replies) < len(nodes):
        raise RuntimeError(f"only {len(replies)} workers started consuming: {replies}")


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    """User + system CPU of a worker process and its live children (the pool)."""
    total = 0.0
    try:
        main = psutil.Process(proc.pid)
        for p in [main, *main.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
    except psutil.NoSuchProcess:
        pass
    return total


def rss_mib(proc: subprocess.Popen[bytes]) -> list[float]:
    main = psutil.Process(proc.pid)
    return [round(p.memory_info().rss / 2**20, 1) for p in [main, *main.children(recursive=True)]]


def done_times(results: redis.Redis, ids: Sequence[str], timeout: float) -> list[float]:
    """Wait until every id has a stored result; return their completion times (epoch s)."""
    keys = [f"celery-task-meta-{i}" for i in ids]
    deadline = time.monotonic() + timeout
    while True:
        values = []
        for start in range(0, len(keys), 5000):
            values.extend(results.mget(keys[start : start + 5000]))
        missing = sum(v is None for v in values)
        if not missing:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{missing} of {len(ids)} runs not finished after {timeout} s")
        time.sleep(0.2)
    return [
        dt.datetime.fromisoformat(json.loads(v or "{}")["date_done"]).timestamp() for v in values
    ]


def stop(proc: subprocess.Popen[bytes]) -> None:
    embedded.stop_all([proc], timeout=30)


def throughput(target: Target, n: int, processes: int, workdir: Path) -> dict[str, float]:
    """Enqueue ``n`` no-op jobs with no worker running, then start the workers and drain."""
    target.reset()
    start = time.perf_counter()
    ids = target.enqueue(n)
    enqueue_s = time.perf_counter() - start
    log = workdir / f"{target.name}-throughput-{processes}.log"
    log.unlink(missing_ok=True)
    proc = target.start_workers(processes, log)
    try:
        nodes = wait_ready(target, proc, log, processes)
        cpu_before = cpu_seconds(proc)
        start_consuming(target, nodes)
        times = done_times(target.result_redis(), ids, timeout=max(120, n / 50))
        cpu = cpu_seconds(proc) - cpu_before
        memory = rss_mib(proc)
    finally:
        stop(proc)
    window = max(times) - min(times)
    return {
        "enqueue_per_s": round(n / enqueue_s, 1),
        "drain_per_s": round((n - 1) / window, 1) if window > 0 else float("inf"),
        "cpu_s_per_1000": round(1000 * cpu / n, 3),
        "rss_mib_max": max(memory),
        "rss_mib_total": round(sum(memory), 1),
    }


def latency(target: Target, count: int, workdir: Path) -> dict[str, float]:
    """``count`` sequential submit-and-wait calls on an idle worker (1 process)."""
    target.reset()
    log = workdir / f"{target.name}-latency.log"
    log.unlink(missing_ok=True)
    proc = target.start_workers(1, log)
    try:
        start_consuming(target, wait_ready(target, proc, log, 1))
        for _ in range(20):  # warm up connections
            target.roundtrip()
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            target.roundtrip()
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        stop(proc)
    return {k: round(v, 3) for k, v in percentiles(samples).items()}


def batch_enqueue(target: Target, n: int) -> dict[str, float]:
    target.reset()
    start = time.perf_counter()
    target.enqueue_batch(n)
    seconds = time.perf_counter() - start
    target.reset()
    return {"enqueue_per_s": round(n / seconds, 1)}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
    }
    return info


LAG_ZONES = ("UTC", "America/New_York", "Europe/Paris", "Asia/Kolkata")


def schedule_lag(
    target: JobsysTarget, count: int, workdir: Path, seconds: float = 75.0
) -> dict[str, float]:
    """``count`` active schedules, half every 30 s (their starts spread over 30 s), half on
    the cron ``* * * * *`` in four zones (all due at each minute boundary); a real beat runs
    for ``seconds``. Fire lag is when beat published the run minus when it was due, for the
    fires due from 5 s after beat started until 10 s before it stopped; a cron fire of that
    window that was never published is counted as missed."""
    store = stores.Store.open(target.settings.database_url)
    made: list[str] = []
    try:
        start = runs.utcnow() + dt.timedelta(seconds=10)
        half = count // 2
        for i in range(count):
            if i < half:
                when = start + dt.timedelta(seconds=30 * i / max(1, half))
                definition = cadence.every(30, start_at=when, overlap="allow")
            else:
                zone = LAG_ZONES[i % len(LAG_ZONES)]
                definition = cadence.cron("* * * * *", timezone=zone, overlap="allow")
            made.append(
                store.schedules.create("bench.noop", definition, permissions.LOCAL, name="bench").id
            )
        log = workdir / "beat-lag.log"
        proc = embedded.spawn(["beat", "-l", "INFO"], target.env, log)
        # Fires due before beat was up measure start-up, not the scheduler: left out.
        counted_from = runs.utcnow() + dt.timedelta(seconds=5)
        try:
            time.sleep(seconds)
            counted_until = runs.utcnow() - dt.timedelta(seconds=10)
            cpu = cpu_seconds(proc)
        finally:
            stop(proc)
        ticks = _ticks(log.read_text(errors="replace"))
        window = (counted_from, counted_until)
        return _lag_figures(store, made, cpu, ticks, seconds, window, count - half)
    finally:
        _retire(store, made)
        target.reset()
        store.close()


def _ticks(log_text: str) -> int:
    found = re.findall(r"jobsys beat: (\d+) ticks", log_text)
    return int(found[-1]) if found else 0


def _lag_figures(
    store: runs.RunStore,
    made: list[str],
    cpu: float,
    ticks: int,
    seconds: float,
    window: tuple[dt.datetime, dt.datetime],
    crons: int,
) -> dict[str, float]:
    R = schema.runs
    lags: dict[str, list[float]] = {"interval": [], "cron": []}
    kinds = {}
    with store.engine.connect() as conn:
        for sid, kind in conn.execute(sa.select(schema.schedules.c.id, schema.schedules.c.cadence)):
            kinds[sid] = "cron" if kind["kind"] == "cron" else "interval"
        query = sa.select(R.c.schedule_id, R.c.fire_at, R.c.published_at).where(
            R.c.schedule_id.in_(made),
            R.c.published_at.is_not(None),
            R.c.fire_at >= window[0],
            R.c.fire_at <= window[1],
        )
        for sid, fire_at, published in conn.execute(query):
            lags[kinds[sid]].append((published - fire_at).total_seconds() * 1000)
    out: dict[str, float] = {"schedules": float(len(made)), "seconds": seconds}
    # Every cron schedule is due at each minute boundary of the window.
    first = window[0].replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    boundaries = max(0, int((window[1] - first).total_seconds() // 60) + 1)
    out["cron_due"] = float(boundaries * crons)
    out["cron_missed"] = float(boundaries * crons - len(lags["cron"]))
    for kind, values in lags.items():
        if values:
            pct = percentiles(values)
            out.update({f"{kind}_fires": float(len(values))})
            out.update({f"{kind}_lag_ms_p50": round(pct["p50"], 1)})
            out.update({f"{kind}_lag_ms_p99": round(pct["p99"], 1)})
    out["beat_cpu_s"] = round(cpu, 2)
    out["beat_ticks"] = float(ticks)
    out["beat_cpu_ms_per_tick"] = round(1000 * cpu / ticks, 2) if ticks else float("nan")
    return out


def _retire(store: runs.RunStore, made: list[str]) -> None:
    """Delete the bench's schedules and cancel the runs they left waiting."""
    now = runs.utcnow()
    R, S = schema.runs, schema.schedules
    error = run_error("cancelled", "RunCancelled", "bench run")
    with store.engine.begin() as conn:
        for i in range(0, len(made), 500):
            chunk = made[i : i + 500]
            conn.execute(
                S.update().where(S.c.id.in_(chunk)).values(state="cancelled", next_fire_at=None)
            )
            conn.execute(
                R.update()
                .where(R.c.schedule_id.in_(chunk), R.c.state == "pending")
                .values(state="cancelled", finished_at=now, error=error)
            )


def redis_version(url: str) -> str:
    return str(redis.Redis.from_url(url).info("server")["redis_version"])


def median_of(results: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in results), 3) for k in results[0]}
