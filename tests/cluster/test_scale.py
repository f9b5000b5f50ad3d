"""Scale-out: the same drain on 1, then 2, then 3 worker nodes (one process each, on hosts of
their own). Reports jobs/s per node count; asserts only that every run completes (with the
invariants of ``test_nodes``): on a shared machine of 2 cores the rate is a figure, not a
promise."""

from __future__ import annotations

import pytest

from jobsys.store import runs
from tests.cluster.hosts import JOB, Hosts

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

RUNS = 24
SECONDS = 0.3


def test_scale_out_drain_on_1_2_3_nodes(hosts: Hosts) -> None:
    c = hosts
    rates: dict[str, float] = {}
    every: list[str] = []
    for count, node in enumerate(("n1", "n2", "n3"), start=1):
        c.start_workers(node)
        began = runs.utcnow()
        ids = c.client.submit_many(JOB, [{"seconds": SECONDS}] * RUNS)
        records, stuck = c.finish(ids, timeout=120)
        assert not stuck, f"{len(stuck)} runs unfinished on {count} nodes"
        last = max(r.finished_at or began for r in records)
        rates[str(count)] = round(RUNS / max((last - began).total_seconds(), 1e-3), 2)
        every += ids
    result = c.outcome("scale-out drain, 1/2/3 nodes", every, None, timeout=60)
    result.extra.update(
        jobs_per_s=rates,
        speedup="/".join(f"{rates[n] / rates['1']:.2f}x" for n in ("1", "2", "3")),
    )
    result.assert_clean()
