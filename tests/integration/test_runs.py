"""Runs through a real Redis and a real ``jobsys worker`` (prefork), asserted on the run table."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from jobsys import RunState, SubmitOptions
from jobsys.base import errors
from jobsys.declare import permissions
from jobsys.mcp import args, handlers
from jobsys.service.client import Client
from tests.cluster import Cluster
from tests.servers import Serve
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration


def test_add_completes_with_one_attempt_timings_and_worker(shared: Cluster) -> None:
    c = shared.client
    run_id = c.submit("examples.add", {"a": 2, "b": 3})
    record = c.wait(run_id, timeout=30)
    assert record.state is RunState.COMPLETED
    assert record.output == 5
    assert c.result(run_id) == 5
    assert record.attempts == 1
    assert record.worker is not None and record.worker.split("@")[0] in ("w1-1", "w1-2")
    assert record.worker_pid and record.worker_pid > 0
    assert record.created_at <= record.started_at <= record.finished_at  # type: ignore[operator]
    assert record.duration is not None and 0 <= record.duration < 5
    assert record.principal["id"] == "local"
    assert set(record.tags) == {"example", "math"}


def test_flaky_job_completes_on_third_attempt_spaced_by_backoff(shared: Cluster) -> None:
    run_id = shared.client.submit("examples.flaky", {"failures": 2})
    record = shared.client.wait(run_id, timeout=60)
    assert record.state is RunState.COMPLETED, record.error
    assert record.attempts == 3
    assert record.output == {"attempts": 3}
    lines = shared.store.logs(run_id)
    assert [line.message for line in lines] == ["attempt 1", "attempt 2", "attempt 3"]
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(lines)]
    # backoff 1 s then 2 s, less at most 10 % jitter
    assert gaps[0] >= 0.9 and gaps[1] >= 1.8, gaps
    assert gaps[1] > gaps[0]


def test_timeout_fails_the_run_and_the_worker_goes_on(shared: Cluster) -> None:
    c = shared.client
    slow = c.submit("tests.slow_timeout", {"seconds": 10})
    record = c.wait(slow, timeout=30)
    assert record.state is RunState.FAILED
    assert record.error is not None
    assert record.error["reason"] == "timeout"
    assert record.error["type"] == "JobTimeout"
    assert record.attempts == 1  # timeouts are not retried by default
    assert shared.executions(slow) == 1
    assert c.execute("examples.add", {"a": 1, "b": 1}, timeout=30) == 2


def test_invalid_input_is_refused_and_nothing_is_recorded(shared: Cluster) -> None:
    before = shared.store.count()
    with pytest.raises(errors.InvalidInput) as info:
        shared.client.submit("examples.add", {"a": "two"})
    message = str(info.value)
    assert "a: Input should be a valid integer" in message
    assert "b: Field required" in message
    assert {tuple(e["loc"]) for e in info.value.errors} == {("a",), ("b",)}
    assert shared.store.count() == before


def test_unknown_job_names_close_matches(shared: Cluster) -> None:
    with pytest.raises(errors.UnknownJob) as info:
        shared.client.submit("examples.addd", {})
    assert "examples.add" in info.value.close


def test_idempotency_key_returns_the_existing_run(shared: Cluster) -> None:
    c = shared.client
    options = SubmitOptions(idempotency_key="order-42")
    first = c.submit("examples.add", {"a": 1, "b": 2}, options)
    second = c.submit("examples.add", {"a": 1, "b": 2}, options)
    assert first == second
    assert c.wait(first, timeout=30).output == 3
    assert len([r for r in c.list(job="examples.add", limit=1000) if r.id == first]) == 1


def test_invalid_output_fails_without_retry(shared: Cluster) -> None:
    run_id = shared.client.submit("tests.bad_output", {})
    record = shared.client.wait(run_id, timeout=30)
    assert record.state is RunState.FAILED
    assert record.error is not None and record.error["reason"] == "output_validation"
    assert "value" in record.error["message"]
    assert record.attempts == 1
    with pytest.raises(errors.RunFailed):
        shared.client.result(run_id)


def test_failing_job_fails_and_can_be_retried_as_a_new_run(shared: Cluster) -> None:
    c = shared.client
    run_id = c.submit("examples.fail", {"message": "boom"})
    record = c.wait(run_id, timeout=30)
    assert record.state is RunState.FAILED
    assert record.error is not None
    assert record.error["type"] == "Fatal" and record.error["message"] == "boom"
    assert "Traceback" in record.error["traceback"]
    assert run_id in {r.id for r in c.list(search="boom fatal")}
    # a job's description is searched through the registry: examples.fail "Always raise"
    assert run_id in {r.id for r in c.list(search="always raise", job="examples.fail")}
    again = c.retry(run_id)
    assert again != run_id
    assert c.status(again).parent_id == run_id
    assert c.wait(again, timeout=30).state is RunState.FAILED
    with pytest.raises(errors.InvalidTransition):
        c.retry(c.submit("examples.add", {"a": 0, "b": 0}))


def test_logs_and_progress_are_visible_while_running(shared: Cluster) -> None:
    c = shared.client
    run_id = c.submit("tests.chatty", {"seconds": 3})

    def running_with_progress_and_logs() -> bool | NotYet:
        record = c.status(run_id)
        progress = record.progress
        if record.state is RunState.RUNNING and progress and 0 < progress["pct"] < 100:
            return bool(c.logs(run_id)) or NotYet("running, with progress but no logs")
        return NotYet(f"{record.state.value}, progress {record.progress}")

    eventually(
        running_with_progress_and_logs, 20, what="progress and logs while the run is running"
    )
    record = c.wait(run_id, timeout=30)
    assert record.state is RunState.COMPLETED
    assert record.progress is not None and record.progress["pct"] == 100
    assert [line.message for line in c.logs(run_id)][-1] == "step 10 of 10"


def test_cancel_running_run_stops_it(shared: Cluster) -> None:
    c = shared.client
    run_id = c.submit("examples.sleep", {"seconds": 30})
    shared.wait_state(run_id, RunState.RUNNING, timeout=20)
    asked = time.monotonic()
    c.cancel(run_id)
    record = c.wait(run_id, timeout=20)
    assert record.state is RunState.CANCELLED
    assert time.monotonic() - asked < 10
    assert record.error is not None and record.error["reason"] == "cancelled"
    with pytest.raises(errors.InvalidTransition):
        c.cancel(run_id)


def test_cancel_stops_a_job_that_ignores_cancellation(shared: Cluster) -> None:
    c = shared.client
    run_id = c.submit("tests.chatty", {"seconds": 20})
    shared.wait_state(run_id, RunState.RUNNING, timeout=20)
    c.cancel(run_id)
    record = c.wait(run_id, timeout=20)
    assert record.state is RunState.CANCELLED
    assert record.duration is not None and record.duration < 15
    assert c.execute("examples.add", {"a": 4, "b": 4}, timeout=30) == 8


def test_list_filters(shared: Cluster) -> None:
    c = shared.client
    tagged = c.submit("examples.add", {"a": 5, "b": 5}, SubmitOptions(tags=("filter-me",)))
    c.wait(tagged, timeout=30)
    assert [r.id for r in c.list(tag="filter-me")] == [tagged]
    newer = c.submit("examples.add", {"a": 6, "b": 6})  # untagged, newer than the tagged one
    assert [r.id for r in c.list(tag="filter-me", limit=1)] == [tagged]
    assert newer not in [r.id for r in c.list(tag="filter-me")]
    assert all(r.job == "examples.add" for r in c.list(job="examples.add"))
    assert all(r.state is RunState.COMPLETED for r in c.list(state="completed"))
    assert c.list(since=c.status(tagged).created_at, job="examples.add")[-1].id == tagged
    with pytest.raises(errors.InvalidInput):
        c.list(state="exploded")


def test_cancel_with_no_broker_cancels_the_record_and_says_what_is_left(
    fresh: Cluster, tmp_path: Path
) -> None:
    """No worker runs here, so the runs wait; then the broker is not reachable while they are
    cancelled: each surface answers with the cancelled record and a warning, never a failure."""
    c = fresh.client
    first = c.submit("examples.add", {"a": 1, "b": 2})
    blocked = c.submit("examples.add", {"a": 3, "b": 4}, SubmitOptions(depends_on=(first,)))
    env = {
        k: v for k, v in fresh.env.items() if k not in ("JOBSYS_BROKER_URL", "JOBSYS_RESULT_URL")
    }
    env["JOBSYS_HOME"] = str(tmp_path / "nothing-runs-here")  # `jobsys up` is not running
    cli = subprocess.run(
        [sys.executable, "-m", "jobsys", "runs", "cancel", first],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip() == f"{first} cancelled"
    assert cli.stderr.startswith("warning: ") and f"run {first} is cancelled" in cli.stderr
    assert "no broker" in cli.stderr
    assert c.status(first).state is RunState.CANCELLED
    after = c.status(blocked)  # released in the store all the same: its dependency was cancelled
    assert after.state is RunState.FAILED and after.error and after.error["reason"] == "dependency"

    over_http = c.submit("examples.add", {"a": 5, "b": 6})
    over_mcp = c.submit("examples.add", {"a": 7, "b": 8})
    _, token = c.admin.create_token(permissions.LOCAL)
    dead = {
        "JOBSYS_BROKER_URL": "redis://127.0.0.1:1/0",
        "JOBSYS_RESULT_URL": "redis://127.0.0.1:1/1",
    }
    with Serve(fresh, **dead) as down:
        resp = httpx.post(
            f"{down.url}/api/v1/runs/{over_http}/cancel",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "cancelled" and "is cancelled" in resp.json()["warning"]
    down_settings = dataclasses.replace(
        fresh.settings, broker_url="redis://127.0.0.1:1/0", result_url=None
    )
    answer = handlers.job_cancel(Client(down_settings, fresh.registry), args.IdArgs(id=over_mcp))
    assert answer["state"] == "cancelled" and "is cancelled" in answer["warning"]
    assert c.status(over_http).state is c.status(over_mcp).state is RunState.CANCELLED
