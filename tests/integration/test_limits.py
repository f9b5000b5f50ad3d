"""Concurrency limits, rate limits and ``BackOff`` on real worker processes (the jobs of
``tests/limit_jobs.py``). What ran at once, and when each run started, is read from the job
bodies' own records (``$JOBSYS_TEST_EFFECTS``). The big figures (3 nodes x 4 processes, 60
and 400 runs) are in tests/benchmarks/limits.py; these are the small, fast versions."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobsys import Principal, RunState
from jobsys.service.client import waiting_message
from tests import cli_runner
from tests.cluster import CATALOG, Cluster, cluster
from tests.integration.mcp_support import http_session
from tests.servers import Serve
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration

LIMITED = f"{CATALOG},tests.limit_jobs"


@pytest.fixture(scope="module")
def two(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[Cluster]:
    """Two worker nodes of 2 processes each, shared by the module."""
    tmp = tmp_path_factory.mktemp("limits")
    with cluster(tmp, redis_url, database_url, JOBSYS_CATALOG=LIMITED) as c:
        c.start_worker("w1", concurrency=2)
        c.start_worker("w2", concurrency=2)
        yield c


def spans(c: Cluster, run_ids: list[str]) -> list[tuple[str, float, float]]:
    """(run id, start, end) of every execution of the runs' bodies."""
    out = []
    for run_id in run_ids:
        started = None
        for line in (c.effects / run_id).read_text().splitlines():
            _, _, at, note = line.split(" ", 3)
            if note.strip() == "start":
                started = float(at)
            elif note.strip() == "end" and started is not None:
                out.append((run_id, started, float(at)))
                started = None
    return out


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def test_max_concurrency_holds_across_processes_and_nodes(two: Cluster) -> None:
    ids = [two.client.submit("tests.limited", {"seconds": 0.4}) for _ in range(8)]

    def a_run_waits() -> str | NotYet:
        for run_id in ids:
            r = two.store.get(run_id)
            if r.waiting and r.waiting.get("reason") == "concurrency_limit":
                return waiting_message(r) or ""
        return NotYet([two.store.get(i).state.value for i in ids])

    message = eventually(a_run_waits, 20, interval=0.05, what="a run waiting for a slot")
    assert "max_concurrency is 2" in message
    records = two.wait_all(ids, 60)
    assert {r.state for r in records} == {RunState.COMPLETED}
    assert all(r.attempts == 1 for r in records)  # waiting used no attempt
    ran = spans(two, ids)
    assert len(ran) == 8  # each body ran once
    assert most_at_once([(s, e) for _, s, e in ran]) == 2  # never 3, though 4 processes


def test_per_key_one_run_per_customer(two: Cluster) -> None:
    customers = ["acme", "globex", "initech"]
    ids = {
        two.client.submit("tests.per_customer", {"seconds": 0.3, "customer": who}): who
        for who in customers * 3
    }
    records = two.wait_all(list(ids), 60)
    assert {r.state for r in records} == {RunState.COMPLETED}
    assert {r.limit_key for r in records} == set(customers)
    ran = spans(two, list(ids))
    for who in customers:
        assert most_at_once([(s, e) for i, s, e in ran if ids[i] == who]) == 1
    assert most_at_once([(s, e) for _, s, e in ran]) >= 2  # other keys were not blocked


def test_rate_5_per_second_spreads_the_starts(two: Cluster) -> None:
    ids = [two.client.submit("tests.rated", {}) for _ in range(12)]
    records = two.wait_all(ids, 60)
    assert {r.state for r in records} == {RunState.COMPLETED}
    assert all(r.attempts == 1 for r in records)  # waiting on the rate used no attempt
    starts = sorted(s for _, s, _ in spans(two, ids))
    assert len(starts) == 12
    # The window is counted when a run is let through, a few ms before its body starts:
    # 0.9 s windows of body starts stay within the rate.
    assert max(sum(1 for t in starts if a <= t < a + 0.9) for a in starts) <= 5
    assert starts[-1] - starts[0] >= 1.5  # 12 runs at 5/s: three windows


def test_backoff_waits_without_using_an_attempt(two: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "told"
    run_id = two.client.submit("tests.backs_off", {"seconds": 1.5, "marker": str(marker)})

    def backing_off() -> dict[str, object] | NotYet:
        r = two.store.get(run_id)
        if r.state is RunState.PENDING and r.waiting and r.waiting["reason"] == "backoff":
            return r.waiting
        return NotYet((r.state.value, r.waiting))

    waiting = eventually(backing_off, 20, interval=0.05, what="the run to back off")
    assert "the API said 429" in str(waiting["message"])
    assert two.store.get(run_id).attempts == 0  # given back
    record = two.wait_state(run_id, RunState.COMPLETED, 30)
    assert record.attempts == 1 and record.max_attempts == 1  # its only attempt
    lines = (two.effects / run_id).read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["1", "1"]  # attempt 1 both times
    first, second = (float(line.split()[2]) for line in lines)
    assert second - first >= 1.5


def test_a_killed_workers_slot_frees_within_its_lease(
    tmp_path: Path, redis_url: str, database_url: str | None
) -> None:
    with cluster(tmp_path, redis_url, database_url, JOBSYS_CATALOG=LIMITED) as c:
        c.start_worker("doomed", concurrency=1)
        c.start_worker("other", concurrency=1)
        held = c.client.submit("tests.solo", {"first_seconds": 60})
        eventually(lambda: c.executions(held) > 0, 30, what="the first run to start")
        holder = c.store.get(held).worker or ""
        queued = c.client.submit("tests.solo", {"seconds": 0.1})

        def waits() -> bool | NotYet:
            r = c.store.get(queued)
            return r.gate == "concurrency" or NotYet((r.state.value, r.waiting))

        eventually(waits, 20, interval=0.05, what="the second run to wait for the slot")
        victim = "doomed" if holder.startswith("doomed") else "other"
        c.kill(victim)
        killed_at = time.time()
        if victim == "other":
            c.start_worker("other2", concurrency=1)
        records = c.wait_all([held, queued], 60)
        assert {r.state for r in records} == {RunState.COMPLETED}
        next_start = min(s for _, s, _ in spans(c, [held, queued]))
        lease = float(c.env["JOBSYS_LEASE_SECONDS"])
        reaper = float(c.env["JOBSYS_REAPER_SECONDS"])
        # Free within the lease (and the reaper's pass that sees it expired, and a start).
        assert next_start - killed_at <= lease + reaper + 2.0
        assert most_at_once([(s, e) for _, s, e in spans(c, [held, queued])]) == 1


def test_every_interface_shows_the_limits_and_why_a_run_waits(two: Cluster) -> None:
    """``jobs show``, the HTTP job route, MCP's ``describe_job`` show a job's limits;
    ``runs show``/``runs list``, the HTTP run, MCP's ``get_job_status`` and the
    ``jobsys_runs_waiting_on_limit`` gauge show a run waiting for a slot."""
    gate = two.tmp / "open-solo"
    both = [two.client.submit("tests.gated_solo", {"path": str(gate)}) for _ in range(2)]
    try:

        def one_runs_one_waits() -> tuple[str, str] | NotYet:
            found = {r.id: r for r in map(two.store.get, both)}
            running = [i for i, r in found.items() if r.state is RunState.RUNNING]
            gated = [i for i, r in found.items() if r.gate == "concurrency"]
            return (running[0], gated[0]) if running and gated else NotYet(found)

        holder, queued = eventually(
            one_runs_one_waits, 30, interval=0.05, what="one run to hold the slot, one to wait"
        )
        # Other jobs' runs are not held up by a run waiting for a slot (nor by its worker).
        sums = [two.client.execute("examples.add", {"a": i, "b": 1}) for i in range(4)]
        assert sums == [1, 2, 3, 4]

        def cli(*argv: str, process: bool = False) -> Any:
            """In-process (the same click commands, without a process's second of
            start-up); the first as a real ``python -m jobsys``."""
            done = cli_runner.run({**two.env, "COLUMNS": "250"}, argv, process)
            assert done.returncode == 0, done.stderr
            return done.stdout

        declared = {"max_concurrency": 1}
        shown_job = json.loads(cli("jobs", "show", "tests.gated_solo", "--json", process=True))
        assert shown_job["limits"] == declared
        shown = json.loads(cli("runs", "show", queued, "--json"))
        assert shown["state"] == "pending" and shown["waiting"]["reason"] == "concurrency_limit"
        assert "pending (concurrency_limit)" in cli("runs", "list", "--job", "tests.gated_solo")

        with Serve(two) as server:
            token = two.client.admin.create_token(
                Principal(id="ops", roles=("admin",), tenant="default")
            )[1]
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
                job = http.get("/api/v1/jobs/tests.gated_solo").json()
                assert job["limits"] == declared
                run = http.get(f"/api/v1/runs/{queued}").json()
                assert run["waiting"]["reason"] == "concurrency_limit", run
                metrics = text_string_to_metric_families(http.get("/metrics").text)
                gauge = {
                    s.labels["reason"]: s.value
                    for f in metrics
                    if f.name == "jobsys_runs_waiting_on_limit"
                    for s in f.samples
                }
                assert gauge["concurrency_limit"] >= 1, gauge
                bad = {"kind": "alias", "name": "team.bad", "target": "examples.add"}
                for body, field in (
                    ({**bad, "rate": "lots"}, "rate"),
                    ({**bad, "max_concurrency": 0}, "max_concurrency"),
                    ({**bad, "concurrency_key": "nope"}, "concurrency_key"),
                ):
                    refused = http.post("/api/v1/definitions", json=body)
                    assert refused.status_code == 422 and field in refused.text, refused.text
            mcp = asyncio.run(_through_mcp(server.url, token, queued))
        assert mcp["job"]["limits"] == declared
        assert mcp["status"]["waiting_reason"] == "concurrency_limit", mcp["status"]
        third = two.client.submit("tests.gated_solo", {"path": str(gate)})
        eventually(lambda: two.store.get(third).gate == "concurrency", 20, interval=0.05)
        two.client.cancel(third)  # cancelled while it waits: no longer waiting for a slot
        assert (two.store.get(third).state, two.store.get(third).gate) == (
            RunState.CANCELLED,
            None,
        )
    finally:
        gate.write_text("open")
    assert {r.state for r in two.wait_all([holder, queued], 60)} == {RunState.COMPLETED}


async def _through_mcp(url: str, token: str, run_id: str) -> dict[str, Any]:
    async with http_session(f"{url}/mcp", token) as s:
        job = await s.call_tool("describe_job", {"job": "tests.gated_solo"})
        status = await s.call_tool("get_job_status", {"run_id": run_id})
        bad = {"kind": "alias", "name": "team.bad", "target": "examples.add", "rate": "lots"}
        refused = await s.call_tool("register_job", bad)
    assert refused.is_error and "rate" in str(refused.content[0].text), refused.content  # type: ignore[union-attr]
    return {"job": job.structured_content, "status": status.structured_content}


def test_a_pause_holds_a_limited_jobs_runs_too(two: Cluster) -> None:
    """A job with a concurrency limit is claimed by a statement of its own (``limits.claim``):
    a pause of the job holds its runs all the same, and resuming releases every one."""
    c = two
    c.client.pauses.pause_job("tests.limited")
    try:
        ids = [c.client.submit("tests.limited", {"seconds": 0.05}) for _ in range(4)]

        def all_parked() -> bool | NotYet:
            waiting = [(c.store.get(r).waiting or {}).get("reason") for r in ids]
            return waiting == ["paused"] * 4 or NotYet(waiting)

        eventually(all_parked, 30, what="the paused limited job's runs to be parked")
        assert [(c.effects / r).exists() for r in ids] == [False] * 4  # none started
    finally:
        resumed = c.client.pauses.resume_job("tests.limited")
    assert resumed.published == 4
    assert {r.state for r in c.wait_all(ids, timeout=60)} == {RunState.COMPLETED}
    assert sorted(r for r, _, _ in spans(c, ids)) == sorted(ids)  # each ran once


def test_a_job_registered_at_runtime_with_a_limit(two: Cluster) -> None:
    """An alias with a limit of its own: its tenant's runs share its slots."""
    two.client.definitions.register(
        {
            "kind": "alias",
            "name": "team.one_at_a_time",
            "target": "tests.effect",
            "max_concurrency": 1,
        }
    )
    try:
        ids = [two.client.submit("team.one_at_a_time", {"seconds": 0.3}) for _ in range(4)]
        records = two.wait_all(ids, 60)
        assert {r.state for r in records} == {RunState.COMPLETED}
        starts = sorted(
            float(line.split()[2])
            for i in ids
            for line in (two.effects / i).read_text().splitlines()
        )
        assert len(starts) == 4
        # One at a time: each starts after the one before it ended (0.3 s later at least).
        assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.3
    finally:
        two.client.definitions.remove("team.one_at_a_time")
