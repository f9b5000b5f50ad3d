"""Pausing and resuming (``jobsys queues ...``, ``jobsys jobs pause|resume``) as an attacker
would try them, through the Python client, the CLI, the HTTP API and the MCP tools: a role
without the right is refused everywhere and the refusal audited; a tenant's admin pauses and
lifts only its own tenant's work, never sees another tenant's pauses, and cannot lift a pause
of every tenant. (The access matrix leaves pauses to this file: a pause made by one of its
cells would hold the runs every other cell acts on.)"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from jobsys import Principal, RunState
from jobsys.base import errors
from jobsys.mcp import tools
from jobsys.service import client
from tests import cli_runner
from tests.cluster import Cluster
from tests.servers import Serve
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration

ADA = Principal(id="ada", roles=("admin",), tenant="p1")
OPAL = Principal(id="opal", roles=("operator",), tenant="p1")
"""May execute, update and delete runs of ``tests.operated``; no ``pause`` rule grants it."""
VIC = Principal(id="vic", roles=(), tenant="p1")
BOB = Principal(id="bob", roles=("admin",), tenant="p2")


def as_(c: Cluster, who: Principal) -> client.Client:
    return client.Client(c.settings, c.registry, principal=who, store=c.store, app=c.client.app)


@pytest.fixture
def server(shared: Cluster) -> Iterator[tuple[Serve, dict[str, str]]]:
    tokens = {p.id: shared.client.admin.create_token(p)[1] for p in (ADA, OPAL, VIC, BOB)}
    with Serve(shared) as serve:
        yield serve, tokens
    shared.client.pauses.resume_all()  # (the local admin lifts whatever a failure left)
    for who in (ADA, BOB):
        as_(shared, who).pauses.resume_all()
        as_(shared, who).pauses.resume_queue("jobs")


def http(serve: Serve, token: str) -> httpx.Client:
    return httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {token}"})


def test_a_role_without_the_right_is_refused_on_every_interface(
    shared: Cluster, server: tuple[Serve, dict[str, str]]
) -> None:
    serve, tokens = server
    for who in (VIC, OPAL):
        with http(serve, tokens[who.id]) as api:
            for path in (
                "/api/v1/queues/jobs/pause",
                "/api/v1/queues/pause",
                "/api/v1/jobs/tests.operated/pause",
                "/api/v1/jobs/tests.operated/resume",
            ):
                answer = api.post(path)
                assert answer.status_code == 403, (who.id, path, answer.text)
            hidden = api.post("/api/v1/jobs/examples.admin_only/pause")
            assert hidden.status_code in (403, 404), hidden.text
        for tool, arguments in (
            ("queue_pause", {"name": "jobs"}),
            ("queue_pause", {"all": True}),
            ("job_pause", {"job": "tests.operated"}),
        ):
            with pytest.raises(errors.PermissionDenied):
                tools.call(as_(shared, who), tool, arguments)
        for argv in (["queues", "pause", "jobs"], ["jobs", "pause", "tests.operated"]):
            refused = cli_runner.run(shared.env, [*argv, "--token", tokens[who.id]])
            assert refused.returncode == 3, (argv, refused.stdout, refused.stderr)
    assert shared.client.pauses.list_pauses() == []  # nothing was paused
    denied = {(e.principal_id, e.action) for e in shared.client.admin.audit_log("denied", 50)}
    assert {("vic", "pause"), ("opal", "pause")} <= denied


def test_a_tenants_admin_pauses_and_sees_only_its_own_tenants_work(
    shared: Cluster, server: tuple[Serve, dict[str, str]]
) -> None:
    serve, tokens = server
    with http(serve, tokens["ada"]) as ada, http(serve, tokens["bob"]) as bob:
        made = ada.post("/api/v1/queues/jobs/pause")
        assert made.status_code == 200 and made.json()["tenant"] == "p1", made.text
        everything = ada.post("/api/v1/queues/pause").json()  # its own tenant's everything
        assert (everything["scope"], everything["tenant"]) == ("all", "p1")
        # p2's admin sees none of p1's pauses, and its queue is not paused for it
        theirs = bob.get("/api/v1/queues").json()["queues"]
        assert not next(q for q in theirs if q["name"] == "jobs")["paused"]
        assert (
            json.loads(
                cli_runner.run(
                    shared.env, ["queues", "list", "--json", "--token", tokens["bob"]]
                ).stdout
            )
            == theirs
        )
        assert tools.call(as_(shared, BOB), "queue_list", {})["pauses"] == []
        # nor can it lift them: resuming answers that nothing of its own was paused
        lifted = bob.post("/api/v1/queues/jobs/resume").json()
        assert (lifted["resumed"], lifted["published"]) == ([], 0)
        assert bob.post("/api/v1/queues/resume").json()["resumed"] == []
        # p2's runs run; p1's are held
        held = as_(shared, ADA).submit("tests.operated", {"seconds": 0})
        free = as_(shared, BOB).submit("tests.operated", {"seconds": 0})
        assert shared.wait_state(free, RunState.COMPLETED, 30).state is RunState.COMPLETED

        def parked() -> bool | NotYet:
            waiting = shared.store.get(held).waiting or {}
            return waiting.get("reason") == "paused" or NotYet(waiting)

        eventually(parked, 30, what="p1's run to be held by p1's pause")
        # a pause of every tenant (the local admin's) is not p1's admin's to lift
        shared.client.pauses.pause_all()
        assert ada.post("/api/v1/queues/resume").json()["still_paused"][0]["tenant"] == "*"
        assert ada.post("/api/v1/queues/jobs/resume").json()["published"] == 0
        assert shared.store.get(held).state is RunState.PENDING
        assert shared.client.pauses.resume_all().published == 1
    assert shared.wait_state(held, RunState.COMPLETED, 30).attempts == 1
