"""Dramatiq and Huey, each on its own Redis database of the benchmark's Redis, with results
stored in Redis. Their apps (``dramatiq_app``, ``huey_app``) read the Redis URL from the
environment, so they are imported only once it is set; their worker processes wait at a
start gate (``gate.py``) until the benchmark lets them consume.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import dramatiq
import redis

from jobsys.base import embedded
from tests.benchmarks import gate
from tests.benchmarks.harness import wait_for_times
from tests.cluster import ROOT


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=embedded.die_with_parent,
            start_new_session=True,  # stop_all ends the worker's own processes too
        )


def load(module: str, variable: str, url: str) -> ModuleType:
    """Import a benchmark app once the Redis URL it reads at import time is set."""
    os.environ[variable] = url
    return importlib.import_module(module)


@dataclasses.dataclass
class Dramatiq:
    """Dramatiq: the Redis broker and Redis results backend, ``dramatiq --processes N
    --threads T``. ``threads`` defaults to Dramatiq's own default, 8 per process: a process
    prefetches twice its threads, and with 1 thread (2 messages a fetch) it drained no-op
    jobs 2 to 6 times slower in a smoke check (``--dramatiq-threads`` changes it)."""

    url: str
    threads: int = 8
    name: str = "dramatiq"
    title: str = "Dramatiq"

    @property
    def setup(self) -> str:
        return f"Redis broker + RedisBackend results, --processes N --threads {self.threads}"

    @property
    def app(self) -> ModuleType:
        return load("tests.benchmarks.dramatiq_app", "BENCH_DRAMATIQ_URL", self.url)

    def reset(self) -> None:
        redis.Redis.from_url(self.url).flushdb()

    def enqueue(self, n: int) -> list[Any]:
        noop = self.app.noop
        return [noop.send() for _ in range(n)]

    def enqueue_batch(self, n: int) -> list[Any] | None:
        """``group(...).run()``: Dramatiq's API for many messages (it sends them one by one)."""
        noop = self.app.noop
        return list(dramatiq.group(noop.message() for _ in range(n)).run().children)

    def start(self, processes: int, log: Path) -> list[subprocess.Popen[bytes]]:
        argv = [sys.executable, "-m", "dramatiq", "tests.benchmarks.dramatiq_app"]
        options = ["--processes", str(processes), "--threads", str(self.threads)]
        return [spawn([*argv, *options], {"BENCH_DRAMATIQ_URL": self.url}, log)]

    def wait_ready(self, procs: list[subprocess.Popen[bytes]], processes: int, log: Path) -> None:
        gate.wait_all_in(redis.Redis.from_url(self.url), procs, processes, log)

    def go(self) -> None:
        gate.open_gate(redis.Redis.from_url(self.url))

    def finish_times(self, handles: list[Any], timeout: float) -> list[float]:
        backend = self.app.backend
        keys = [backend.build_message_key(m) for m in handles]
        client = redis.Redis.from_url(self.url)

        def fetch() -> list[float | None]:
            values = []
            for start in range(0, len(keys), 5000):
                with client.pipeline(transaction=False) as pipe:
                    for key in keys[start : start + 5000]:
                        pipe.lindex(key, 0)
                    values.extend(pipe.execute())
            return [
                None if v is None else float(backend.unwrap_result(backend.encoder.decode(v)))
                for v in values
            ]

        return wait_for_times(fetch, len(keys), timeout)

    def roundtrip(self) -> None:
        app = self.app
        app.noop.send().get_result(backend=app.backend, block=True, timeout=30_000)


@dataclasses.dataclass
class Huey:
    """Huey: ``RedisHuey`` with results stored and announced (``notify_result``), blocking
    reads; ``huey_consumer -k process -w N``. Huey has no batch enqueue."""

    url: str
    name: str = "huey"
    title: str = "Huey"
    setup: str = "RedisHuey, blocking=True, notify_result=True, -k process -w N"

    @property
    def app(self) -> ModuleType:
        return load("tests.benchmarks.huey_app", "BENCH_HUEY_URL", self.url)

    def reset(self) -> None:
        redis.Redis.from_url(self.url).flushdb()

    def enqueue(self, n: int) -> list[Any]:
        noop = self.app.noop
        return [noop().id for _ in range(n)]

    def enqueue_batch(self, n: int) -> list[Any] | None:
        return None

    def start(self, processes: int, log: Path) -> list[subprocess.Popen[bytes]]:
        argv = [sys.executable, "-m", "huey.bin.huey_consumer", "tests.benchmarks.huey_app.huey"]
        options = ["-k", "process", "-w", str(processes), "-q"]
        return [spawn([*argv, *options], {"BENCH_HUEY_URL": self.url}, log)]

    def wait_ready(self, procs: list[subprocess.Popen[bytes]], processes: int, log: Path) -> None:
        gate.wait_all_in(redis.Redis.from_url(self.url), procs, processes, log)

    def go(self) -> None:
        gate.open_gate(redis.Redis.from_url(self.url))

    def finish_times(self, handles: list[Any], timeout: float) -> list[float]:
        huey = self.app.huey

        def fetch() -> list[float | None]:
            found: dict[Any, bytes] = {}
            for start in range(0, len(handles), 5000):
                found.update(huey.storage.peek_many(handles[start : start + 5000]))
            return [
                float(huey.serializer.deserialize(found[h])) if h in found else None
                for h in handles
            ]

        return wait_for_times(fetch, len(handles), timeout)

    def roundtrip(self) -> None:
        self.app.noop()(blocking=True, timeout=30)
