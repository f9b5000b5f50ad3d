"""Huey for the side-by-side benchmark: ``RedisHuey`` with results stored, the queue read
with a blocking pop (``blocking=True``) and results announced on a notification list
(``notify_result=True``, so a waiting client wakes on BLPOP instead of polling). The Redis URL
comes from ``BENCH_HUEY_URL``. Run by ``huey_consumer tests.benchmarks.huey_app.huey``.

``RedisHuey`` rather than ``PriorityRedisHuey``: a plain list (LPUSH/BRPOP) is Huey's cheaper
queue; priorities are not measured here. The no-op returns the time it ran (Huey stores no
``None`` result, and the benchmark reads each job's completion time from its result).
"""

from __future__ import annotations

import os
import time

import redis
from huey import RedisHuey

from tests.benchmarks import gate

URL = os.environ.get("BENCH_HUEY_URL", "redis://127.0.0.1:6379/0")

huey = RedisHuey("bench", url=URL, results=True, blocking=True, notify_result=True)


@huey.on_startup()
def start_gate() -> None:
    """Hold each worker process at boot until the benchmark opens the gate."""
    gate.check_in(redis.Redis.from_url(URL))


@huey.task()
def noop() -> float:
    return time.time()
