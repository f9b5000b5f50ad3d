"""Workers with different catalogs (a rolling deploy, ``jobsys bench`` next to ``jobsys up``):
a message of a job its worker does not know is parked for a worker that knows it, never
discarded; the run says why it waits, and starts as soon as a worker that knows its job is up
(``jobsys/engine/parking.py``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobsys.engine import parking
from jobsys.mcp import answers
from jobsys.ops import bench
from jobsys.store.runs import RunState
from tests.cluster import ROOT, Cluster
from tests.waiting import eventually

pytestmark = pytest.mark.integration

OLD_CATALOG = "workers.examples"
"""The catalog of the workers deployed before ``tests.jobs`` existed."""


def submit_and_wait_cli(c: Cluster, job: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobsys", "submit", job, "--wait", "--timeout", str(timeout)],
        env=c.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_run_no_live_worker_knows_says_why_and_starts_once_a_worker_that_knows_it_is_up(
    fresh: Cluster,
) -> None:
    fresh.start_worker("old", concurrency=1, catalog=OLD_CATALOG)
    run_id = fresh.client.submit("tests.effect", {})

    record = eventually(
        lambda: (r := fresh.store.get(run_id)).waiting and r, 30, what="the run saying why it waits"
    )
    assert record.state is RunState.PENDING
    assert record.waiting is not None and record.waiting["reason"] == "no_worker"
    assert "no live worker knows job 'tests.effect'" in record.waiting["message"]
    assert record.waiting["worker"].startswith("old@")
    assert "discarded" not in fresh.log("old")
    assert fresh.client.status(run_id).waiting == record.waiting  # what runs show prints
    assert answers.run_status(fresh.client, record, 0)["waiting"] == record.waiting["message"]

    # `jobsys submit --wait` says why instead of hanging silently, and gives up after
    # --timeout with the reason.
    cli = submit_and_wait_cli(fresh, "tests.effect", timeout=3)
    assert cli.returncode == 1, cli.stderr
    assert "waits: no live worker knows job 'tests.effect'" in cli.stderr
    assert "still not finished after 3 s: no live worker knows job" in cli.stderr
    cli_run = cli.stderr.split("run ", 1)[1].split()[0]

    started = time.monotonic()
    fresh.start_worker("new", concurrency=1, wait=False)
    done = fresh.wait_all([run_id, cli_run], timeout=60)
    took = time.monotonic() - started
    print(f"parked runs completed {took:.2f} s after the capable worker was started")
    # The reconciler would publish them again only after JOBSYS_RECONCILE_SECONDS (30 here).
    assert took < 15
    for r in done:
        assert r.state is RunState.COMPLETED and r.waiting is None
        assert r.worker is not None and r.worker.startswith("new@")
        assert fresh.executions(r.id) == 1


def test_old_workers_of_a_rolling_deploy_leave_a_new_job_to_the_new_workers(
    fresh: Cluster,
) -> None:
    fresh.start_worker("old", concurrency=2, catalog=OLD_CATALOG)
    queue = parking.queue_name("tests.effect")
    fresh.start_worker("new", concurrency=1)
    ids = [fresh.client.submit("tests.effect", {}) for _ in range(30)]
    adds = [fresh.client.submit("examples.add", {"a": i, "b": 1}) for i in range(10)]

    records = fresh.wait_all(ids + adds, timeout=20)
    assert all(r.state is RunState.COMPLETED for r in records)
    assert all(r.output == i + 1 for i, r in enumerate(records[30:]))
    for r in records[:30]:
        assert r.worker is not None and r.worker.startswith("new@")
        assert fresh.executions(r.id) == 1
    assert f"parked in {queue!r}" in fresh.log("old")
    assert "discarded" not in fresh.log("old")

    # Once drained, the parking queue is dropped: nothing left in Redis, nobody reads it.
    eventually(
        lambda: f"Canceling queue {queue}" in fresh.log("new"), 20, what="the new worker stopping"
    )
    assert not fresh.redis.sismember(parking.PARKED, "tests.effect")
    assert fresh.queue_length(queue) == 0
    # Later messages go the usual way, and still run.
    late = fresh.client.submit("tests.effect", {})
    (record,) = fresh.wait_all([late], timeout=20)
    assert record.state is RunState.COMPLETED and record.worker.startswith("new@")


def test_bench_runs_next_to_workers_that_do_not_know_its_job(
    fresh: Cluster, tmp_path: Path
) -> None:
    """`jobsys bench` against a running `jobsys up` (whose workers do not load workers.bench):
    only the bench's own workers read the bench's queue."""
    fresh.start_worker("up", concurrency=1)
    target = bench.JobsysTarget(fresh.settings)
    try:
        latency = bench.latency(target, 20, tmp_path)
        drained = bench.throughput(target, 200, 1, tmp_path)
    finally:
        target.client.close()
    assert latency["p50"] > 0 and drained["drain_per_s"] > 0
    assert "bench.noop" not in fresh.log("up")
    assert bench.BENCH_QUEUE not in fresh.log("up")
