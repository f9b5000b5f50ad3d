"""Worker nodes on hosts of their own, one of them cut off or killed while it runs a job.

Each scenario asserts, from the run records sampled over time and the nodes' execution
ledgers (``watch``): no run lost, none stuck after recovery, no record changed after it
finished, no state going back, no attempt executed twice; and it reports executions per run
and the time to recover (from the end of the fault to the last run's end).
"""

from __future__ import annotations

import time

import pytest

from jobsys.store import runs
from tests.cluster.hosts import Hosts
from tests.cluster.watch import node_of
from tests.waiting import NotYet, eventually

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

SETTINGS = {"JOBSYS_LEASE_SECONDS": "6"}
"""A lease that a partition of 2 s does not outlast, even with TCP's retransmission backoff
(the first retransmission after it comes 3 s after the cut)."""


def in_flight(c: Hosts, ids: list[str], node: str) -> set[str]:
    """Once a run of ``ids`` is executing on ``node``: the runs executing there (their body
    started there and has not ended)."""

    def running_there() -> set[str] | NotYet:
        ended = {e.run_id for e in c.ledger() if e.event == "end" and e.node == node}
        return (c.started(ids, node) - ended) or NotYet(f"nothing running on {node}")

    return eventually(running_there, 60, 0.05, what=f"a run executing on {node}")


def handled(c: Hosts, node: str, run_id: str) -> bool:
    """Whether the Celery worker of ``node`` is done with a message of the run."""
    log = c.log(node)
    return f"[{run_id}] ignored" in log or f"[{run_id}] succeeded" in log


def test_a_partition_shorter_than_the_lease(hosts: Hosts) -> None:
    """A node cut off for 2 s with a lease of 6 s: its lease holds, nothing runs twice."""
    c = hosts
    c.start_workers("n1", "n2")
    ids = c.submit(6, seconds=3)
    in_flight(c, ids, "n1")
    c.partition("n1")
    time.sleep(2)  # (scenario) the partition's length, well under the lease
    healed = c.heal("n1")
    result = c.outcome("partition < lease", ids, healed, timeout=90)
    result.assert_clean()
    assert set(result.executions.values()) == {1}


def test_a_partition_longer_than_the_lease_then_heal(hosts: Hosts) -> None:
    """A node cut off while it runs a job: after the lease the run runs again on the other
    node; the cut-off node finishes its body, and once healed its late completion is refused
    (fenced by attempt): the record keeps the completion of the last attempt."""
    c = hosts
    c.start_workers("n1", "n2")
    ids = c.submit(4, seconds=3)
    cut_off = in_flight(c, ids, "n1")
    c.partition("n1")
    # Partitioned until the lease expired and the run started again elsewhere.
    c.wait_started(sorted(cut_off), "n2", timeout=60)
    healed = c.heal("n1")
    # n1 sent its late completion after the heal (it takes no other message before that).
    eventually(lambda: all(handled(c, "n1", i) for i in cut_off), 60, what="n1's late end")
    result = c.outcome("partition > lease, then heal", ids, healed, timeout=90)
    result.extra["cut_off_in_flight"] = len(cut_off)
    result.assert_clean()
    for run_id in cut_off:
        record = c.client.store.get(run_id)
        assert record.attempts == 2 and node_of(record.worker) == "n2"
        assert record.output == {"node": "n2"}
        ends = {(e.node, e.attempt) for e in c.ledger() if e.run_id == run_id and e.event == "end"}
        assert ends == {("n1", 1), ("n2", 2)}  # n1 finished attempt 1: its completion refused
    assert {i for i, n in result.executions.items() if n > 1} == cut_off


def test_a_node_killed_with_runs_in_flight(hosts: Hosts) -> None:
    """SIGKILL of a whole node (supervisor and worker processes): its run in flight is found
    lost after its lease and runs again on the other node, once more."""
    c = hosts
    c.start_workers("n1", "n2")
    ids = c.submit(6, seconds=2)
    in_flight(c, ids, "n1")
    c.kill("n1")
    killed = runs.utcnow()
    unfinished = {i for i in c.started(ids, "n1") if not c.client.store.get(i).terminal}
    result = c.outcome("node SIGKILL, runs in flight", ids, killed, timeout=90)
    result.extra["killed_in_flight"] = len(unfinished)
    result.assert_clean()
    assert unfinished
    assert {i for i, n in result.executions.items() if n > 1} == unfinished
    assert all(result.executions[i] == 2 for i in unfinished)
    assert all(c.client.store.get(i).lost == 1 for i in unfinished)
