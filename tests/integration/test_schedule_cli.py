"""Schedules and runs as a user types them, through the CLI (and the HTTP API and MCP tools of
a real server) against a cluster with a worker. The CLI runs in-process (click's runner, the
same commands a ``jobsys`` process runs, less its start-up); the errors a user sees on stderr
with their exit codes are checked through real ``python -m jobsys`` processes: durations such as
``1h30m``, schedules made paused and described, triggered at an older version, listed by name
and next fire, previewed across a daylight-saving change, cleared by an admin of their tenant
only; runs listed by the schedule, workflow run and run they came from."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jobsys import Principal
from jobsys.store import tokens
from tests import cli_runner
from tests.cluster import Cluster
from tests.integration.mcp_support import http_session
from tests.servers import Serve
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.interface]

FAR = "2100-01-01T00:00:00+00:00"
JOB = "tests.operated"


class Cli:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        store = tokens.TokenStore(cluster.store.engine)
        self.tokens = {
            (tenant, role): store.create(
                Principal(id=f"{tenant}-{role}", roles=roles, tenant=tenant), "test"
            )[1]
            for tenant in ("acme", "globex")
            for role, roles in (("admin", ("admin",)), ("viewer", ()))
        }

    def run(
        self, *argv: str, who: tuple[str, str] = ("acme", "admin"), process: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """One command as ``who``: in-process, or (``process``) a ``python -m jobsys``."""
        env = {k: v for k, v in self.cluster.env.items() if k != "JOBSYS_TOKEN"}
        return cli_runner.run(env, [*argv, "--token", self.tokens[who]], process)

    def json(self, *argv: str, who: tuple[str, str] = ("acme", "admin")) -> Any:
        done = self.run(*argv, "--json", who=who)
        assert done.returncode == 0, f"{argv}: {done.stderr}"
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def cli(shared: Cluster) -> Cli:
    return Cli(shared)


def finished(cli: Cli, run_id: str) -> dict[str, Any]:
    def done() -> Any:
        record = cli.json("runs", "show", run_id)
        return record if record["state"] in ("completed", "failed", "cancelled") else None

    return dict(eventually(done, 60, what=f"run {run_id}"))


def test_paused_described_schedule_fires_an_older_version(cli: Cli, shared: Cluster) -> None:
    made = cli.json(
        "schedules", "create", JOB, "--every", "1h30m", "--start", FAR, "--paused",
        "--name", "nightly-report", "--description", "the nightly report",
        "--input", '{"seconds": 0}',
    )  # fmt: skip
    sid = made["id"]
    assert made["state"] == "paused" and made["description"] == "the nightly report"
    assert made["cadence"]["every"] == 5400.0 and made["version"] == 1
    changed = cli.json(
        "schedules", "update", sid, "--input", '{"seconds": 0.01}', "--description", "v2"
    )
    assert changed["version"] == 2 and changed["description"] == "v2"
    assert changed["state"] == "paused"
    old = cli.json("schedules", "trigger", sid, "--version", "1")
    current = cli.json("schedules", "trigger", sid)
    first, second = finished(cli, old["run_id"]), finished(cli, current["run_id"])
    assert first["state"] == second["state"] == "completed"
    assert (first["schedule_version"], first["input"]) == (1, {"seconds": 0})
    assert (second["schedule_version"], second["input"]) == (2, {"seconds": 0.01})
    listed = cli.json("runs", "list", "--schedule", sid)
    assert sorted(r["id"] for r in listed) == sorted([old["run_id"], current["run_id"]])
    assert cli.json("runs", "list", "--schedule", "sch_nothing") == []
    missing = cli.run("schedules", "trigger", sid, "--version", "3", process=True)
    assert missing.returncode == 2 and "versions 1 to 2" in missing.stderr


def test_schedules_listed_by_name_job_and_next_fire(cli: Cli) -> None:
    far = cli.json("schedules", "create", JOB, "--every", "2d", "--start", FAR,
                   "--name", "Billing-Weekly", "--input", '{"seconds": 0}')  # fmt: skip
    soon = cli.json("schedules", "create", JOB, "--every", "1d", "--start", "2099-01-01T00:00Z",
                    "--name", "cleanup", "--input", '{"seconds": 0}')  # fmt: skip
    by_name = {s["id"] for s in cli.json("schedules", "list", "--name", "billing")}
    assert far["id"] in by_name and soon["id"] not in by_name
    late = {s["id"] for s in cli.json("schedules", "list", "--next-after", "2099-06-01T00:00Z")}
    assert far["id"] in late and soon["id"] not in late
    early = {s["id"] for s in cli.json("schedules", "list", "--next-before", "2099-06-01T00:00Z")}
    assert soon["id"] in early and far["id"] not in early
    window = cli.json(
        "schedules", "list", "--job", JOB, "--name", "clean",
        "--next-after", "1d", "--next-before", "2099-01-01T00:00:01Z",
    )  # fmt: skip
    assert [s["id"] for s in window] == [soon["id"]]
    bad = cli.run("schedules", "list", "--next-after", "someday")
    assert bad.returncode == 2 and "--next-after" in bad.stderr


def test_preview_notes_the_spring_forward(cli: Cli) -> None:
    expected_note = "02:30 does not exist on 2027-03-28 in Europe/Berlin (clocks spring forward)"
    adhoc = cli.json("schedules", "preview", "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
                     "--start", "2027-03-27T00:00Z", "-n", "3")  # fmt: skip
    assert [f["local"] for f in adhoc["fires"]] == [
        "2027-03-27T02:30:00+01:00",
        "2027-03-28T03:00:00+02:00",
        "2027-03-29T02:30:00+02:00",
    ]
    assert adhoc["fires"][1]["note"].startswith(expected_note)
    made = cli.json("schedules", "create", JOB, "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
                    "--start", "2027-03-27T00:00Z", "--input", '{"seconds": 0}')  # fmt: skip
    saved = cli.json("schedules", "preview", made["id"], "--count", "3")
    assert saved["fires"] == adhoc["fires"] and saved["schedule_id"] == made["id"]
    table = cli.run("schedules", "preview", made["id"], "-n", "3")
    assert table.returncode == 0 and "does not exist" in " ".join(table.stdout.split())
    both = cli.run("schedules", "preview", made["id"], "--cron", "@daily")
    assert both.returncode == 2
    other = cli.run("schedules", "preview", made["id"], who=("globex", "admin"))
    assert other.returncode == 2 and "not found" in other.stderr


def test_runs_listed_by_parent_and_workflow_run(cli: Cli) -> None:
    submitted = cli.json("submit", JOB, "--input", '{"seconds": 0}', "--countdown", "1h")
    assert submitted["state"] == "pending"
    run_id = submitted["id"]
    assert cli.json("runs", "cancel", run_id)["state"] == "cancelled"
    retry = cli.json("runs", "retry", run_id)
    assert retry["retry_of"] == run_id and retry["parent_id"] == run_id
    assert [r["id"] for r in cli.json("runs", "list", "--parent", run_id)] == [retry["id"]]
    flow = cli.json("workflows", "submit", "tests.operated_flow")
    steps = eventually(
        lambda: cli.json("runs", "list", "--workflow", flow["id"]), 60, what="the step's run"
    )
    assert {r["workflow_id"] for r in steps} == {flow["id"]} and steps[0]["job"] == JOB
    cli.json("workflows", "cancel", flow["id"])
    bad = cli.run("runs", "result", run_id, "--wait", "soon")
    assert bad.returncode == 2 and "duration like 30s" in bad.stderr


def test_clear_is_for_admins_and_their_tenant_only(cli: Cli) -> None:
    mine = [cli.json("schedules", "create", JOB, "--every", "1h", "--start", FAR,
                     "--input", '{"seconds": 0}', who=("acme", "admin"))["id"]
            for _ in range(2)]  # fmt: skip
    theirs = cli.json("schedules", "create", JOB, "--every", "1h", "--start", FAR,
                      "--input", '{"seconds": 0}', who=("globex", "admin"))["id"]  # fmt: skip
    refused = cli.run("schedules", "clear", who=("acme", "viewer"), process=True)
    assert refused.returncode == 3 and "permission denied" in refused.stderr
    dry = cli.json("schedules", "clear", "--dry-run")
    named = {s["id"] for s in dry["cleared"]}
    assert dry["dry_run"] and set(mine) <= named and theirs not in named
    assert all(s["tenant"] == "acme" for s in dry["cleared"])
    assert {cli.json("schedules", "show", i)["state"] for i in mine} == {"active"}
    done = cli.json("schedules", "clear")
    assert {s["id"] for s in done["cleared"]} == named
    assert {cli.json("schedules", "show", i)["state"] for i in mine} == {"cancelled"}
    assert cli.json("schedules", "show", theirs, who=("globex", "admin"))["state"] == "active"
    assert cli.json("schedules", "clear", "--dry-run")["cleared"] == []


@pytest.fixture(scope="module")
def api(shared: Cluster, cli: Cli) -> Iterator[tuple[httpx.Client, str]]:
    with Serve(shared) as serve:
        headers = {"Authorization": f"Bearer {cli.tokens[('acme', 'admin')]}"}
        with httpx.Client(base_url=serve.url, headers=headers, timeout=60) as http:
            yield http, serve.url


def test_http_and_mcp(api: tuple[httpx.Client, str], cli: Cli) -> None:
    http, url = api
    body = {"job": JOB, "kind": "interval", "every": "1h30m", "start_at": FAR,
            "input": {"seconds": 0}, "description": "over HTTP", "paused": True}  # fmt: skip
    made = http.post("/api/v1/schedules", json=body)
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    assert made.json()["state"] == "paused" and made.json()["cadence"]["every"] == 5400.0
    changed = http.patch(f"/api/v1/schedules/{sid}", json={"input": {"seconds": 0.01}})
    assert changed.json()["version"] == 2
    fired = http.post(f"/api/v1/schedules/{sid}/trigger", params={"version": 1})
    assert fired.status_code == 202, fired.text
    assert finished(cli, fired.json()["run_id"])["input"] == {"seconds": 0}
    runs = http.get("/api/v1/runs", params={"schedule": sid}).json()["runs"]
    assert [r["id"] for r in runs] == [fired.json()["run_id"]]
    named = http.get("/api/v1/schedules", params={"name": "", "next_after": "2099-12-31T00:00Z"})
    assert sid in {s["id"] for s in named.json()["schedules"]}
    preview = http.post(
        "/api/v1/schedules/preview",
        json={"kind": "cron", "cron": "30 2 * * *", "timezone": "Europe/Berlin",
              "start_at": "2027-03-27T00:00Z", "count": 2},
    )  # fmt: skip
    assert preview.status_code == 200, preview.text
    assert "does not exist" in preview.json()["fires"][1]["note"]
    saved = http.get(f"/api/v1/schedules/{sid}/preview", params={"count": 2}).json()
    assert [f["at"] for f in saved["fires"]] == [FAR, "2100-01-01T01:30:00+00:00"]
    later = http.post(f"/api/v1/jobs/{JOB}/runs", json={"input": {"seconds": 0}, "countdown": "1h"})
    assert later.status_code == 202 and later.json()["state"] == "pending"
    wrong = http.post(f"/api/v1/jobs/{JOB}/runs", json={"countdown": "an hour"})
    assert wrong.status_code == 422 and "duration like 30s" in wrong.text

    async def mcp() -> Any:
        async with http_session(f"{url}/mcp", cli.tokens[("acme", "admin")]) as s:
            result = await s.call_tool("job_list", {"what": "runs", "schedule": sid})
            assert not result.is_error, result.content
            return result.structured_content

    listed = asyncio.run(mcp())
    assert [r["run_id"] for r in listed["runs"]] == [fired.json()["run_id"]]
    assert dt.datetime.fromisoformat(saved["fires"][0]["at"]).year == 2100
