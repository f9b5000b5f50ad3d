"""The shared services fail while worker nodes on hosts of their own drain runs: the broker
stops and comes back empty (under a producer), the broker loses its data (FLUSHALL), the path
to the database is cut for 10 s. Same assertions and figures as ``test_nodes``."""

from __future__ import annotations

import re
import threading
import time

import pytest
import redis

from jobsys.base import errors
from jobsys.service import client
from jobsys.store import runs
from tests.cluster.hosts import JOB, Hosts
from tests.waiting import NotYet, eventually

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

SETTINGS = {"JOBSYS_RECONCILE_SECONDS": "2"}
"""Runs whose message the broker lost are published again within 2 s of being found."""


class Producer:
    """Submits a run every ``1 / rate`` s in a thread of its own until ``stop``: the run ids
    ``submit`` returned (accepted), and the submits that raised (refused, with the error)."""

    def __init__(self, c: Hosts, rate: float, seconds: float) -> None:
        self.c, self.pause, self.seconds = c, 1 / rate, seconds
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self.took: list[float] = []
        self.slow: list[tuple[float, float]] = []  # (when it ended, seconds) over 100 ms
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="producer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.accepted.append(self.c.client.submit(JOB, {"seconds": self.seconds}))
            except Exception as exc:  # counted, not lost: the caller was told
                self.refused.append(f"{type(exc).__name__}: {exc}")
            took = time.monotonic() - began
            self.took.append(took)
            if took > 0.1:
                self.slow.append((round(time.monotonic(), 2), round(took, 3)))
            self.slowest = max(self.slowest, took)
            self._stop.wait(max(0.0, self.pause - took))  # (scenario) the producer's pace

    def wait_accepted(self, more: int) -> None:
        goal = len(self.accepted) + more
        eventually(
            lambda: len(self.accepted) >= goal or NotYet(len(self.accepted)),
            60,
            what=f"{more} more accepted submits",
        )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def ended(c: Hosts, ids: list[str]) -> int:
    wanted = set(ids)
    return len({e.run_id for e in c.ledger() if e.event == "end" and e.run_id in wanted})


def test_the_broker_stops_and_comes_back_empty_under_producer_load(hosts: Hosts) -> None:
    """A producer submits 10 runs/s; the broker is killed for 15 s and starts again with
    nothing in it. No submit is refused: each returns its run id at once (recorded, not yet
    queued), and every run completes soon after the broker is back (the producer's outbox
    sends them in order; the reconciler publishes again what the broker lost). A submit
    that asks to be queued or nothing fails cleanly meanwhile and leaves no record."""
    c = hosts
    c.start_workers("n1", "n2")
    producer = Producer(c, rate=10, seconds=0)
    try:
        producer.wait_accepted(8)
        c.site.broker.stop()
        stopped = time.monotonic()
        during = len(producer.accepted)
        with pytest.raises(errors.BrokerUnavailable, match="not kept") as refused:
            c.client.submit(JOB, {"seconds": 0}, client.SubmitOptions(require_queued=True))
        found = re.search(r"run ([0-9a-f]{32})", str(refused.value))
        assert found
        with pytest.raises(errors.RunNotFound):
            c.client.status(found.group(1))
        time.sleep(max(0.0, 15 - (time.monotonic() - stopped)))  # (scenario) the outage
        outage = producer.accepted[during:]
        c.site.broker.start()
        restarted, back = runs.utcnow(), time.monotonic()
        producer.wait_accepted(10)
    finally:
        producer.stop()
    result = c.outcome("broker stop 15 s, restart empty", producer.accepted, restarted, timeout=90)
    finished = [c.client.status(i).finished_at for i in outage]
    late = max((f - restarted).total_seconds() for f in finished if f is not None)
    first = min((f - restarted).total_seconds() for f in finished if f is not None)
    took = sorted(producer.took)
    result.extra.update(
        accepted=len(producer.accepted),
        submitted_in_outage=len(outage),
        refused=len(producer.refused),
        submit_p50_ms=round(1000 * took[len(took) // 2], 1),
        submit_p99_ms=round(1000 * took[int(len(took) * 0.99)], 1),
        slowest_submit_ms=round(1000 * producer.slowest, 1),
        slow_submits_after_stop_s=[(round(t - stopped, 2), d) for t, d in producer.slow],
        broker_back_after_stop_s=round(back - stopped, 2),
        first_outage_run_done_after_return_s=round(first, 2),
        last_outage_run_done_after_return_s=round(late, 2),
    )
    result.assert_clean()
    assert not producer.refused, producer.refused[:3]
    # 10/s for 15 s would be 150; a producer blocked by the outage makes a handful. On a
    # loaded machine (the CI runs two suites on 2 cores) single submits take up to ~2.5 s
    # (slow_submits_after_stop_s in the report): 60 still proves it kept going throughout.
    assert len(outage) >= 60, len(outage)
    assert late <= 10, f"a run submitted in the outage ended {late:.1f} s after the broker's return"
    # Each submit returns at once (p99 about 40 ms here), the one in flight as the broker
    # dies included: none waits for a connection timeout or a retry policy (a submit with
    # require_queued retries for 5 s beside them; kombu's retry used to make every other
    # publish of the process retry too). The bound is loose for a loaded CI machine (the CI
    # runs two suites on 2 cores); the figures above are the measure.
    assert took[-1] <= 2.0, result.extra
    assert c.processes["n1"].poll() is None and c.processes["n2"].poll() is None


def test_the_broker_loses_its_data_mid_drain(hosts: Hosts) -> None:
    """FLUSHALL with runs queued, in flight and done: the reconciler publishes again the
    runs still waiting; each runs once."""
    c = hosts
    c.start_workers("n1", "n2")
    logged = {node: len(c.log(node)) for node in ("n1", "n2")}
    ids = c.submit(500, seconds=0)
    eventually(lambda: ended(c, ids) >= 30 or NotYet(ended(c, ids)), 60, 0.05, what="30 done")
    with redis.Redis.from_url(c.site.broker.url(0)) as r:
        r.flushall()
    flushed = runs.utcnow()
    result = c.outcome("broker FLUSHALL mid-drain", ids, flushed, timeout=90)
    # Copies of a message a worker took and dropped (the run had moved on): each reconciler
    # claims a stale run before sending it, so the flushed runs are sent again once each.
    dropped = sum(
        c.log(node)[since:].count("ignored stale or duplicate message")
        for node, since in logged.items()
    )
    result.extra.update(runs=len(ids), duplicate_deliveries=dropped)
    result.assert_clean()
    assert set(result.executions.values()) == {1}
    assert dropped <= len(ids), f"{dropped} duplicate deliveries for {len(ids)} runs"


def test_the_database_is_cut_off_for_10_s(hosts: Hosts) -> None:
    """Every database connection of the hosts drops and none can be made for 10 s (the
    forwarder is killed, then started again), with runs in flight: the workers live on and
    every run completes."""
    c = hosts
    c.start_workers("n1", "n2")
    ids = c.submit(24, seconds=0.5)
    eventually(lambda: ended(c, ids) >= 4 or NotYet(ended(c, ids)), 60, 0.05, what="4 runs done")
    c.site.forwarder.cut()
    time.sleep(10)  # (scenario) the outage
    c.site.forwarder.start()
    restored = runs.utcnow()
    result = c.outcome("database cut for 10 s", ids, restored, timeout=120)
    result.assert_clean()
    assert c.processes["n1"].poll() is None and c.processes["n2"].poll() is None
