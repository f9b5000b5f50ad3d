"""Jobs registered at runtime belong to a tenant and an owner: each attack a probe made on
them, replayed as it was reported, through the HTTP API (``jobsys serve``) and the MCP tools
(over streamable HTTP and stdio), against a real cluster (Redis, the run store, a worker).

Principals: tenant ``acme`` has the admins ``alice`` (who registers) and ``ada``, and ``bob``
(role ``ops``, not an admin); tenant ``evil`` has ``mallory`` (role ``ops``) and ``eve`` (an
admin of ``evil`` only).
"""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from jobsys.declare import permissions
from jobsys.mcp.names import tool_name
from jobsys.store import tokens
from tests import cli_runner
from tests.cluster import Cluster, cluster
from tests.integration.mcp_support import http_session, stdio_session
from tests.servers import Serve
from tests.waiting import NotYet, eventually

pytestmark = [pytest.mark.integration, pytest.mark.interface]

ALICE = permissions.Principal(id="alice", roles=("admin",), tenant="acme")
ADA = permissions.Principal(id="ada", roles=("admin",), tenant="acme")
BOB = permissions.Principal(id="bob", roles=("ops",), tenant="acme")
MALLORY = permissions.Principal(id="mallory", roles=("ops",), tenant="evil")
EVE = permissions.Principal(id="eve", roles=("admin",), tenant="evil")
EVERYONE = (ALICE, ADA, BOB, MALLORY, EVE)

SECRET = "Bearer acme-sentinel-7f3c9e"
"""The credential alice's HTTP job carries: no reader may ever see it."""
META = "acme-meta-sentinel-51d2"


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers what it was sent (headers included, as a careless endpoint would); keeps the
    Authorization headers it saw."""

    seen: list[str | None] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(self.headers.get("Authorization"))
        answer = json.dumps(
            {
                "body": json.loads(body or b"null"),
                "path": self.path,
                "headers": dict(self.headers.items()),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_POST = do_GET = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


class Api(Serve):
    """``jobsys serve`` with a token per principal."""

    def __init__(self, c: Cluster) -> None:
        store = tokens.TokenStore(c.store.engine)
        self.tokens = {p.id: store.create(p, "test")[1] for p in EVERYONE}
        super().__init__(c)

    def as_(self, who: permissions.Principal) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who.id]}"}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=60)


@pytest.fixture(scope="module")
def c(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[Cluster]:
    tmp: Path = tmp_path_factory.mktemp("defs-tenancy")
    with cluster(tmp, redis_url, database_url, JOBSYS_HTTP_JOB_HOSTS="127.0.0.1") as cl:
        cl.start_worker("w1", concurrency=2)
        yield cl


@pytest.fixture(scope="module")
def api(c: Cluster) -> Iterator[Api]:
    with Api(c) as server:
        yield server
    assert "Traceback" not in server.log(), server.tail()


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60) -> Any:
    """``fetch()`` again until ``done`` says its answer is final; that answer."""

    def final() -> list[Any] | NotYet:
        value = fetch()
        return [value] if done(value) else NotYet(value)

    return eventually(final, timeout, what="a final answer")[0]


def run_to_end(http: httpx.Client, job: str, input: dict[str, Any]) -> dict[str, Any]:
    made = http.post(f"/jobs/{job}/runs", json={"input": input})
    assert made.status_code == 202, made.text
    run_id = made.json()["run_id"]
    return dict(
        poll(
            lambda: http.get(f"/runs/{run_id}").json(),
            lambda r: r["state"] in ("completed", "failed", "cancelled"),
        )
    )


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


def register(http: httpx.Client, data: dict[str, Any], status: int = 201) -> dict[str, Any]:
    answer = http.post("/definitions", json=data)
    assert answer.status_code == status, answer.text
    return dict(answer.json())


# --- reads -----------------------------------------------------------------------------------


def test_another_tenant_reads_none_of_the_definitions(api: Api, echo: str) -> None:
    name, alias = unique("acme.billing"), unique("acme.add")
    with api.as_(ALICE) as alice, api.as_(MALLORY) as mallory, api.as_(EVE) as eve:
        register(
            alice,
            {
                "name": name,
                "kind": "http",
                "url": f"{echo}/bill",
                "secret_headers": {"Authorization": SECRET},
            },
        )
        register(
            alice,
            {"name": alias, "kind": "alias", "target": "examples.add", "metadata": {"m": META}},
        )
        for stranger in (mallory, eve):  # a non-admin and an admin of another tenant
            assert stranger.get(f"/definitions/{name}").status_code == 404
            assert stranger.get(f"/definitions/{alias}").status_code == 404
            assert stranger.get(f"/jobs/{alias}").status_code == 404
            for path in ("/definitions", "/jobs?all=true", "/workflows"):
                text = stranger.get(path).text
                assert name not in text and alias not in text and META not in text, path
            assert stranger.post(f"/jobs/{alias}/runs", json={"input": {}}).status_code == 404
        # Its own tenant reads it, the credential masked.
        shown = alice.get(f"/definitions/{name}")
        assert shown.status_code == 200 and SECRET not in shown.text
        assert shown.json()["secret_headers"] == {"Authorization": "**********"}
        assert shown.json()["tenant"] == "acme" and shown.json()["owner"] == "alice"
        assert SECRET not in alice.get("/definitions").text
        assert alice.get(f"/definitions/{alias}").json()["metadata"] == {"m": META}


def test_the_credential_is_sealed_at_rest_and_sent_by_the_worker(
    api: Api, c: Cluster, echo: str
) -> None:
    name = unique("acme.hook")
    with api.as_(ALICE) as alice:
        register(
            alice,
            {
                "name": name,
                "kind": "http",
                "url": f"{echo}/hook",
                "secret_headers": {"Authorization": SECRET},
                "max_attempts": 1,
            },
        )
        run = run_to_end(alice, name, {})
    assert run["state"] == "completed", run
    assert SECRET in _Echo.seen  # the worker opened the seal
    # The endpoint echoed the header back: the run's output shows it masked.
    assert run["output"]["body"]["headers"]["Authorization"] == "**********"
    assert SECRET not in json.dumps(run)
    with c.store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM jobsys_job_definitions").fetchall()
    assert SECRET not in repr(rows)


def test_a_credential_in_plain_headers_is_refused(api: Api, echo: str) -> None:
    with api.as_(ALICE) as alice:
        refused = register(
            alice,
            {
                "name": unique("acme.plain"),
                "kind": "http",
                "url": f"{echo}/x",
                "headers": {"Authorization": SECRET},
            },
            status=422,
        )
    assert ["headers", "Authorization"] in [f["loc"] for f in refused["error"]["fields"]]
    assert "secret_headers" in refused["error"]["message"]


# --- replacing and removing ------------------------------------------------------------------


def test_another_tenant_cannot_replace_or_remove_a_definition(api: Api) -> None:
    name = unique("acme.add")
    with api.as_(ALICE) as alice, api.as_(MALLORY) as mallory:
        register(alice, {"name": name, "kind": "alias", "target": "examples.add"})
        # The reported attack: same name from another tenant. It is mallory's own job now.
        theirs = register(
            mallory,
            {"name": name, "kind": "alias", "target": "examples.add", "defaults": {"b": 1000}},
        )
        assert theirs["version"] == 1 and theirs["tenant"] == "evil"
        assert mallory.delete(f"/definitions/{name}").status_code == 200  # mallory's
        assert mallory.delete(f"/definitions/{name}").status_code == 404  # alice's: not found
        mine = alice.get(f"/definitions/{name}").json()
        assert mine["version"] == 1 and mine["owner"] == "alice" and not mine["defaults"]
        assert run_to_end(alice, name, {"a": 1, "b": 2})["output"] == 3


def test_only_the_owner_or_an_admin_of_the_tenant_replaces_or_removes(api: Api) -> None:
    name = unique("acme.add")
    with api.as_(ALICE) as alice, api.as_(BOB) as bob, api.as_(ADA) as ada:
        register(alice, {"name": name, "kind": "alias", "target": "examples.add"})
        refused = register(
            bob, {"name": name, "kind": "alias", "target": "examples.add"}, status=403
        )
        assert refused["error"]["type"] == "NotOwner" and "alice" in refused["error"]["message"]
        assert bob.delete(f"/definitions/{name}").status_code == 403
        assert alice.get(f"/definitions/{name}").json()["version"] == 1
        replaced = register(
            ada, {"name": name, "kind": "alias", "target": "examples.add", "defaults": {"b": 1}}
        )
        assert replaced["version"] == 2 and replaced["owner"] == "alice"
        assert replaced["created_by"] == "ada"
        assert ada.delete(f"/definitions/{name}").status_code == 200
        # Once removed, the name is free again in the tenant: bob registers it as his.
        again = register(bob, {"name": name, "kind": "alias", "target": "examples.add"})
        assert again["owner"] == "bob"
        assert bob.delete(f"/definitions/{name}").status_code == 200


def test_a_schedule_runs_its_own_tenants_definition(api: Api) -> None:
    """Reported: re-registering the name of an admin's scheduled alias made the admin's
    schedule run the attacker's target with the attacker's input."""
    name = unique("acme.tick")
    with api.as_(ALICE) as alice, api.as_(MALLORY) as mallory, api.as_(BOB) as bob:
        register(
            alice,
            {
                "name": name,
                "kind": "alias",
                "target": "examples.add",
                "defaults": {"a": 1, "b": 1},
                "schedule": {"every": 3600},
            },
        )
        register(
            mallory,
            {
                "name": name,
                "kind": "alias",
                "target": "examples.add",
                "defaults": {"a": 500, "b": 500},
            },
        )
        register(
            bob,
            {"name": name, "kind": "alias", "target": "examples.add", "defaults": {"a": 9}},
            status=403,
        )
        (sched,) = alice.get("/schedules", params={"job": name}).json()["schedules"]
        fired = alice.post(f"/schedules/{sched['id']}/trigger")
        assert fired.status_code in (200, 202), fired.text
        run_id = fired.json()["run_id"]
        run = poll(lambda: alice.get(f"/runs/{run_id}").json(), lambda r: r["state"] == "completed")
        assert run["output"] == 2 and run["principal_id"] == "alice"
        assert mallory.get("/schedules", params={"job": name}).json()["schedules"] == []


def test_a_run_executes_its_own_tenants_definition(api: Api) -> None:
    """Two tenants, one name: the worker runs the definition of the run's tenant."""
    name = unique("shared.add")
    with api.as_(ALICE) as alice, api.as_(MALLORY) as mallory:
        for http, b in ((alice, 100), (mallory, 1000)):
            register(
                http,
                {"name": name, "kind": "alias", "target": "examples.add", "defaults": {"b": b}},
            )
        assert run_to_end(alice, name, {"a": 1})["output"] == 101
        assert run_to_end(mallory, name, {"a": 1})["output"] == 1001


def test_a_workflow_names_jobs_of_its_own_tenant_only(api: Api) -> None:
    name = unique("acme.only")
    with api.as_(ALICE) as alice, api.as_(MALLORY) as mallory:
        register(alice, {"name": name, "kind": "alias", "target": "examples.add"})
        flow = {
            "name": unique("evil.flow"),
            "kind": "workflow",
            "workflow": {"steps": [{"name": "s", "job": name, "input": {"a": 1, "b": 1}}]},
        }
        refused = register(mallory, flow, status=422)
        assert "unknown job" in refused["error"]["message"]
        adhoc = mallory.post(
            "/workflow-runs", json={"workflow": {**flow["workflow"], "name": "x"}, "input": {}}
        )
        assert adhoc.status_code in (404, 422), adhoc.text
        register(alice, {**flow, "name": unique("acme.flow")})


# --- what a run may set in an HTTP job -------------------------------------------------------


def test_a_run_sets_only_what_the_definition_allows(api: Api, echo: str) -> None:
    locked, open_ = unique("acme.locked"), unique("acme.open")
    with api.as_(ALICE) as alice, api.as_(BOB) as bob:
        register(
            alice,
            {
                "name": locked,
                "kind": "http",
                "url": f"{echo}/locked?account=acme",
                "secret_headers": {"Authorization": SECRET},
                "max_attempts": 1,
            },
        )
        for attempt in (
            {"body": {"amount": 10**6}},
            {"query": {"account": "evil"}},
            {"headers": {"Authorization": "Bearer mallory"}},
            {"headers": {"Host": "evil.example"}},
        ):
            refused = bob.post(f"/jobs/{locked}/runs", json={"input": attempt})
            assert refused.status_code == 422, (attempt, refused.text)
            assert refused.json()["error"]["fields"][0]["loc"][0] == next(iter(attempt))
        assert run_to_end(bob, locked, {})["output"]["body"]["path"] == "/locked?account=acme"

        register(
            alice,
            {
                "name": open_,
                "kind": "http",
                "url": f"{echo}/open?account=acme",
                "secret_headers": {"Authorization": SECRET},
                "overridable": ["body", "query"],
                "caller_headers": ["X-Trace"],
                "max_attempts": 1,
            },
        )
        for attempt in (
            {"query": {"account": "evil"}},  # a parameter of the URL stays
            {"headers": {"Authorization": "Bearer mallory"}},
        ):
            refused = bob.post(f"/jobs/{open_}/runs", json={"input": attempt})
            assert refused.status_code == 422, (attempt, refused.text)
        done = run_to_end(
            bob,
            open_,
            {"body": {"n": 1}, "query": {"page": "2"}, "headers": {"X-Trace": "t1"}},
        )
        out = done["output"]["body"]
        assert out["body"] == {"n": 1} and out["path"] == "/open?account=acme&page=2"
        assert out["headers"]["X-Trace"] == "t1"
        assert out["headers"]["Authorization"] == "**********"
        # Neither a definition's own header nor a credential may be made overridable.
        for caller in (["Authorization"], ["authorization"], ["Host"], ["X-Api-Key"]):
            refused = register(
                alice,
                {
                    "name": unique("acme.bad"),
                    "kind": "http",
                    "url": f"{echo}/x",
                    "secret_headers": {"Authorization": SECRET},
                    "caller_headers": caller,
                },
                status=422,
            )
            assert refused["error"]["fields"][0]["loc"][0] == "caller_headers"


def test_registering_again_as_read_keeps_the_sealed_value(api: Api, echo: str) -> None:
    name = unique("acme.again")
    with api.as_(ALICE) as alice:
        register(
            alice,
            {
                "name": name,
                "kind": "http",
                "url": f"{echo}/again",
                "secret_headers": {"Authorization": SECRET},
                "max_attempts": 1,
            },
        )
        shown = alice.get(f"/definitions/{name}").json()
        again = register(alice, {**shown, "description": "v2"})
        assert again["version"] == 2
        _Echo.seen.clear()
        assert run_to_end(alice, name, {})["state"] == "completed"
        assert _Echo.seen == [SECRET]
        fresh = register(
            alice,
            {
                "name": unique("acme.none"),
                "kind": "http",
                "url": f"{echo}/x",
                "secret_headers": {"Authorization": "**********"},
            },
            status=422,
        )
        assert fresh["error"]["fields"][0]["loc"] == ["secret_headers", "Authorization"]


# --- MCP -------------------------------------------------------------------------------------


async def _tools(s: Any) -> set[str]:
    return {t.name for t in (await s.list_tools()).tools}


async def _call(s: Any, tool: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
    result = await s.call_tool(tool, arguments)
    return result.is_error, result.structured_content


def test_mcp_over_http_shows_and_runs_a_tenants_own_jobs(api: Api) -> None:
    name = unique("acme.tool")
    with api.as_(ALICE) as alice:
        register(
            alice,
            {"name": name, "kind": "alias", "target": "examples.add", "defaults": {"b": 10}},
        )

    async def main() -> None:
        async with http_session(f"{api.url}/mcp", api.tokens["mallory"]) as s:
            assert tool_name(name) not in await _tools(s)
            error, listed = await _call(s, "list_jobs", {})
            assert not error and name not in {j["name"] for j in listed["jobs"]}
            error, answer = await _call(s, "execute_job", {"job": name, "input": {"a": 1}})
            assert error and answer["error"]["type"] == "UnknownJob"
            # Registering the name makes mallory's own job; alice's is untouched.
            error, made = await _call(
                s,
                "register_job",
                {"name": name, "kind": "alias", "target": "examples.add", "defaults": {"b": 1}},
            )
            assert not error and made["registered"]["tenant"] == "evil"
            error, _ = await _call(s, "remove_job", {"name": name})
            assert not error
            error, _ = await _call(s, "remove_job", {"name": name})
            assert error
        async with http_session(f"{api.url}/mcp", api.tokens["bob"]) as s:
            assert tool_name(name) in await _tools(s)
            error, _ = await _call(s, "remove_job", {"name": name})
            assert error  # bob is not its owner
            error, ran = await _call(s, tool_name(name), {"a": 1})
            assert not error and ran["output"] == 11, ran

    anyio.run(main)


def test_mcp_over_stdio_shows_a_tenants_own_jobs(api: Api, c: Cluster) -> None:
    name = unique("acme.stdio")
    with api.as_(ALICE) as alice:
        register(alice, {"name": name, "kind": "alias", "target": "examples.add"})

    async def main() -> None:
        env = {**c.env, "JOBSYS_TOKEN": api.tokens["eve"]}
        async with stdio_session(env, c.tmp / "mcp-stdio-eve.log") as s:
            assert tool_name(name) not in await _tools(s)
            error, listed = await _call(s, "list_jobs", {})
            assert not error and name not in json.dumps(listed)
        env = {**c.env, "JOBSYS_TOKEN": api.tokens["bob"]}
        async with stdio_session(env, c.tmp / "mcp-stdio-bob.log") as s:
            assert tool_name(name) in await _tools(s)

    anyio.run(main)


# --- CLI -------------------------------------------------------------------------------------


def test_the_cli_lists_a_tenants_own_jobs(api: Api, c: Cluster) -> None:
    name = unique("acme.cli")
    with api.as_(ALICE) as alice:
        register(alice, {"name": name, "kind": "alias", "target": "examples.add"})
    # In-process (the same click commands, without a process's second of start-up), but for
    # one real ``python -m jobsys`` of another tenant's admin.
    for who, sees in (("mallory", False), ("eve", False), ("bob", True)):
        env = {**c.env, "JOBSYS_TOKEN": api.tokens[who]}
        for argv in (["jobs", "definitions", "--json"], ["jobs", "list", "--json"]):
            done = cli_runner.run(env, argv, process=(who, argv[1]) == ("eve", "list"))
            assert done.returncode == 0, done.stderr
            assert (name in done.stdout) is sees, (who, argv)


def test_another_tenant_sees_no_queue_of_the_runtime_jobs(api: Api, echo: str) -> None:
    """A runtime job's queue is the tenant's own: another tenant's admin does not see it
    named in its queue list nor in its stats."""
    name, queue = unique("acme.queued"), unique("acme-private-queue").replace("_", "-")
    with api.as_(ALICE) as alice, api.as_(EVE) as eve:
        register(alice, {"name": name, "kind": "http", "url": f"{echo}/q", "queue": queue})
        assert queue in alice.get("/queues").text
        listed = eve.get("/queues")
        assert listed.status_code == 200 and queue not in listed.text, listed.text
        stats = eve.get("/stats")
        assert stats.status_code == 200 and queue not in stats.text, stats.text


def test_another_tenant_sees_no_backlog_of_the_runtime_jobs_in_the_overview(
    api: Api, echo: str
) -> None:
    """The overview's queue depth counts the caller's queues: a backlog on acme's private
    queue (no worker consumes it) shows in acme's series and in no series of evil."""
    name, queue = unique("acme.backlog"), unique("acme-backlog").replace("_", "-")
    backlog = 25
    with api.as_(ALICE) as alice, api.as_(EVE) as eve, api.as_(MALLORY) as mallory:
        register(alice, {"name": name, "kind": "http", "url": f"{echo}/q", "queue": queue})
        for _ in range(backlog):
            made = alice.post(f"/jobs/{name}/runs", json={"input": {}})
            assert made.status_code == 202, made.text
        ours = poll(
            lambda: alice.get("/stats/series").json(),
            lambda s: (s["samples"]["queued"][-1] or 0) >= backlog,
        )
        for stranger in (eve, mallory):  # an admin of evil and a non-admin
            theirs = poll(
                lambda s=stranger: s.get("/stats/series").json(),
                lambda s: s["at"] >= ours["at"],  # computed from the sample acme saw, or later
            )
            queued = [q for q in theirs["samples"]["queued"] if q is not None]
            assert queued and max(queued) < backlog, theirs["samples"]
            assert max(w or 0 for w in theirs["samples"]["workers"]) >= 1  # shared: shown
