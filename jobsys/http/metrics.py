"""``GET /metrics``: Prometheus figures read from the store and the broker at scrape time.

A custom collector (no counters kept in this process, so every server agrees and a restart
loses nothing): runs by state and job, run durations per job, queue depths, schedule lag and
when each worker was last seen. Every tenant is counted, so the endpoint needs a token with an
admin role, unless the server runs with ``JOBSYS_METRICS_PUBLIC=1``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from jobsys.http import stats
from jobsys.service.process import Service
from jobsys.store import limits, pauses, runs

log = logging.getLogger("jobsys.http")


class StoreCollector(Collector):
    """Reads the store (aggregate SQL) and Redis on every scrape."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        engine = self.service.store.engine
        everyone = stats.Scope()
        yield self._runs(stats.runs_by_state_and_job(engine, everyone))
        yield self._durations(stats.durations(engine, everyone))
        depths = stats.queue_depths(self.service.settings, stats.queue_names(self.service.registry))
        up = GaugeMetricFamily("jobsys_broker_up", "1 if the broker answered this scrape.")
        up.add_metric([], 1.0 if depths is not None else 0.0)
        yield up
        queue = GaugeMetricFamily(
            "jobsys_queue_depth",
            "Messages waiting in the queue (all priorities).",
            labels=["queue"],
        )
        for name, depth in sorted((depths or {}).items()):
            queue.add_metric([name], float(depth))
        yield queue
        yield self._paused()
        lag = GaugeMetricFamily(
            "jobsys_schedule_lag_seconds",
            "How late the most overdue active schedule is (0: none is overdue).",
        )
        lag.add_metric([], stats.schedule_lag(engine))
        yield lag
        yield self._waiting_on_limit()
        yield self._workers()

    def _paused(self) -> Metric:
        family = GaugeMetricFamily(
            "jobsys_runs_paused",
            "Waiting runs a pause holds (``jobsys queues pause``, ``jobsys jobs pause``).",
            labels=["queue"],
        )
        counts = pauses.PauseStore(self.service.store.engine).waiting_by_queue()
        for name, (_, parked) in sorted(counts.items()):
            family.add_metric([name], float(parked))
        return family

    def _runs(self, counts: dict[tuple[str, str], int]) -> Metric:
        family = GaugeMetricFamily(
            "jobsys_runs", "Runs in the store by state and job.", labels=["state", "job"]
        )
        for (state, job), n in sorted(counts.items()):
            family.add_metric([state, job], float(n))
        return family

    def _durations(self, histograms: list[stats.Durations]) -> Metric:
        family = HistogramMetricFamily(
            "jobsys_run_duration_seconds",
            "Seconds from the first start to the end of finished (completed or failed) runs.",
            labels=["job"],
        )
        for h in histograms:
            buckets = [(_bound(b), float(n)) for b, n in h.buckets]
            buckets.append(("+Inf", float(h.count)))
            family.add_metric([h.job], buckets, sum_value=h.total)
        return family

    def _waiting_on_limit(self) -> Metric:
        family = GaugeMetricFamily(
            "jobsys_runs_waiting_on_limit",
            "Pending runs waiting on a flow limit, by reason (concurrency_limit: no free slot; "
            "rate_limit: over the job's rate; backoff: the job asked to wait).",
            labels=["reason"],
        )
        for reason, n in limits.waiting_on_limit(self.service.store.engine).items():
            family.add_metric([reason], float(n))
        return family

    def _workers(self) -> Metric:
        family = GaugeMetricFamily(
            "jobsys_worker_last_seen_seconds",
            "Seconds since the worker was last seen (claiming, ending or heartbeating a run).",
            labels=["worker"],
        )
        now = runs.utcnow()
        seen = stats.workers_seen(self.service.store.engine, self.service.settings.lease_seconds)
        for name, at in sorted(seen.items()):
            family.add_metric([name], max(0.0, (now - at).total_seconds()))
        return family


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(float(value))


def make_registry(service: Service) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(service))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
