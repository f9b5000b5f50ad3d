"""Runs driven from outside as an attacker would try them, through the HTTP API, the MCP tools
and the CLI: taking needs ``execute`` on the external job (refused and audited otherwise) in
the run's tenant (another tenant's run is not found); a report needs the run token of the
attempt that holds the run: an API token, another run's token, a forged or a superseded one
is refused, and a run token is no API token anywhere else. (The access matrix leaves these
routes, tools and commands to this file.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jobsys import Principal
from tests import cli_runner
from tests.cluster import CATALOG, Cluster, cluster
from tests.integration.mcp_support import http_session
from tests.servers import Serve

pytestmark = pytest.mark.integration

REVIEWER = Principal(id="rita", roles=("reviewer",), tenant="t1")
VIEWER = Principal(id="vic", roles=("viewer",), tenant="t1")
"""May see, not execute, ``actors.restricted``."""
STRANGER = Principal(id="sam", roles=("admin", "reviewer"), tenant="t2")
REPORTS = ("heartbeat", "progress", "log", "notes", "complete", "fail")
BODIES: dict[str, dict[str, Any]] = {
    "heartbeat": {},
    "progress": {"pct": 10},
    "log": {"message": "x"},
    "notes": {"text": "x"},
    "complete": {"output": {"verdict": "approve", "score": 1}},
    "fail": {"error": "x"},
}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[tuple[Cluster, Serve, dict[str, str]]]:
    env = {"JOBSYS_CATALOG": f"{CATALOG},tests.actor_jobs"}
    with cluster(tmp_path_factory.mktemp("actor-access"), redis_url, database_url, **env) as c:
        tokens = {p.id: c.client.admin.create_token(p)[1] for p in (REVIEWER, VIEWER, STRANGER)}
        with Serve(c) as serve:
            yield c, serve, tokens


def http(serve: Serve, token: str) -> httpx.Client:
    return httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {token}"})


def submit(serve: Serve, token: str) -> str:
    with http(serve, token) as api:
        r = api.post("/api/v1/jobs/actors.restricted/runs", json={"input": {"url": "s"}})
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


def test_taking_needs_execute_in_the_runs_tenant_on_every_interface(
    served: tuple[Cluster, Serve, dict[str, str]],
) -> None:
    c, serve, tokens = served
    run_id = submit(serve, tokens[REVIEWER.id])
    with http(serve, tokens[VIEWER.id]) as api:
        assert api.post(f"/api/v1/runs/{run_id}/take").status_code == 403
        assert api.post("/api/v1/jobs/actors.restricted/take").status_code == 403
    with http(serve, tokens[STRANGER.id]) as api:  # another tenant: not found, even an admin
        assert api.post(f"/api/v1/runs/{run_id}/take").status_code == 404
        assert api.post("/api/v1/jobs/actors.restricted/take").status_code == 404
    denied = c.client.admin.audit_log(outcome="denied", limit=20)
    assert any(e.principal_id == VIEWER.id and e.target == run_id for e in denied)

    for who, expected in ((VIEWER, 3), (STRANGER, 2)):
        env = {**c.env, "JOBSYS_TOKEN": tokens[who.id]}
        assert cli_runner.run(env, ["runs", "take", run_id]).returncode == expected, who.id

    async def over_mcp(token: str) -> tuple[bool, str]:
        async with http_session(f"{serve.url}/mcp", token) as s:
            r = await s.call_tool("job_take", {"run_id": run_id})
            return r.is_error, r.content[0].text  # type: ignore[union-attr]

    for who in (VIEWER, STRANGER):
        is_error, text = asyncio.run(over_mcp(tokens[who.id]))
        assert is_error, text
    assert c.store.get(run_id).state.value == "pending"  # nobody took it

    is_error, text = asyncio.run(over_mcp(tokens[REVIEWER.id]))
    assert not is_error and json.loads(text)["run_id"] == run_id


def test_a_report_needs_the_run_token_of_the_attempt_that_holds_the_run(
    served: tuple[Cluster, Serve, dict[str, str]],
) -> None:
    c, serve, tokens = served
    first, second = submit(serve, tokens[REVIEWER.id]), submit(serve, tokens[REVIEWER.id])
    with http(serve, tokens[REVIEWER.id]) as api:
        mine = api.post(f"/api/v1/runs/{first}/take").json()["run_token"]
        other = api.post(f"/api/v1/runs/{second}/take").json()["run_token"]
        for report in REPORTS:  # an API token, even of the actor, is not a run token
            r = api.post(f"/api/v1/runs/{first}/{report}", json=BODIES[report])
            assert r.status_code == 401, (report, r.text)
    forged = mine[:-4] + ("0000" if not mine.endswith("0000") else "1111")
    for token, status in ((other, 403), (forged, 401), ("jsr_" + first + "_x", 401)):
        with http(serve, token) as api:
            for report in REPORTS:
                r = api.post(f"/api/v1/runs/{first}/{report}", json=BODIES[report])
                assert r.status_code == status, (report, r.text)
    with http(serve, mine) as api:  # a run token is no API token
        assert api.get("/api/v1/runs").status_code == 401
        assert api.post("/api/v1/jobs/actors.restricted/take").status_code == 401
    assert c.store.get(first).state.value == "running"  # none of that touched it

    async def over_mcp() -> tuple[bool, str]:  # the agent's token, another run's token
        async with http_session(f"{serve.url}/mcp", tokens[REVIEWER.id]) as s:
            r = await s.call_tool(
                "job_complete",
                {"run_id": first, "run_token": other, "output": BODIES["complete"]["output"]},
            )
            return r.is_error, r.content[0].text  # type: ignore[union-attr]

    is_error, text = asyncio.run(over_mcp())
    assert is_error and second in text, text
    env = {**c.env, "JOBSYS_TOKEN": tokens[REVIEWER.id], "JOBSYS_RUN_TOKEN": other}
    assert cli_runner.run(env, ["runs", "report", first, "--note", "x"]).returncode == 3
    for run_id, token in ((first, mine), (second, other)):
        with http(serve, token) as api:
            assert api.post(f"/api/v1/runs/{run_id}/fail", json={"error": "x"}).status_code == 200
