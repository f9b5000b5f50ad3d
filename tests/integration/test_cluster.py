"""The docker-compose topology as local processes: Redis, the run store (PostgreSQL when
JOBSYS_TEST_DATABASE_URL is set), two workers with distinct node names, and beat."""

from __future__ import annotations

import pytest

from jobsys import RunState
from tests.cluster import Cluster

pytestmark = pytest.mark.integration


def test_two_workers_and_beat_share_the_work(fresh: Cluster) -> None:
    fresh.start_worker("node1", concurrency=2)
    fresh.start_worker("node2", concurrency=2)
    beat = fresh.start_beat()
    ids = [fresh.client.submit("tests.effect", {"seconds": 0.3}) for _ in range(40)]
    records = fresh.wait_all(ids, timeout=120)
    assert [r.state for r in records] == [RunState.COMPLETED] * 40
    nodes = {r.worker.split("-")[0] for r in records if r.worker}
    assert nodes == {"node1", "node2"}
    assert len({r.worker for r in records}) == 4  # two processes on each node
    assert all(fresh.executions(i) == 1 for i in ids)
    assert beat.poll() is None
    assert fresh.queue_length() == 0
