"""The Celery-based systems: bare Celery (a prefork worker of N processes, or N solo
workers) and jobsys's full path on a given run store.

Their workers start on an empty parking queue; once every node answers a ping they are told
over Celery's remote control to consume the real queue. Completion times are the
``date_done`` Celery stores with each result.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from jobsys.base import config, embedded
from jobsys.ops import bench
from tests.benchmarks import bare_app
from tests.cluster import ROOT


def wait_nodes(
    target: Any,
    procs: list[subprocess.Popen[bytes]],
    expected: int,
    log: Path,
    timeout: float = 60.0,
) -> list[str]:
    """Wait until ``expected`` worker nodes of ``target`` answer a ping; return their names."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"worker exited: {log.read_text(errors='replace')[-2000:]}")
        nodes = bench.own_nodes(target, target.app.control.ping(timeout=0.5))
        if len(nodes) >= expected:
            return nodes
    raise RuntimeError(f"worker not ready after {timeout} s: {log}")


def flush(*urls: str) -> None:
    """Empty Redis databases but for kombu's queue bindings: without them a message sent
    before a worker declares its queue again would be routed nowhere."""
    for url in urls:
        client = redis.Redis.from_url(url)
        keys = [k for k in client.scan_iter(count=1000) if not k.startswith(b"_kombu.binding.")]
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])


@dataclasses.dataclass
class BareCelery:
    """Bare Celery (``bare_app``): stock settings, late acks, results in Redis. ``pool``:
    ``prefork`` (one worker, ``-c N``) or ``solo`` (N worker processes of one slot each)."""

    broker_url: str
    result_url: str
    pool: str = "prefork"
    queue: str = "celery"
    _app: Celery | None = None
    _nodes: list[str] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return f"celery-{self.pool}"

    @property
    def title(self) -> str:
        return "Celery prefork" if self.pool == "prefork" else "Celery, N solo workers"

    @property
    def setup(self) -> str:
        how = "-P prefork -c N" if self.pool == "prefork" else "N x (-P solo)"
        return f"{how}, acks late, results in Redis"

    @property
    def node_prefix(self) -> str:
        return f"bare-{self.pool}"

    @property
    def app(self) -> Celery:
        if self._app is None:
            self._app = bare_app.make_app(self.broker_url, self.result_url)
        return self._app

    def reset(self) -> None:
        flush(self.broker_url, self.result_url)

    def enqueue(self, n: int) -> list[Any]:
        noop = self.app.tasks["bare.noop"]
        return [noop.delay().id for _ in range(n)]

    def enqueue_batch(self, n: int) -> list[Any] | None:
        noop = self.app.tasks["bare.noop"]
        with self.app.producer_or_acquire() as producer:
            return [noop.apply_async(producer=producer).id for _ in range(n)]

    def start(self, processes: int, log: Path) -> list[subprocess.Popen[bytes]]:
        if self.pool == "prefork":
            return [self._worker(["-c", str(processes)], f"{self.node_prefix}@%h", log)]
        return [
            self._worker(["-P", "solo"], f"{self.node_prefix}-{i}@%h", log)
            for i in range(1, processes + 1)
        ]

    def _worker(self, pool: list[str], node: str, log: Path) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "BARE_BROKER_URL": self.broker_url,
            "BARE_RESULT_URL": self.result_url,
        }
        argv = ["-A", "tests.benchmarks.bare_app", "worker", *pool, "-n", node]
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "celery", *argv, "-l", "WARNING", "-Q", bench.PARKING_QUEUE],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                preexec_fn=embedded.die_with_parent,
                start_new_session=True,
            )

    def wait_ready(self, procs: list[subprocess.Popen[bytes]], processes: int, log: Path) -> None:
        expected = 1 if self.pool == "prefork" else processes
        self._nodes = wait_nodes(self, procs, expected, log)

    def go(self) -> None:
        bench.start_consuming(self, self._nodes)  # type: ignore[arg-type]

    def finish_times(self, handles: list[Any], timeout: float) -> list[float]:
        return bench.done_times(redis.Redis.from_url(self.result_url), handles, timeout)

    def roundtrip(self) -> None:
        self.app.tasks["bare.noop"].delay().get(timeout=30)


@dataclasses.dataclass
class Jobsys:
    """jobsys's full path (validation, permission check, run record, message, worker,
    record, result) with inline workers (``jobsys worker -c N``) on one run store."""

    name: str
    title: str
    settings: config.Settings
    _target: bench.JobsysTarget | None = None
    _nodes: list[str] = dataclasses.field(default_factory=list)

    @property
    def setup(self) -> str:
        return "jobsys worker -c N (inline), run store " + self.settings.database_url.split(":")[0]

    @property
    def target(self) -> bench.JobsysTarget:
        if self._target is None:
            self._target = bench.JobsysTarget(self.settings, name=self.name)
        return self._target

    def reset(self) -> None:
        flush(self.settings.resolved_broker_url(), self.settings.resolved_result_url())

    def enqueue(self, n: int) -> list[Any]:
        return self.target.enqueue(n)

    def enqueue_batch(self, n: int) -> list[Any] | None:
        return self.target.enqueue_batch(n)

    def start(self, processes: int, log: Path) -> list[subprocess.Popen[bytes]]:
        return [self.target.start_workers(processes, log)]

    def wait_ready(self, procs: list[subprocess.Popen[bytes]], processes: int, log: Path) -> None:
        self._nodes = wait_nodes(self.target, procs, self.target.nodes(processes), log)

    def go(self) -> None:
        bench.start_consuming(self.target, self._nodes)

    def finish_times(self, handles: list[Any], timeout: float) -> list[float]:
        return bench.done_times(self.target.result_redis(), handles, timeout)

    def roundtrip(self) -> None:
        self.target.roundtrip()
