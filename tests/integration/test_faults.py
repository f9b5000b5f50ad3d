"""Faults (RELIABILITY.md R1-R3, R12-R14, R21) on real worker processes: kills, poison
messages, hard time limits, duplicates and pickle, each asserted on the run table."""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import time
import uuid
from pathlib import Path

import pytest

from jobsys import RunState
from jobsys.store.runs import RunFilter
from tests.cluster import Cluster
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration


def all_started(c: Cluster, ids: list[str]) -> bool | NotYet:
    """Whether the body of every run of ``ids`` has started (and how many have, if not)."""
    n = sum(c.executions(i) > 0 for i in ids)
    return n == len(ids) or NotYet(f"{n} of {len(ids)} started")


def test_sigkill_worker_with_12_runs_in_flight_then_new_worker_completes_all(
    fresh: Cluster,
) -> None:
    """R1: SIGKILL of the whole worker (supervisor and worker processes) mid-run. Twelve
    processes (not more: each holds up to three PostgreSQL sessions with a run in flight, and
    the suite runs two tests at once against one server of 100 connections)."""
    fresh.start_worker("a", concurrency=12)
    # Long enough that the first run is still running when the last starts on a loaded
    # machine; the second attempts, on the second worker, need not be long.
    ids = [fresh.client.submit("tests.long_first", {"seconds": 45, "then": 0.2}) for _ in range(12)]
    eventually(lambda: all_started(fresh, ids), 90, what="the 12 runs to start")
    assert all(fresh.store.get(i).state is RunState.RUNNING for i in ids)
    fresh.kill("a", signal.SIGKILL)
    fresh.start_worker("b", concurrency=6)
    records = fresh.wait_all(ids, timeout=120)
    assert [r.state for r in records] == [RunState.COMPLETED] * 12
    assert all(r.attempts == 2 and r.lost == 1 for r in records)
    assert all(r.worker is not None and r.worker.startswith("b-") for r in records)
    assert all(fresh.executions(i) == 2 for i in ids)
    assert fresh.store.select(RunFilter(state=RunState.RUNNING)) == []


def test_killed_child_is_replaced_and_the_run_completes(fresh: Cluster) -> None:
    """R2: the pool child is SIGKILLed (an OOM analogue) on the first attempt only."""
    fresh.start_worker("w", concurrency=1)
    run_id = fresh.client.submit("tests.kill_self", {"kill_attempts": 1})
    record = fresh.client.wait(run_id, timeout=60)
    assert record.state is RunState.COMPLETED
    assert record.attempts == 2 and record.lost == 1
    assert fresh.executions(run_id) == 2
    assert fresh.client.execute("examples.add", {"a": 1, "b": 2}, timeout=30) == 3


def test_poison_message_is_capped_and_other_runs_complete(fresh: Cluster) -> None:
    """R3: a job that kills its process on every attempt ends failed after the cap."""
    fresh.start_worker("w", concurrency=2)
    poison = fresh.client.submit("tests.kill_self", {"kill_attempts": 99})
    normal = [fresh.client.submit("tests.effect", {"seconds": 0.05}) for _ in range(20)]
    record = fresh.client.wait(poison, timeout=90)
    assert record.state is RunState.FAILED
    assert record.error is not None and record.error["reason"] == "worker_lost"
    assert fresh.executions(poison) == 3
    assert [r.state for r in fresh.wait_all(normal, 60)] == [RunState.COMPLETED] * 20
    time.sleep(1)  # (scenario) time for a redelivered copy of the poison to show up, if any
    assert fresh.queue_length() == 0


def test_hard_time_limit_kills_the_job_and_the_worker_goes_on(fresh: Cluster) -> None:
    """R14: a job that swallows the soft limit is killed at the hard limit."""
    fresh.start_worker("w", concurrency=1)
    run_id = fresh.client.submit("tests.stubborn", {"seconds": 60})
    record = fresh.client.wait(run_id, timeout=30)
    assert record.state is RunState.FAILED
    assert record.error is not None and record.error["reason"] == "timeout"
    assert record.duration is None or record.duration < 30
    assert fresh.executions(run_id) == 1
    assert "Hard time limit" in fresh.log("w") or "hard time limit" in fresh.log("w")
    assert fresh.client.execute("examples.add", {"a": 2, "b": 2}, timeout=30) == 4


def test_duplicate_message_executes_once(fresh: Cluster) -> None:
    """R12: the same message delivered twice (once marked redelivered) runs once."""
    run_id = fresh.client.submit("tests.effect", {"seconds": 0.5})
    (key,) = list(fresh.redis.scan_iter(b"jobs*"))  # one list per priority step in use
    raw = fresh.redis.lrange(key, 0, -1)
    assert len(raw) == 1
    copy = json.loads(raw[0])
    copy["headers"]["redelivered"] = True
    copy["properties"]["delivery_tag"] = str(uuid.uuid4())
    fresh.redis.lpush(key, json.dumps(copy))
    fresh.start_worker("w", concurrency=2)
    record = fresh.client.wait(run_id, timeout=30)
    assert record.state is RunState.COMPLETED and record.attempts == 1
    time.sleep(1.5)  # (scenario) time for the copy to be taken and dropped, not run
    assert fresh.queue_length() == 0  # both copies were taken...
    assert fresh.executions(run_id) == 1  # ...and the body ran once
    # Which layer dropped the copy depends on timing: jobsys's claim guard while the first
    # runs, or Celery's check of successful tasks once it has finished.


def test_cancelled_pending_run_never_starts(fresh: Cluster) -> None:
    """R13a: cancel while no worker runs, then start one."""
    run_id = fresh.client.submit("tests.effect", {"seconds": 0})
    assert fresh.client.cancel(run_id).record.state is RunState.CANCELLED
    fresh.start_worker("w", concurrency=1)
    assert fresh.client.execute("examples.add", {"a": 3, "b": 3}, timeout=30) == 6
    time.sleep(1)  # (scenario) time in which the cancelled run must not start
    assert fresh.store.get(run_id).state is RunState.CANCELLED
    assert fresh.executions(run_id) == 0
    assert fresh.queue_length() == 0


class _Pwn:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.path),))


def test_pickle_message_is_refused_and_never_executed(fresh: Cluster, tmp_path: Path) -> None:
    """R21: a pickle body pushed straight into the queue is rejected without unpickling."""
    marker = tmp_path / "pwned"
    body = pickle.dumps(
        ((), {"run_id": "x", "dispatch": 1, "input": _Pwn(marker), "principal": {"id": "evil"}}, {})
    )
    message = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "binary",
        "content-type": "application/x-python-serialize",
        "headers": {
            "lang": "py",
            "task": "tests.effect",
            "id": str(uuid.uuid4()),
            "retries": 0,
            "argsrepr": "()",
            "kwargsrepr": "{}",
        },
        "properties": {
            "delivery_tag": str(uuid.uuid4()),
            "body_encoding": "base64",
            "delivery_info": {"exchange": "jobs", "routing_key": "jobs"},
            "priority": 0,
            "correlation_id": str(uuid.uuid4()),
            "reply_to": str(uuid.uuid4()),
        },
    }
    fresh.redis.lpush("jobs", json.dumps(message))
    fresh.start_worker("w", concurrency=1)
    assert fresh.client.execute("examples.add", {"a": 5, "b": 6}, timeout=30) == 11
    time.sleep(1)  # (scenario) time in which the pickle must not be executed
    assert not marker.exists()
    assert "ContentDisallowed" in fresh.log("w") or "untrusted content" in fresh.log("w")
    assert fresh.queue_length() == 0
    assert list(fresh.effects.iterdir()) == []


def test_runs_whose_messages_were_lost_are_published_again(
    tmp_path: Path, redis_url: str, database_url: str | None
) -> None:
    """R9: the broker loses its data (FLUSHDB) with runs waiting; the reconciler republishes
    them from the run table and each runs once."""
    from tests.cluster import cluster

    with cluster(tmp_path, redis_url, database_url, JOBSYS_RECONCILE_SECONDS="2") as c:
        ids = [c.client.submit("tests.effect", {"seconds": 0}) for _ in range(10)]
        c.redis.flushdb()
        assert c.queue_length() == 0
        c.start_worker("w", concurrency=2)
        records = c.wait_all(ids, timeout=60)
        assert [r.state for r in records] == [RunState.COMPLETED] * 10
        assert all(c.executions(i) == 1 for i in ids)


def test_a_message_taken_by_a_worker_that_died_before_claiming_is_published_again(
    tmp_path: Path, redis_url: str, database_url: str | None
) -> None:
    """A worker pops a message (BRPOP) and dies before its claim commits: with no emulated
    acknowledgements nothing of the message is left in Redis. The run is still waiting in the
    store, so the reconciler publishes it again and it runs once."""
    from tests.cluster import cluster

    with cluster(tmp_path, redis_url, database_url, JOBSYS_RECONCILE_SECONDS="2") as c:
        run_id = c.client.submit("tests.effect", {"seconds": 0})
        popped = [k for k in c.redis.scan_iter("jobs*") if c.redis.rpop(k)]
        assert len(popped) == 1 and c.queue_length() == 0
        c.start_worker("w", concurrency=1)
        (record,) = c.wait_all([run_id], timeout=60)
        assert record.state is RunState.COMPLETED and record.attempts == 1
        assert c.executions(run_id) == 1


def test_a_pool_that_cannot_enforce_time_limits_is_refused(fresh: Cluster) -> None:
    """R14: the threads pool ignores hard time limits, so the worker refuses to start."""
    import subprocess
    import sys

    from tests.cluster import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-P", "threads"],
        env=fresh.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cannot enforce job time limits" in result.stderr


def test_sigterm_lets_running_jobs_finish_then_the_worker_exits_0(fresh: Cluster) -> None:
    """R4a: a warm shutdown (SIGTERM) of an inline worker with runs in flight."""
    proc = fresh.start_worker("w", concurrency=2)
    ids = [fresh.client.submit("tests.effect", {"seconds": 3}) for _ in range(2)]
    eventually(lambda: all_started(fresh, ids), 30, 0.05, what="both runs to start")
    os.kill(proc.pid, signal.SIGTERM)  # the supervisor only, as an orchestrator would
    assert proc.wait(60) == 0
    records = [fresh.store.get(i) for i in ids]
    assert [r.state for r in records] == [RunState.COMPLETED] * 2
    assert all(fresh.executions(i) == 1 for i in ids)
    assert fresh.queue_length() == 0
    assert fresh.redis.zcard("unacked_index") == 0


def test_a_run_requeued_after_its_worker_died_goes_before_later_runs(fresh: Cluster) -> None:
    """A run whose worker was lost had its turn already: requeued by the reaper, it goes to
    the front of its queue, ahead of the runs submitted after it (not to the back)."""
    fresh.start_worker("a", concurrency=1)
    first = fresh.client.submit("tests.long_first", {"seconds": 30, "then": 0.2})
    eventually(lambda: all_started(fresh, [first]), 60, what="the first run to start")
    fresh.kill("a", signal.SIGKILL)
    later = [fresh.client.submit("examples.sleep", {"seconds": 1}) for _ in range(8)]
    fresh.start_worker("b", concurrency=1)
    records = {r.id: r for r in fresh.wait_all([first, *later], timeout=120)}
    assert all(r.state is RunState.COMPLETED for r in records.values())
    assert records[first].attempts == 2 and fresh.executions(first) == 2
    ended_before = [i for i in later if records[i].finished_at < records[first].finished_at]  # type: ignore[operator]
    # Requeued once its lease ran out (3 s) while the later runs (1 s each) were running: it
    # ends among the first few of them, not after all eight.
    assert len(ended_before) <= 5, [records[i].finished_at for i in later]
