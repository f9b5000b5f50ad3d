"""Dramatiq for the side-by-side benchmark: the Redis broker, results stored in Redis by the
Results middleware (the actor stores its return value), Dramatiq's default middleware
otherwise (retries, time and age limits, callbacks, pipelines). The broker's Redis URL comes
from ``BENCH_DRAMATIQ_URL``. Run by ``dramatiq tests.benchmarks.dramatiq_app``.

The no-op returns the time it ran: the benchmark reads each job's completion time from its
stored result, as it reads ``date_done`` from Celery's.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from tests.benchmarks import gate

URL = os.environ.get("BENCH_DRAMATIQ_URL", "redis://127.0.0.1:6379/0")


class StartGate(Middleware):
    """Holds each worker process at boot until the benchmark opens the gate."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        gate.check_in(redis.Redis.from_url(URL))


backend = RedisBackend(url=URL)
broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=backend))
broker.add_middleware(StartGate())
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_noop", queue_name="bench", store_results=True)
def noop() -> float:
    return time.time()
