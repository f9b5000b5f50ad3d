"""Runs driven from outside: an actor (an agent, a person, a service) takes a run of an external
job, reports on it with the run token, and completes or fails it, through HTTP and MCP; a
silent actor loses the run to the reaper (another attempt, which sees the notes, or a timeout).
A real cluster (one worker, whose reaper watches the leases), a real ``jobsys serve``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobsys import Principal
from tests import cli_runner
from tests.cluster import CATALOG, Cluster, cluster
from tests.integration.mcp_support import http_session
from tests.servers import Serve
from tests.waiting import NotYet, eventually

pytestmark = [pytest.mark.integration, pytest.mark.interface]

ADMIN = Principal(id="ada", roles=("admin",), tenant="default")
AGENT = Principal(id="agent-7", roles=("reviewer",), tenant="default")
OTHER = Principal(id="otto", roles=("admin",), tenant="elsewhere")


class Server(Serve):
    def __init__(self, c: Cluster) -> None:
        self.tokens = {p.id: c.client.admin.create_token(p)[1] for p in (ADMIN, AGENT, OTHER)}
        super().__init__(c)

    def client(self, who: Principal | None = AGENT, token: str | None = None) -> httpx.Client:
        bearer = token or (self.tokens[who.id] if who else None)
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def actors_cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[Cluster]:
    env = {"JOBSYS_CATALOG": f"{CATALOG},tests.actor_jobs"}
    with cluster(tmp_path_factory.mktemp("actors"), redis_url, database_url, **env) as c:
        c.start_worker("w1", concurrency=1)  # its reaper watches the actors' leases
        yield c


@pytest.fixture(scope="module")
def server(actors_cluster: Cluster) -> Iterator[Server]:
    with Server(actors_cluster) as s:
        yield s
    assert "Traceback" not in s.log(), s.log()[-5000:]


def submit(server: Server, job: str = "actors.review", url: str = "doc-1") -> str:
    with server.client(ADMIN) as api:
        r = api.post(f"/api/v1/jobs/{job}/runs", json={"input": {"url": url}})
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


def run(server: Server, run_id: str) -> dict[str, Any]:
    with server.client(ADMIN) as api:
        r = api.get(f"/api/v1/runs/{run_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_an_actor_completes_a_run_over_http_with_progress_and_a_checked_result(
    server: Server,
) -> None:
    run_id = submit(server)
    waiting = run(server, run_id)
    assert waiting["state"] == "pending" and waiting["waiting"]["reason"] == "actor"
    with server.client(AGENT) as agent:
        taken = agent.post("/api/v1/jobs/actors.review/take")
        assert taken.status_code == 200, taken.text
        t = taken.json()
    assert t["run_id"] == run_id and t["input"] == {"url": "doc-1"} and t["attempt"] == 1
    assert t["run_token"].startswith("jsr_") and t["lease"] == 30
    assert t["output_schema"]["required"] == ["verdict", "score"]
    started = run(server, run_id)
    assert started["state"] == "running" and started["worker"] == "actor:agent-7"

    with server.client(token=t["run_token"]) as actor:
        r = actor.post(f"/api/v1/runs/{run_id}/progress", json={"pct": 50, "message": "half"})
        assert r.status_code == 200, r.text
        assert actor.post(f"/api/v1/runs/{run_id}/log", json={"message": "read"}).status_code == 200
        assert actor.post(f"/api/v1/runs/{run_id}/heartbeat").status_code == 200
        assert run(server, run_id)["progress"] == {"pct": 50.0, "message": "half"}
        bad = actor.post(
            f"/api/v1/runs/{run_id}/complete", json={"output": {"verdict": "ok", "score": 3}}
        )
        assert bad.status_code == 422, bad.text
        assert [f["loc"] for f in bad.json()["error"]["fields"]] == [["verdict"]]
        assert run(server, run_id)["state"] == "running"  # the actor may send it again
        good = actor.post(
            f"/api/v1/runs/{run_id}/complete",
            json={"output": {"verdict": "approve", "score": 9}},
        )
        assert good.status_code == 200, good.text
        again = actor.post(f"/api/v1/runs/{run_id}/log", json={"message": "late"})
        assert again.status_code == 401, again.text  # the run ended: its token is gone
    done = run(server, run_id)
    assert done["state"] == "completed" and done["output"] == {"verdict": "approve", "score": 9}
    with server.client(ADMIN) as api:
        logs = api.get(f"/api/v1/runs/{run_id}/logs").json()
    assert "read" in json.dumps(logs)


def test_tokens_tenants_and_jobs_that_are_not_external_are_refused(server: Server) -> None:
    first, second = submit(server, url="a"), submit(server, url="b")
    with server.client(OTHER) as other:  # another tenant: neither seen nor taken
        assert other.post(f"/api/v1/runs/{first}/take").status_code == 404
        assert other.post("/api/v1/jobs/actors.review/take").status_code == 404
    with server.client(AGENT) as agent:
        one = agent.post(f"/api/v1/runs/{first}/take").json()
        two = agent.post(f"/api/v1/runs/{second}/take").json()
        assert agent.post(f"/api/v1/runs/{first}/take").status_code == 409  # taken already
        plain = agent.post(f"/api/v1/runs/{first}/heartbeat")  # an API token, not the run's
        assert plain.status_code == 401, plain.text
        r = agent.post("/api/v1/jobs/examples.add/take")
        assert r.status_code == 409 and r.json()["error"]["type"] == "NotExternal"
    with server.client(token=two["run_token"]) as actor:  # another run's token
        r = actor.post(f"/api/v1/runs/{first}/complete", json={"output": {}})
        assert r.status_code == 403, r.text
    with server.client(token=one["run_token"] + "x") as forged:
        assert forged.post(f"/api/v1/runs/{first}/heartbeat").status_code == 401
    for run_id, held in ((first, one), (second, two)):
        with server.client(token=held["run_token"]) as actor:
            r = actor.post(f"/api/v1/runs/{run_id}/fail", json={"error": "no time"})
            assert r.status_code == 200 and r.json()["state"] == "failed", r.text


def test_a_silent_actor_loses_the_run_and_the_next_one_sees_its_notes(server: Server) -> None:
    run_id = submit(server, job="actors.brief", url="long")
    with server.client(AGENT) as agent:
        first = agent.post(f"/api/v1/runs/{run_id}/take").json()
        with server.client(token=first["run_token"]) as actor:
            r = actor.post(f"/api/v1/runs/{run_id}/notes", json={"text": "pages 1-3 done"})
            assert r.status_code == 200, r.text
        # then it goes silent: past its 2 s lease, the reaper hands the run back

        def back() -> dict[str, Any] | NotYet:
            now = run(server, run_id)
            return now if now["state"] == "pending" else NotYet(now["state"])

        assert eventually(back, timeout=20)["waiting"]["reason"] == "actor"
        second = agent.post("/api/v1/jobs/actors.brief/take").json()
    assert second["run_id"] == run_id and second["attempt"] == 2
    assert [n["message"] for n in second["notes"]] == ["pages 1-3 done"]
    assert second["notes"][0]["attempt"] == 1
    with server.client(token=first["run_token"]) as stale:  # the first actor's is done
        assert stale.post(f"/api/v1/runs/{run_id}/heartbeat").status_code == 401

    def ended() -> dict[str, Any] | NotYet:  # silent again, attempts used up: timed out
        now = run(server, run_id)
        return now if now["state"] == "failed" else NotYet(now["state"])

    failed = eventually(ended, timeout=20)
    assert failed["error"]["reason"] == "timeout", failed["error"]


def test_a_run_token_stops_working_once_the_api_token_that_took_the_run_is_revoked(
    server: Server,
) -> None:
    c = server.cluster
    record, taker = c.client.admin.create_token(AGENT)
    run_id = submit(server, job="actors.brief", url="revoked")
    with server.client(token=taker) as agent:
        held = agent.post(f"/api/v1/runs/{run_id}/take").json()
    with server.client(token=held["run_token"]) as actor:
        assert actor.post(f"/api/v1/runs/{run_id}/heartbeat").status_code == 200
        revoked = cli_runner.run(c.env, ["tokens", "revoke", record.id])
        assert revoked.returncode == 0, revoked.stderr
        for report, body in (
            ("heartbeat", {}),
            ("progress", {"pct": 50}),
            ("log", {"message": "still here"}),
            ("complete", {"output": {"verdict": "approve", "score": 7}}),
            ("fail", {"error": "x", "retry": True}),
        ):
            r = actor.post(f"/api/v1/runs/{run_id}/{report}", json=body)
            assert r.status_code == 401, (report, r.text)
            message = r.json()["error"]["message"]
            assert "revoked" in message and record.id in message, message
    assert run(server, run_id)["state"] == "running"  # refused, the run not renewed

    def back() -> dict[str, Any] | NotYet:  # past its 2 s lease, the reaper hands it back
        now = run(server, run_id)
        return now if now["state"] == "pending" else NotYet(now["state"])

    assert eventually(back, timeout=20)["waiting"]["reason"] == "actor"
    with server.client(AGENT) as agent:  # another token of the same principal still works
        again = agent.post(f"/api/v1/runs/{run_id}/take").json()
    assert again["attempt"] == 2
    with server.client(token=again["run_token"]) as actor:
        done = actor.post(
            f"/api/v1/runs/{run_id}/complete", json={"output": {"verdict": "reject", "score": 1}}
        )
        assert done.status_code == 200 and done.json()["state"] == "completed", done.text


def test_a_run_taken_over_mcp_is_bound_to_the_token_that_took_it(server: Server) -> None:
    """Taken over MCP with one token, reported with the run token in the session of another
    (valid) token once the first is revoked: refused, as over HTTP."""
    c = server.cluster
    record, taker = c.client.admin.create_token(AGENT)
    run_id = submit(server, job="actors.once", url="mcp-revoked")

    async def take() -> dict[str, Any]:
        async with http_session(f"{server.url}/mcp", taker) as mcp:
            taken = await mcp.call_tool("job_take", {"run_id": run_id})
            assert not taken.is_error, taken.content
            return dict(json.loads(taken.content[0].text))  # type: ignore[union-attr]

    held = {"run_id": run_id, "run_token": asyncio.run(take())["run_token"]}
    c.client.admin.revoke_token(record.id)

    async def report() -> str:
        async with http_session(f"{server.url}/mcp", server.tokens[AGENT.id]) as mcp:
            r = await mcp.call_tool("job_report", {**held, "progress": 10})
            assert r.is_error, r.content
            return str(r.content[0].text)  # type: ignore[union-attr]

    assert "revoked" in asyncio.run(report())

    def ended() -> dict[str, Any] | NotYet:  # not renewed: one attempt, past its 1 s lease
        now = run(server, run_id)
        return now if now["state"] == "failed" else NotYet(now["state"])

    assert eventually(ended, timeout=20)["error"]["reason"] == "timeout"


def test_a_worker_never_runs_an_external_run(server: Server) -> None:
    c = server.cluster
    run_id = submit(server, job="actors.once")
    # A message forged for it (none is ever published) reaches the worker, which drops it
    # and leaves the run to an actor.
    c.client.app.send_task(
        "actors.once", kwargs={"run_id": run_id, "dispatch": 1}, queue="jobs", priority=0
    )

    def dropped() -> bool | NotYet:
        return f"message for run {run_id}" in c.log("w1") or NotYet(c.log("w1")[-2000:])

    eventually(dropped, timeout=20)
    record = c.store.get(run_id)
    assert record.state.value == "pending" and record.attempts == 0
    assert record.waiting is not None and record.waiting["reason"] == "actor"
    with server.client(AGENT) as agent:
        assert agent.post(f"/api/v1/runs/{run_id}/take").status_code == 200

    def ended() -> dict[str, Any] | NotYet:  # one attempt, silent past its 1 s lease
        now = run(server, run_id)
        return now if now["state"] == "failed" else NotYet(now["state"])

    assert eventually(ended, timeout=20)["error"]["reason"] == "timeout"


def test_an_agent_completes_a_run_over_mcp(server: Server, tmp_path: Path) -> None:
    run_id = submit(server, url="mcp")

    async def scenario() -> dict[str, Any]:
        async with http_session(f"{server.url}/mcp", server.tokens[AGENT.id]) as mcp:
            listed = {t.name for t in (await mcp.list_tools()).tools}
            assert {"job_take", "job_report", "job_complete", "job_fail"} <= listed
            taken = await mcp.call_tool("job_take", {"job": "actors.review"})
            t = json.loads(taken.content[0].text)  # type: ignore[union-attr]
            assert t["run_id"] == run_id and t["input"] == {"url": "mcp"}
            held = {"run_id": run_id, "run_token": t["run_token"]}
            r = await mcp.call_tool("job_report", {**held, "progress": 40, "note": "started"})
            assert not r.is_error, r.content
            bad = await mcp.call_tool("job_complete", {**held, "output": {"verdict": "approve"}})
            assert bad.is_error and "score" in bad.content[0].text  # type: ignore[union-attr]
            forged = await mcp.call_tool("job_report", {"run_id": run_id, "run_token": "jsr_x_y"})
            assert forged.is_error
            good = await mcp.call_tool(
                "job_complete", {**held, "output": {"verdict": "reject", "score": 2}}
            )
            assert not good.is_error, good.content
            answer: dict[str, Any] = json.loads(good.content[0].text)  # type: ignore[union-attr]
            return answer

    answer = asyncio.run(scenario())
    assert answer["state"] == "completed"
    done = run(server, run_id)
    assert done["output"] == {"verdict": "reject", "score": 2}
    assert done["progress"]["pct"] == 40.0


def test_a_person_does_a_run_from_the_shell(server: Server) -> None:
    run_id = submit(server, url="shell")
    env = {**server.cluster.env, "JOBSYS_TOKEN": server.tokens[AGENT.id]}
    taken = cli_runner.run(env, ["runs", "take", "actors.review", "--json"])
    assert taken.returncode == 0, taken.stderr
    t = json.loads(taken.stdout)
    assert t["run_id"] == run_id
    env["JOBSYS_RUN_TOKEN"] = t["run_token"]
    note = ["runs", "report", run_id, "--progress", "20", "--note", "halfway through"]
    assert cli_runner.run(env, note).returncode == 0
    handed = cli_runner.run(env, ["runs", "fail", run_id, "--error", "out of time", "--retry"])
    assert handed.returncode == 0, handed.stderr
    assert "state: pending" in handed.stdout  # for the next actor (retry backoff 0 s)
    again = cli_runner.run(env, ["runs", "take", run_id])
    assert again.returncode == 0, again.stderr
    assert "note (attempt 1): halfway through" in again.stdout
    env["JOBSYS_RUN_TOKEN"] = again.stdout.strip().splitlines()[-1].split("=", 1)[1]
    bad = cli_runner.run(env, ["runs", "complete", run_id, "--output", '{"verdict": "approve"}'])
    assert bad.returncode == 2 and "score" in bad.stderr, bad.stderr
    good = ["runs", "complete", run_id, "--output", '{"verdict": "approve", "score": 7}']
    done = cli_runner.run(env, good)
    assert done.returncode == 0 and "state: completed" in done.stdout, done.stderr


def test_actors_taking_at_once_never_take_the_same_run(server: Server) -> None:
    with server.client(ADMIN) as api:
        shown = api.get("/api/v1/jobs/actors.review").json()
    assert shown["kind"] == "external" and shown["lease"] == 30
    made = {submit(server, url=f"many-{i}") for i in range(6)}

    def take_all() -> list[dict[str, Any]]:
        got = []
        with server.client(AGENT) as agent:
            while (r := agent.post("/api/v1/jobs/actors.review/take")).status_code == 200:
                got.append(r.json())
            assert r.status_code == 404 and r.json()["error"]["type"] == "NothingToTake"
        return got

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        taken = [t for got in pool.map(lambda _: take_all(), range(3)) for t in got]
    ids = [t["run_id"] for t in taken]
    assert sorted(ids) == sorted(made)  # each once: none taken twice, none left
    for t in taken:
        with server.client(token=t["run_token"]) as actor:
            r = actor.post(f"/api/v1/runs/{t['run_id']}/fail", json={"error": "done"})
            assert r.status_code == 200, r.text
