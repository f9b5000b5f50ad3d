"""Runs that start later (a submit's ``countdown`` or ``start_at``), on real worker processes:
a run due later than the delay horizon is only recorded (pending, ``waiting`` saying until
when), nothing of it is on the broker, and a worker's reaper publishes it, once, when it is
due, at its priority. It survives restarts and a broker that lost its data, and a cancel
before it is due means it never runs.

Most tests set the horizon to 1 s (``JOBSYS_DELAY_HORIZON_SECONDS``), so that a start a few
seconds ahead takes the path a start days ahead takes."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobsys import Principal, RunState, SubmitOptions
from jobsys.engine import publishing
from jobsys.service.client import waiting_message
from jobsys.store import runs, stores
from tests import cli_runner
from tests.cluster import Cluster, cluster
from tests.integration.mcp_support import http_session
from tests.integration.test_store import run_row
from tests.servers import Serve
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration

HORIZON = 1.0
ADD = ("submit", "examples.add", "--input", '{"a": 1, "b": 2}')


@pytest.fixture
def short(tmp_path: Path, redis_url: str, database_url: str | None) -> Iterator[Cluster]:
    """A cluster whose delay horizon is 1 s (and whose reapers pass every second)."""
    with cluster(tmp_path, redis_url, database_url, JOBSYS_DELAY_HORIZON_SECONDS=str(HORIZON)) as c:
        yield c


def held(c: Cluster, run_id: str) -> runs.RunRecord:
    """The run, asserting that it waits in the store, delayed, with nothing published."""
    r = c.store.get(run_id)
    assert r.state is RunState.PENDING and r.published_at is None, r
    assert r.waiting is not None and r.waiting["reason"] == "delayed", r.waiting
    assert r.next_attempt_at is not None
    assert dt.datetime.fromisoformat(r.waiting["until"]) == r.next_attempt_at
    return r


def test_a_run_two_days_ahead_is_recorded_due_then_and_not_published(fresh: Cluster) -> None:
    c = fresh.client
    before = runs.utcnow()
    later = c.submit("examples.add", {"a": 1, "b": 2}, SubmitOptions(countdown=2 * 86400))
    after = runs.utcnow()
    two_days = dt.timedelta(days=2)
    r = held(fresh, later)
    assert before + two_days <= r.next_attempt_at <= after + two_days  # type: ignore[operator]
    assert "delayed until" in (waiting_message(r) or "")
    # An aware time in any zone, kept in UTC; the priority given is the run's.
    paris = dt.timezone(dt.timedelta(hours=2))
    at = (runs.utcnow() + dt.timedelta(days=3)).replace(microsecond=0)
    dated = c.submit(
        "examples.add", {"a": 1, "b": 2}, SubmitOptions(start_at=at.astimezone(paris), priority=8)
    )
    assert held(fresh, dated).next_attempt_at == at and fresh.store.get(dated).priority == 8
    assert fresh.queue_length() == 0 and len(c.outbox) == 0  # nothing for them on the broker
    again = c.submit(
        "examples.add", {"a": 1, "b": 1}, SubmitOptions(idempotency_key="k", countdown=3600)
    )
    assert c.submit("examples.add", {"a": 1, "b": 1}, SubmitOptions(idempotency_key="k")) == again
    # A reaper passing now leaves them all alone; one passing three days on claims them.
    assert fresh.store.claim_due(runs.utcnow(), 60) == []
    claimed = fresh.store.claim_due(runs.utcnow() + dt.timedelta(days=3), 60)
    assert [r.id for r in claimed] == [again, later, dated]  # the earliest due first


def test_a_delayed_run_survives_restarts_and_a_flushed_broker_and_runs_once_when_due(
    short: Cluster,
) -> None:
    c = short
    c.start_worker("w1", concurrency=1)
    run_id = c.client.submit("tests.effect", {"seconds": 0}, SubmitOptions(countdown=8))
    due = held(c, run_id).next_attempt_at
    assert due is not None
    # Every process of the cluster stops (the producer is this test) and the broker loses
    # everything (its broker and result databases: the Redis may be shared with other tests).
    c.stop("w1")
    c.redis.flushdb()
    c.results.flushdb()
    held(c, run_id)
    assert c.queue_length() == 0
    c.start_worker("w2", concurrency=1)
    (record,) = c.wait_all([run_id], timeout=60)
    assert record.state is RunState.COMPLETED and record.attempts == 1
    assert c.executions(run_id) == 1
    assert record.started_at is not None and record.started_at >= due  # not before
    # queued by the reaper within the horizon of its start, not earlier
    assert record.published_at is not None
    assert record.published_at >= due - dt.timedelta(seconds=HORIZON)


def test_a_delayed_run_cancelled_before_it_is_due_never_runs(short: Cluster) -> None:
    c = short
    c.start_worker("w", concurrency=1)
    run_id = c.client.submit("tests.effect", {"seconds": 0}, SubmitOptions(countdown=3))
    due = held(c, run_id).next_attempt_at
    assert due is not None
    assert c.client.cancel(run_id).record.state is RunState.CANCELLED
    # A blocked run with a start days ahead, released when what it waits for ends: it is
    # pending then, still held in the store until its start.
    first = c.client.submit("examples.add", {"a": 1, "b": 2})
    after = c.client.submit(
        "examples.add",
        {"a": 2, "b": 2},
        SubmitOptions(depends_on=(first,), countdown=2 * 86400),
    )
    c.wait_all([first], timeout=60)
    eventually(
        lambda: c.store.get(after).state is RunState.PENDING or NotYet(c.store.get(after).state),
        30,
        what="the dependent run to be released",
    )
    held(c, after)
    # Time passes past the cancelled run's start, over three reaper passes: nothing happens.
    time.sleep(max(0.0, (due - runs.utcnow()).total_seconds()) + 3)
    r = c.store.get(run_id)
    assert r.state is RunState.CANCELLED and r.published_at is None and r.attempts == 0
    assert c.executions(run_id) == 0 and c.queue_length() == 0


def test_two_workers_reapers_publish_each_due_run_once_at_its_priority(short: Cluster) -> None:
    """Two workers whose reapers pass every second, reading another queue: the due runs'
    messages are counted where they wait (the list of their priority), then a worker that
    reads the queue runs each once."""
    c = short
    c.start_worker("a", concurrency=1, queues="elsewhere")
    c.start_worker("b", concurrency=1, queues="elsewhere")
    start = runs.utcnow() + dt.timedelta(seconds=4)
    options = SubmitOptions(start_at=start, priority=2)
    ids = [c.client.submit("tests.effect", {"seconds": 0}, options) for _ in range(30)]
    for run_id in ids:
        held(c, run_id)
    assert c.queue_length() == 0

    def all_queued() -> bool | NotYet:
        n = c.queue_length()
        return n >= len(ids) or NotYet(f"{n} queued")

    eventually(all_queued, 30, what="the runs to be queued when due")
    time.sleep(3)  # three more passes of each reaper: nothing more is sent
    step = publishing.broker_priority(2)  # kombu's list of priority 2
    assert c.queue_length() == len(ids) == c.redis.llen(f"jobs\x06\x16{step}")
    records = [c.store.get(i) for i in ids]
    assert all(
        r.published_at and r.published_at >= start - dt.timedelta(seconds=HORIZON) for r in records
    )
    c.start_worker("w", concurrency=2)
    done = c.wait_all(ids, timeout=90)
    assert all(r.state is RunState.COMPLETED and r.attempts == 1 for r in done)
    assert all(r.started_at is not None and r.started_at >= start for r in done)
    assert [c.executions(i) for i in ids] == [1] * len(ids)
    assert "ignored stale or duplicate message" not in c.log("w")


def test_reapers_racing_claim_each_due_run_once(store: runs.RunStore) -> None:
    """Four reapers (stores of their own, as four workers have) claim due runs at once."""
    now = runs.utcnow()
    ids = [
        store.create(
            {
                **run_row(),
                "max_attempts": 1,
                "tenant": "t",
                "published_at": None,
                "next_attempt_at": now,
            }
        )
        for _ in range(200)
    ]
    url = store.engine.url.render_as_string(hide_password=False)
    reapers = [stores.Store.open(url) for _ in range(4)]
    claimed: list[list[str]] = [[] for _ in reapers]
    gate = threading.Barrier(len(reapers))

    def reap(i: int) -> None:
        gate.wait()
        while batch := reapers[i].claim_due(runs.utcnow(), 0, limit=7):
            claimed[i] += [r.id for r in batch]

    threads = [threading.Thread(target=reap, args=(i,)) for i in range(len(reapers))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for r in reapers:
            r.close()
    every = [run_id for mine in claimed for run_id in mine]
    assert sorted(every) == sorted(r.id for r in ids if r is not None)  # each once
    assert sum(1 for mine in claimed if mine) >= 2, [len(m) for m in claimed]


def test_runs_of_jobs_a_reaper_does_not_run_cannot_crowd_out_its_own(
    store: runs.RunStore,
) -> None:
    """More due (or stale) runs of another catalog's job than a pass takes: a reaper that
    leaves that job out (``skip_jobs``, as it does once it met one of its runs) still gets
    to its own due runs behind them."""
    now = runs.utcnow()
    past = now - dt.timedelta(minutes=10)

    def make(job: str, **values: Any) -> str:
        row = {**run_row(), "job": job, "max_attempts": 1, "tenant": "t", **values}
        record = store.create(row)
        assert record is not None
        return record.id

    for _ in range(6):
        make("other.catalog_job", published_at=None, next_attempt_at=now - dt.timedelta(hours=1))
    mine = {make("examples.add", published_at=None, next_attempt_at=now) for _ in range(2)}
    assert {r.job for r in store.claim_due(now, 0, limit=4)} == {"other.catalog_job"}
    due = store.claim_due(now, 0, limit=4, skip_jobs=["other.catalog_job"])
    assert {r.id for r in due} == mine

    for _ in range(6):
        make("other.catalog_job", published_at=past, created_at=past)
    lost = make("examples.add", published_at=past, created_at=past)
    stale = store.claim_stale(now, 60, limit=4, skip_jobs=["other.catalog_job"])
    assert [r.id for r in stale] == [lost]


def test_a_burst_of_due_runs_is_queued_by_one_reaper_pass(fresh: Cluster) -> None:
    """More runs due at once than one statement takes (``DUE_BATCH``): one pass of a reaper
    (in this process, on the cluster's Redis and store) queues them all, the higher
    priorities of those due at the same time first."""
    from jobsys.engine import broker, reaper
    from jobsys.engine.runtime import Runtime

    now = runs.utcnow()
    due = now - dt.timedelta(seconds=5)
    rows = [
        {**run_row(), "job": "examples.add", "max_attempts": 1, "tenant": "default",
         "published_at": None, "next_attempt_at": due, "priority": i % 10}
        for i in range(reaper.DUE_BATCH * 2 + 50)
    ]  # fmt: skip
    assert fresh.store.insert(rows)
    runtime = Runtime(fresh.settings, fresh.registry)
    app = broker.make_celery(fresh.settings, fresh.registry)
    try:
        published = reaper.Reaper(app, runtime).publish_due(now)
    finally:
        runtime.store.close()
    assert len(published) == len(rows)
    first = [r.priority for r in published[: reaper.DUE_BATCH]]
    assert min(first) >= 4, first  # the first batch took the highest priorities
    left = fresh.store.claim_due(now, 0)
    assert left == []


def test_every_interface_takes_a_countdown_and_a_start_time(fresh: Cluster) -> None:
    """The CLI's --countdown / --at (with --metadata, --tag, --idempotency-key), the HTTP
    API's and the MCP tools' countdown / start_at; bad values are refused naming the field."""

    def cli(*argv: str, process: bool = False) -> subprocess.CompletedProcess[str]:
        """In-process (the same click commands, without a process's second of start-up);
        the first as a real ``python -m jobsys``."""
        return cli_runner.run({**fresh.env, "COLUMNS": "250"}, argv, process)

    follow_up = cli(
        *ADD, "--countdown", "3d",
        "--metadata", "customer=acme", "--metadata", '{"step": 2}', "--tag", "follow-up",
        "--idempotency-key", "acme-follow-up", process=True,
    )  # fmt: skip
    assert follow_up.returncode == 0, follow_up.stderr
    run_id = follow_up.stdout.strip()
    r = held(fresh, run_id)
    assert r.meta == {"customer": "acme", "step": 2} and "follow-up" in r.tags
    assert r.idempotency_key == "acme-follow-up"
    shown = cli("runs", "show", run_id)
    assert "delayed until" in shown.stdout, shown.stdout
    listed = cli("runs", "list", "--limit", "1")
    assert f"pending until {r.next_attempt_at:%Y-%m-%d %H:%M:%S}" in listed.stdout, listed.stdout
    too_late = (runs.utcnow() + dt.timedelta(days=400)).isoformat()
    dated = cli(*ADD, "--at", too_late)
    assert dated.returncode == 2 and "--at: " in dated.stderr and "366 days" in dated.stderr
    soon = (runs.utcnow() + dt.timedelta(hours=5)).replace(microsecond=0)
    at = cli(*ADD, "--at", soon.isoformat())
    assert at.returncode == 0, at.stderr
    assert held(fresh, at.stdout.strip()).next_attempt_at == soon
    for argv, says in (
        (("--countdown", "1h", "--at", soon.isoformat()), "give one of them"),
        (("--at", "2030-01-01T09:00"), "--at: 2030-01-01T09:00:00 has no UTC offset"),
        (("--at", "2020-01-01T09:00:00Z"), "--at: 2020-01-01T09:00:00+00:00 is"),
        (("--metadata", "oops"), "--metadata: 'oops' is neither KEY=VALUE nor a JSON object"),
    ):
        bad = cli(*ADD, *argv)
        assert bad.returncode == 2 and says in bad.stderr, (argv, bad.stderr)

    with Serve(fresh) as server:
        token = fresh.client.admin.create_token(
            Principal(id="ops", roles=("admin",), tenant="default")
        )[1]
        http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        with http:
            url = "/api/v1/jobs/examples.add/runs"
            later = http.post(url, json={"input": {"a": 1, "b": 2}, "start_at": soon.isoformat()})
            assert later.status_code == 202 and later.json()["state"] == "pending", later.text
            assert held(fresh, later.json()["run_id"]).next_attempt_at == soon
            shown_run = http.get(f"/api/v1/runs/{later.json()['run_id']}").json()
            assert shown_run["waiting"]["reason"] == "delayed", shown_run
            cancelled = http.post(f"/api/v1/runs/{later.json()['run_id']}/cancel")
            assert cancelled.json()["state"] == "cancelled", cancelled.text
            mcp = asyncio.run(_through_mcp(server.url, token, soon))
            assert held(fresh, mcp["run_id"]).next_attempt_at == soon
            assert mcp["status"]["not_before"] == soon.isoformat(), mcp["status"]
            assert mcp["bad_time"] and "start_at" in mcp["bad_time"], mcp
            assert mcp["on_schedule"] and "countdown" in mcp["on_schedule"], mcp
            for body, field in (
                ({"countdown": -5}, "countdown"),
                ({"countdown": 60, "start_at": soon.isoformat()}, "start_at"),
                ({"start_at": "2030-01-01T09:00:00"}, "start_at"),
                ({"start_at": "next week"}, "start_at"),
            ):
                bad = http.post(url, json={"input": {"a": 1, "b": 2}, **body})
                assert bad.status_code == 422 and field in bad.text, (body, bad.text)


async def _through_mcp(url: str, token: str, at: dt.datetime) -> dict[str, Any]:
    """A run made by ``job_create`` with ``start_at``, its status, and two refusals."""
    async with http_session(f"{url}/mcp", token) as s:
        one = {"job": "examples.add", "input": {"a": 1, "b": 2}}
        made = await s.call_tool("job_create", {**one, "start_at": at.isoformat()})
        assert not made.is_error, made.content
        run_id = made.structured_content["run_id"]  # type: ignore[index]
        status = await s.call_tool("get_job_status", {"run_id": run_id})
        naive = await s.call_tool("execute_job", {**one, "start_at": "2030-01-01T09:00"})
        every = {"every": 3600}
        scheduled = await s.call_tool("job_create", {**one, "countdown": 60, "schedule": every})

    def refusal(result: Any) -> str | None:
        return str(result.content[0].text) if result.is_error else None

    return {
        "run_id": run_id,
        "status": status.structured_content,
        "bad_time": refusal(naive),
        "on_schedule": refusal(scheduled),
    }
