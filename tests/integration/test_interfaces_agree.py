"""The CLI, the HTTP API and the MCP tools list and describe jobs alike: the same queries, run
through the three as principals of different permissions, give the same jobs (and workflows),
the same JSON, and the same errors (``jobsys.service.views``, ``jobsys.base.errors.ANSWERS``).

The CLI runs in-process (click's runner, as ``--token``), the HTTP API and MCP (streamable HTTP
at ``/mcp``) on one real ``jobsys serve``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner

from jobsys import Principal
from jobsys.base import errors
from jobsys.cli import main as cli_main
from tests.cluster import Cluster, cluster
from tests.integration.mcp_support import Session, http_session
from tests.servers import Serve

pytestmark = pytest.mark.integration

ADMIN = Principal(id="ada", roles=("admin",), tenant="default")
NOBODY = Principal(id="ned", tenant="default")
"""No role: the jobs whose list rule names a role (``examples.admin_only``,
``tests.ops_only``) are not shown to it, nor described."""


@dataclasses.dataclass(frozen=True)
class Listing:
    tag: str | None = None
    label: str | None = None
    query: str | None = None

    def cli(self) -> list[str]:
        args = ["jobs", "list", "--json"]
        for option, value in (("--tag", self.tag), ("--label", self.label)):
            args += [option, value] if value is not None else []
        return args + (["--search", self.query] if self.query is not None else [])

    def http(self) -> dict[str, str]:
        given = {"tag": self.tag, "label": self.label, "q": self.query}
        return {k: v for k, v in given.items() if v is not None}

    def mcp(self) -> dict[str, str]:
        given = {"tag": self.tag, "label": self.label, "query": self.query}
        return {k: v for k, v in given.items() if v is not None}


LISTINGS = {
    "all": Listing(),
    "by tag": Listing(tag="permissions"),
    "by label key": Listing(label="team"),
    "by label key=value": Listing(label="team=core"),
    "by a label value no job has": Listing(label="team=none"),
    "by search text": Listing(query="only"),
    "by tag and search text": Listing(tag="example", query="add"),
}
DESCRIBED = ("examples.add", "examples.admin_only", "tests.ops_only", "no.such.job")


@dataclasses.dataclass
class Answer:
    """What one interface answered: the JSON, or the error's type and the code it came with
    (the CLI's exit code, the HTTP status; MCP has none)."""

    data: Any = None
    error: str | None = None
    code: int | None = None


@dataclasses.dataclass
class Interfaces:
    cluster: Cluster
    serve: Serve
    tokens: dict[str, str]

    def cli(self, who: Principal, args: list[str]) -> Answer:
        result = CliRunner(env=self.cluster.env).invoke(
            cli_main, [*args, "--token", self.tokens[who.id]]
        )
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        if result.exit_code:
            return Answer(error=result.stderr.strip(), code=result.exit_code)
        return Answer(json.loads(result.stdout))

    def http(self, who: Principal, path: str, params: dict[str, str]) -> Answer:
        headers = {"Authorization": f"Bearer {self.tokens[who.id]}"}
        got = httpx.get(f"{self.serve.url}{path}", params=params, headers=headers, timeout=60)
        if got.status_code != 200:
            return Answer(error=got.json()["error"]["type"], code=got.status_code)
        return Answer(got.json())

    async def mcp(self, s: Session, tool: str, arguments: dict[str, Any]) -> Answer:
        result = await s.call_tool(tool, arguments)
        text = "".join(getattr(c, "text", "") for c in result.content)
        if result.is_error:
            assert result.structured_content is not None, text
            return Answer(error=result.structured_content["error"]["type"])
        return Answer(json.loads(text))


@pytest.fixture(scope="module")
def interfaces(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[Interfaces]:
    tmp: Path = tmp_path_factory.mktemp("agree")
    with cluster(tmp, redis_url, database_url) as c:
        tokens = {p.id: c.client.admin.create_token(p)[1] for p in (ADMIN, NOBODY)}
        with Serve(c) as serve:
            yield Interfaces(c, serve, tokens)


def without_tool(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for j in jobs:
        assert j.pop("tool").startswith("run__"), j
    return jobs


def names(jobs: list[dict[str, Any]]) -> list[str]:
    return [j["name"] for j in jobs]


@pytest.mark.parametrize("who", [ADMIN, NOBODY], ids=lambda p: p.id)
def test_the_three_interfaces_list_and_describe_jobs_alike(
    interfaces: Interfaces, who: Principal
) -> None:
    mcp: dict[str, Answer] = {}

    async def ask_mcp() -> None:
        async with http_session(f"{interfaces.serve.url}/mcp", interfaces.tokens[who.id]) as s:
            for name, listing in LISTINGS.items():
                mcp[name] = await interfaces.mcp(
                    s, "list_jobs", {**listing.mcp(), "include_hidden": False}
                )
            for job in DESCRIBED:
                mcp[job] = await interfaces.mcp(s, "describe_job", {"job": job})
            mcp["a label without a key"] = await interfaces.mcp(s, "list_jobs", {"label": "=core"})

    anyio.run(ask_mcp)
    seen: dict[str, list[str]] = {}
    for name, listing in LISTINGS.items():
        http = interfaces.http(who, "/api/v1/jobs", listing.http())
        cli = interfaces.cli(who, listing.cli())
        assert http.error is None and cli.error is None and mcp[name].error is None, name
        from_mcp = mcp[name].data
        assert without_tool(from_mcp["jobs"]) == http.data["jobs"] == cli.data, name
        assert from_mcp["workflows"] == http.data["workflows"], name
        seen[name] = names(cli.data)
    for job in DESCRIBED:
        http = interfaces.http(who, f"/api/v1/jobs/{job}", {})
        cli = interfaces.cli(who, ["jobs", "show", job, "--json"])
        if http.error is None:
            assert cli.data == http.data == without_tool([mcp[job].data])[0], job
            continue
        assert http.error == mcp[job].error, job
        answer = errors.ANSWERS[getattr(errors, http.error)]
        assert (http.code, cli.code) == (answer.http_status, answer.exit_code), job
    bad_http = interfaces.http(who, "/api/v1/jobs", {"label": "=core"})
    bad_cli = interfaces.cli(who, ["jobs", "list", "--label", "=core"])
    assert (bad_http.error, bad_http.code, bad_cli.code) == ("InvalidInput", 422, 2)
    assert mcp["a label without a key"].error == "InvalidInput"

    # What each principal is shown, written out by hand from the jobs' rules.
    assert {"examples.add", "examples.sleep"} <= set(seen["all"])
    assert seen["by label key"] == seen["by label key=value"] == ["examples.add"]
    assert seen["by a label value no job has"] == []
    assert seen["by tag and search text"] == ["examples.add"]
    if who is ADMIN:
        assert {"examples.admin_only", "tests.ops_only"} <= set(seen["all"])
        assert seen["by tag"] == ["examples.admin_only"]
        assert set(seen["by search text"]) >= {"examples.admin_only", "tests.ops_only"}
    else:
        assert not {"examples.admin_only", "tests.ops_only"} & set(seen["all"])
        assert seen["by tag"] == []
        assert not {"examples.admin_only", "tests.ops_only"} & set(seen["by search text"])


FAR = "2100-01-01T00:00:00Z"
"""A schedule's first fire, far enough never to come during a test."""
ADD = {"a": 1, "b": 2}


def test_the_three_interfaces_set_priorities_alike(interfaces: Interfaces) -> None:
    """A submit's, a schedule's (created, then changed) and a workflow run's priority, given
    through the CLI, the HTTP API and MCP, is the one the runs get; out of 0..9 each refuses
    it, naming the field."""
    c = interfaces.cluster
    headers = {"Authorization": f"Bearer {interfaces.tokens[ADMIN.id]}"}
    api = httpx.Client(base_url=f"{interfaces.serve.url}/api/v1", headers=headers, timeout=60)
    runs: dict[str, str] = {}
    schedules: dict[str, str] = {}
    flows: dict[str, str] = {}

    def cli(*args: str) -> Any:
        return interfaces.cli(ADMIN, [*args, "--json"]).data

    add = json.dumps(ADD)
    runs["cli"] = cli("submit", "examples.add", "--input", add, "--priority", "9")["id"]
    every = ["--every", "1h", "--start", FAR, "--input", add]
    schedules["cli"] = cli("schedules", "create", "examples.add", *every, "--priority", "2")["id"]
    cli("schedules", "update", schedules["cli"], "--priority", "3")
    flows["cli"] = cli("workflows", "submit", "examples.diamond", "--priority", "1")["id"]
    bad_cli = interfaces.cli(ADMIN, ["submit", "examples.add", "--priority", "10"])

    def post(path: str, body: dict[str, Any]) -> Any:
        return api.post(path, json=body).json()

    runs["http"] = post("/jobs/examples.add/runs", {"input": ADD, "priority": 9})["run_id"]
    body = {"job": "examples.add", "kind": "every", "every": 3600, "start_at": FAR, "input": ADD}
    schedules["http"] = post("/schedules", {**body, "priority": 2})["id"]
    api.patch(f"/schedules/{schedules['http']}", json={"options": {"priority": 3}})
    flows["http"] = post("/workflows/examples.diamond/runs", {"priority": 1})["workflow_run_id"]
    bad_http = api.post("/jobs/examples.add/runs", json={"input": ADD, "priority": 10})
    bad_schedule = api.post("/schedules", json={**body, "priority": -1})

    bad_mcp: list[Answer] = []

    async def ask_mcp() -> None:
        async with http_session(f"{interfaces.serve.url}/mcp", interfaces.tokens[ADMIN.id]) as s:

            async def call(tool: str, **arguments: Any) -> Any:
                return (await interfaces.mcp(s, tool, arguments)).data

            ran = await call(
                "execute_job", job="examples.add", input=ADD, mode="background", priority=9
            )
            runs["mcp"] = ran["run_id"]
            when = {"every": 3600, "start": FAR}
            made = await call(
                "job_create", job="examples.add", input=ADD, schedule=when, priority=2
            )
            schedules["mcp"] = made["schedule"]["schedule_id"]
            await call("job_update", id=schedules["mcp"], priority=3)
            started = await call("job_create", job="examples.diamond", priority=1)
            flows["mcp"] = started["workflow_run_id"]
            bad = {"job": "examples.add", "priority": 10}
            bad_mcp.append(await interfaces.mcp(s, "execute_job", bad))

    anyio.run(ask_mcp)
    for how in ("cli", "http", "mcp"):
        assert c.store.get(runs[how]).priority == 9, how
        schedule = c.store.schedules.get(schedules[how])
        assert schedule.version == 2 and schedule.options["priority"] == 3, how
        (first,) = c.client.workflows.steps(flows[how])["numbers"].runs
        assert first.priority == 1, how
    assert bad_cli.code == 2 and "--priority" in str(bad_cli.error)
    assert bad_http.status_code == 422 and bad_schedule.status_code == 422
    assert [f["loc"] for f in bad_http.json()["error"]["fields"]] == [["priority"]]
    assert bad_mcp[0].error == "InvalidArguments"
