"""Test harness: a real jobsys cluster made of processes on this host (loopback).

A ``Cluster`` owns one Redis database pair (broker and results) and one run-store database,
both emptied before and after use, and starts real ``jobsys worker`` / ``jobsys beat``
subprocesses against them. The Redis is the embedded one (a ``redis-server`` started for the
test session) unless ``JOBSYS_TEST_BROKER_URL`` names another; the store is a SQLite file
unless ``JOBSYS_TEST_DATABASE_URL`` names a PostgreSQL server, where each cluster gets a
database of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa

from jobsys.base import config
from jobsys.declare import catalog
from jobsys.service import client
from jobsys.store import database, runs
from tests.waiting import NotYet, eventually

ROOT = Path(__file__).resolve().parents[2]
CATALOG = "workers.examples,tests.jobs"
FAST_TIMERS = {
    "JOBSYS_LEASE_SECONDS": "3",
    "JOBSYS_HEARTBEAT_SECONDS": "0.5",
    "JOBSYS_REAPER_SECONDS": "1",
    "JOBSYS_RECONCILE_SECONDS": "30",
    "JOBSYS_CANCEL_GRACE_SECONDS": "1",
    "JOBSYS_HARD_TIMEOUT_GRACE_SECONDS": "1",
    "JOBSYS_BEAT_INTERVAL": "0.2",
    "JOBSYS_STATS_CACHE_SECONDS": "0",
}
PAIRS = tuple(range(0, 12, 2))
"""Redis database pairs of clusters (broker, results); on a shared Redis, 12 and 13 are the
README test's and ``jobsys up``'s (tests/e2e), 14 and 15 the e2e tour's."""
_in_use: set[int] = set()
_turn = itertools.count()


def _pairs() -> tuple[int, ...]:
    """This process's pairs. The embedded Redis is this process's own; a Redis named by
    ``JOBSYS_TEST_BROKER_URL`` is shared by the pytest-xdist workers, which split the pairs."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not os.environ.get("JOBSYS_TEST_BROKER_URL") or not worker.startswith("gw"):
        return PAIRS
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return PAIRS[int(worker[2:]) % count :: count]


def _take_pair() -> int:
    """A pair no live cluster of this process holds (in turn, so that a pair is reused as
    late as possible)."""
    pairs = _pairs()
    start = next(_turn)
    for i in range(len(pairs)):
        db = pairs[(start + i) % len(pairs)]
        if db not in _in_use:
            _in_use.add(db)
            return db
    raise RuntimeError(f"all Redis database pairs {pairs} of this test process are in use")


def with_db(url: str, db: int) -> str:
    head, _, tail = url.rstrip("/").rpartition("/")
    base = head if tail.isdigit() else url.rstrip("/")
    return f"{base}/{db}"


class Database:
    """A run-store database for one cluster: a fresh SQLite file or PostgreSQL database."""

    def __init__(self, tmp: Path, admin_url: str | None) -> None:
        self.admin_url = admin_url
        if admin_url:
            self.name = f"jobsys_t_{uuid.uuid4().hex[:12]}"
            admin = database.make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
            admin.dispose()
            self.url = str(
                sa.engine.make_url(database.make_engine(admin_url).url)
                .set(database=self.name)
                .render_as_string(hide_password=False)
            )
        else:
            self.name = "sqlite"
            self.url = f"sqlite:///{tmp / 'runs.db'}"

    def drop(self) -> None:
        if self.admin_url:
            admin = database.make_engine(self.admin_url).execution_options(
                isolation_level="AUTOCOMMIT"
            )
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            admin.dispose()


class Cluster:
    def __init__(self, tmp: Path, redis_url: str, database_url: str | None, **env: str) -> None:
        self.tmp = tmp
        db = self._pair = _take_pair()
        self.broker_url, self.result_url = with_db(redis_url, db), with_db(redis_url, db + 1)
        self.redis = redis.Redis.from_url(self.broker_url)
        self.results = redis.Redis.from_url(self.result_url)
        self.redis.flushdb()
        self.results.flushdb()
        self.database = Database(tmp, database_url)
        self.effects = tmp / "effects"
        self.effects.mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "JOBSYS_HOME": str(tmp / "home"),
            "JOBSYS_BROKER_URL": self.broker_url,
            "JOBSYS_RESULT_URL": self.result_url,
            "JOBSYS_DATABASE_URL": self.database.url,
            "JOBSYS_CATALOG": CATALOG,
            "JOBSYS_TEST_EFFECTS": str(self.effects),
            **FAST_TIMERS,
            **env,
        }
        self.settings = config.Settings.from_env(self.env)
        self.registry = catalog.load_registry(self.settings.catalog)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._client: client.Client | None = None

    @property
    def client(self) -> client.Client:
        if self._client is None:
            self._client = client.Client(self.settings, self.registry)
        return self._client

    @property
    def store(self) -> runs.RunStore:
        return self.client.store

    def log_path(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def log(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    def start_worker(
        self,
        name: str = "w1",
        concurrency: int = 2,
        queues: str | None = None,
        wait: bool = True,
        catalog: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """A ``jobsys worker``; ``catalog``: its own ``JOBSYS_CATALOG`` (an older or newer
        deploy than the cluster's client)."""
        argv = ["worker", "-c", str(concurrency), "-n", f"{name}@%h"]
        if queues:
            argv += ["-Q", queues]
        proc = self._spawn(name, argv, {"JOBSYS_CATALOG": catalog} if catalog else None)
        if wait:
            self.wait_for_log(name, "ready.", timeout=60)
        return proc

    def start_beat(self, name: str = "beat") -> subprocess.Popen[bytes]:
        proc = self._spawn(name, ["beat"])
        self.wait_for_log(name, "beat: Starting", timeout=60)
        return proc

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.log_path(name).open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobsys", *argv],
            env={**self.env, **(env or {})},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes[name] = proc
        return proc

    def wait_for_log(self, name: str, text: str, timeout: float) -> None:
        proc = self.processes[name]

        def seen() -> bool | NotYet:
            log = self.log(name) if self.log_path(name).exists() else ""
            if text in log:
                return True
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited {proc.returncode}:\n{log[-3000:]}")
            return NotYet("\n" + log[-3000:])

        eventually(seen, timeout, what=f"{name} to log {text!r}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group of a role (main process and pool children)."""
        proc = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(30)

    def stop(self, name: str, timeout: float = 30) -> None:
        proc = self.processes.pop(name)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of a killed main process

    def close(self) -> None:
        for name in list(self.processes):
            self.stop(name)
        if self._client is not None:
            self._client.close()
        self.database.drop()
        self.redis.flushdb()
        self.results.flushdb()
        self.redis.close()
        self.results.close()
        _in_use.discard(self._pair)

    # --- helpers for assertions ---------------------------------------------------------

    def executions(self, run_id: str) -> int:
        """How many times a tests.jobs body ran for ``run_id`` (one line per execution)."""
        path = self.effects / run_id
        return len(path.read_text().splitlines()) if path.exists() else 0

    def wait_all(self, run_ids: list[str], timeout: float) -> list[runs.RunRecord]:
        def finished() -> list[runs.RunRecord] | NotYet:
            records = [self.store.get(r) for r in run_ids]
            unfinished = {r.id: r.state.value for r in records if not r.terminal}
            return NotYet(unfinished) if unfinished else records

        return eventually(finished, timeout, interval=0.2, what="the runs to finish")

    def wait_state(self, run_id: str, state: runs.RunState, timeout: float) -> runs.RunRecord:
        def in_state() -> runs.RunRecord | NotYet:
            record = self.store.get(run_id)
            return record if record.state is state else NotYet(record.state.value)

        return eventually(in_state, timeout, interval=0.05, what=f"run {run_id} {state.value}")

    def queue_length(self, queue: str = "jobs") -> int:
        return sum(int(self.redis.llen(k)) for k in self.redis.scan_iter(f"{queue}*"))


@contextlib.contextmanager
def cluster(tmp: Path, redis_url: str, database_url: str | None, **env: Any) -> Iterator[Cluster]:
    c = Cluster(tmp, redis_url, database_url, **env)
    try:
        yield c
    finally:
        c.close()
