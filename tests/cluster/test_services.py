"""The shared services fail while worker nodes on hosts of their own drain runs: the broker
stops and comes back empty (under a producer), the broker loses its data (FLUSHALL), the path
to the database is cut for 10 s. Same assertions and figures as ``test_nodes``."""

from __future__ import annotations

import threading
import time

import pytest
import redis

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
    """A producer submits 5 runs/s; the broker is killed for 6 s and starts again with nothing
    in it. Every run whose submit returned an id completes (the reconciler publishes again
    what was lost); a submit that raised is counted as refused, not lost."""
    c = hosts
    c.start_workers("n1", "n2")
    producer = Producer(c, rate=5, seconds=0.2)
    try:
        producer.wait_accepted(8)
        c.site.broker.stop()
        time.sleep(6)  # (scenario) the outage
        c.site.broker.start()
        restarted = runs.utcnow()
        producer.wait_accepted(10)
    finally:
        producer.stop()
    result = c.outcome("broker stop, restart empty", producer.accepted, restarted, timeout=90)
    result.extra.update(
        accepted=len(producer.accepted),
        refused=len(producer.refused),
        slowest_submit_s=round(producer.slowest, 2),
    )
    result.assert_clean()
    assert producer.accepted
    assert c.processes["n1"].poll() is None and c.processes["n2"].poll() is None


def test_the_broker_loses_its_data_mid_drain(hosts: Hosts) -> None:
    """FLUSHALL with runs queued, in flight and done: the reconciler publishes again the
    runs still waiting; each runs once."""
    c = hosts
    c.start_workers("n1", "n2")
    ids = c.submit(30, seconds=0.1)
    eventually(lambda: ended(c, ids) >= 6 or NotYet(ended(c, ids)), 60, 0.05, what="6 runs done")
    with redis.Redis.from_url(c.site.broker.url(0)) as r:
        r.flushall()
    flushed = runs.utcnow()
    result = c.outcome("broker FLUSHALL mid-drain", ids, flushed, timeout=90)
    result.assert_clean()
    assert set(result.executions.values()) == {1}


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
