"""Webhook subscriptions (``jobsys subscriptions ...``, ``/api/v1/subscriptions``, the
``subscription_*`` MCP tools) as an attacker would try them: subscribing to runs one may not
read, or to a whole tenant without an admin role, is refused on every interface and audited;
another tenant's subscription is not found on every interface; only its creator or an admin
deletes one; the secret is never listed; and a subscription is told of its own tenant's runs
only. (The access matrix leaves subscriptions to this file, which checks each interface with
the roles and tenants that tell the rules apart.)"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from jobsys import Principal, RunState
from jobsys.base import errors
from jobsys.declare import cadence
from jobsys.mcp import tools
from jobsys.service import client
from tests import cli_runner
from tests.cluster import Cluster, cluster
from tests.servers import Serve, free_port
from tests.waiting import NotYet, eventually

pytestmark = [pytest.mark.integration, pytest.mark.interface]

ADA = Principal(id="ada", roles=("admin",), tenant="p1")
OPAL = Principal(id="opal", roles=("operator",), tenant="p1")
VIC = Principal(id="vic", roles=(), tenant="p1")
"""May read runs of ``tests.operated``, not of ``examples.admin_only``; no admin role."""
BOB = Principal(id="bob", roles=("admin",), tenant="p2")


@pytest.fixture(scope="module")
def hooked(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[tuple[Cluster, str]]:
    port = free_port()  # nothing listens: deliveries wait in the outbox
    env = {"JOBSYS_WEBHOOK_HOSTS": f"127.0.0.1:{port}", "JOBSYS_NOTIFY_SECONDS": "0.2"}
    with cluster(tmp_path_factory.mktemp("subs"), redis_url, database_url, **env) as c:
        c.start_worker("w1", concurrency=2)
        yield c, f"http://127.0.0.1:{port}/hook"


@pytest.fixture(scope="module")
def server(hooked: tuple[Cluster, str]) -> Iterator[tuple[Serve, dict[str, str]]]:
    c, _ = hooked
    tokens = {p.id: c.client.admin.create_token(p)[1] for p in (ADA, OPAL, VIC, BOB)}
    with Serve(c) as serve:
        yield serve, tokens


def as_(c: Cluster, who: Principal) -> client.Client:
    return client.Client(c.settings, c.registry, principal=who, store=c.store, app=c.client.app)


def http(serve: Serve, token: str) -> httpx.Client:
    return httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {token}"})


def cli(c: Cluster, token: str, *argv: str) -> tuple[int, str]:
    done = cli_runner.run(c.env, [*argv, "--token", token])
    return done.returncode, done.stdout + done.stderr


def test_subscribing_to_runs_one_may_not_read_is_refused_on_every_interface(
    hooked: tuple[Cluster, str], server: tuple[Serve, dict[str, str]]
) -> None:
    c, url = hooked
    serve, tokens = server
    refused = [
        {"job": "examples.admin_only"},  # VIC may not read its runs
        {},  # the whole tenant: admins only
    ]
    for scope in refused:
        body = {"url": url, "events": ["completed"], **scope}
        with http(serve, tokens["vic"]) as api:
            answer = api.post("/api/v1/subscriptions", json=body)
            assert answer.status_code == 403, (scope, answer.text)
        with pytest.raises(errors.PermissionDenied):
            tools.call(as_(c, VIC), "subscription_create", body)
        argv = ["subscriptions", "create", "--url", url, "--event", "completed"]
        if scope:
            argv += ["--job", "examples.admin_only"]
        code, said = cli(c, tokens["vic"], *argv)
        assert code == 3 and "permission denied" in said, said
    assert as_(c, ADA).subscriptions.list() == []
    denied = {(e.principal_id, e.action) for e in c.client.admin.audit_log("denied", 100)}
    assert ("vic", "create subscription") in denied and ("vic", "read") in denied

    # What VIC may read, it may subscribe to, on each interface; an admin to the tenant.
    with http(serve, tokens["vic"]) as api:
        made = api.post(
            "/api/v1/subscriptions",
            json={"url": url, "events": ["failed"], "job": "tests.operated"},
        )
        assert made.status_code == 201, made.text
        assert made.json()["secret"].startswith("whsec_")
    by_mcp = tools.call(
        as_(c, VIC),
        "subscription_create",
        {"url": url, "events": ["completed"], "job": "tests.operated"},
    )
    code, said = cli(
        c, tokens["ada"], "subscriptions", "create", "--url", url, "--event", "completed", "--json"
    )
    assert code == 0, said
    tenant_wide = json.loads(said)
    assert tenant_wide["scope"] == "tenant" and tenant_wide["secret"].startswith("whsec_")
    # VIC sees its own two, not the admin's tenant-wide one; the admin sees all three.
    with http(serve, tokens["vic"]) as api:
        listed = api.get("/api/v1/subscriptions").json()["subscriptions"]
    assert {s["id"] for s in listed} == {made.json()["id"], by_mcp["id"]}
    assert "secret" not in json.dumps(listed)
    assert len(as_(c, ADA).subscriptions.list()) == 3
    with pytest.raises(errors.PermissionDenied):
        as_(c, VIC).subscriptions.get(tenant_wide["id"])
    for sub in as_(c, ADA).subscriptions.list():
        as_(c, ADA).subscriptions.delete(sub.id)


def test_another_tenants_subscription_is_not_found_and_only_the_owner_or_an_admin_deletes(
    hooked: tuple[Cluster, str], server: tuple[Serve, dict[str, str]]
) -> None:
    c, url = hooked
    serve, tokens = server
    mine = as_(c, VIC).subscribe(url, ["completed"], job="tests.operated").subscription
    with http(serve, tokens["bob"]) as bob:
        assert bob.get("/api/v1/subscriptions").json()["subscriptions"] == []
        for method, path in (
            ("GET", f"/api/v1/subscriptions/{mine.id}"),
            ("DELETE", f"/api/v1/subscriptions/{mine.id}"),
            ("POST", f"/api/v1/subscriptions/{mine.id}/test"),
            ("GET", f"/api/v1/subscriptions/{mine.id}/deliveries"),
        ):
            answer = bob.request(method, path)
            assert answer.status_code == 404, (method, path, answer.text)
    for tool in ("subscription_test", "subscription_delete", "subscription_deliveries"):
        with pytest.raises(errors.SubscriptionNotFound):
            tools.call(as_(c, BOB), tool, {"id": mine.id})
    assert tools.call(as_(c, BOB), "subscription_list", {}) == {"subscriptions": []}
    for argv in (("test", mine.id), ("delete", mine.id), ("deliveries", mine.id)):
        code, said = cli(c, tokens["bob"], "subscriptions", *argv)
        assert code == 2 and "not found" in said, said
    code, said = cli(c, tokens["bob"], "subscriptions", "list", "--json")
    assert code == 0 and json.loads(said) == []

    # In its tenant: an operator who may read the job sees it, but did not make it.
    with http(serve, tokens["opal"]) as opal:
        assert opal.get(f"/api/v1/subscriptions/{mine.id}").status_code == 200
        assert opal.delete(f"/api/v1/subscriptions/{mine.id}").status_code == 403
    code, said = cli(c, tokens["opal"], "subscriptions", "delete", mine.id)
    assert code == 3, said
    with pytest.raises(errors.PermissionDenied):
        tools.call(as_(c, OPAL), "subscription_delete", {"id": mine.id})
    # A test delivery by the creator; the admin deletes it.
    with http(serve, tokens["vic"]) as vic:
        queued = vic.post(f"/api/v1/subscriptions/{mine.id}/test")
        assert queued.status_code == 202 and queued.json()["event"] == "test", queued.text
    with http(serve, tokens["ada"]) as ada:
        assert ada.delete(f"/api/v1/subscriptions/{mine.id}").status_code == 200
        assert ada.get(f"/api/v1/subscriptions/{mine.id}").status_code == 404


def test_a_tenant_wide_subscription_is_told_of_its_own_tenants_runs_only(
    hooked: tuple[Cluster, str],
) -> None:
    c, url = hooked
    p1 = as_(c, ADA).subscribe(url, ["completed"]).subscription
    p2 = as_(c, BOB).subscribe(url, ["completed"]).subscription
    ours = as_(c, ADA).submit("tests.operated", {"seconds": 0})
    theirs = as_(c, BOB).submit("tests.operated", {"seconds": 0})
    for who, run_id in ((ADA, ours), (BOB, theirs)):
        assert as_(c, who).wait(run_id, 60).state is RunState.COMPLETED

    def both_made() -> bool | NotYet:
        seen = [
            [d.run_id for d in as_(c, who).subscriptions.deliveries(s.id)]
            for who, s in ((ADA, p1), (BOB, p2))
        ]
        return all(seen) or NotYet(seen)

    eventually(both_made, 30, what="a delivery for each tenant's run")
    assert [d.run_id for d in as_(c, ADA).subscriptions.deliveries(p1.id)] == [ours]
    assert [d.run_id for d in as_(c, BOB).subscriptions.deliveries(p2.id)] == [theirs]
    for who, s in ((ADA, p1), (BOB, p2)):
        as_(c, who).subscriptions.delete(s.id)


def test_a_subscription_to_a_workflow_or_a_schedule_is_told_of_their_runs_only(
    hooked: tuple[Cluster, str],
) -> None:
    c, url = hooked
    ada = as_(c, ADA)
    flow = ada.subscribe(url, ["completed"], workflow="tests.chain").subscription
    entry = ada.schedules.create("tests.effect", cadence.every(3600, input={"seconds": 0}))
    fired = ada.subscribe(url, ["completed"], schedule=entry.id).subscription
    workflow_id = ada.workflows.submit("tests.chain", {})
    by_schedule = ada.schedules.trigger(entry.id)
    alone = ada.submit("tests.effect", {"seconds": 0})  # neither: told to nobody
    assert ada.wait(alone, 60).state is RunState.COMPLETED
    assert ada.wait(by_schedule, 60).state is RunState.COMPLETED

    def made() -> bool | NotYet:
        flows = ada.subscriptions.deliveries(flow.id)
        fires = ada.subscriptions.deliveries(fired.id)
        return (len(flows) == 3 and len(fires) == 1) or NotYet((len(flows), len(fires)))

    eventually(made, 60, what="the workflow's three steps and the schedule's run notified")
    steps = ada.subscriptions.deliveries(flow.id)
    assert {d.payload["run"]["workflow_id"] for d in steps} == {workflow_id}
    assert {d.payload["run"]["workflow"] for d in steps} == {"tests.chain"}
    [one] = ada.subscriptions.deliveries(fired.id)
    assert one.run_id == by_schedule and one.payload["run"]["schedule_id"] == entry.id
    assert alone not in {d.run_id for d in steps} | {one.run_id}
    for s in (flow, fired):
        ada.subscriptions.delete(s.id)
    ada.schedules.delete(entry.id)


def test_bad_subscriptions_are_refused_with_the_reason_on_every_interface(
    hooked: tuple[Cluster, str], server: tuple[Serve, dict[str, str]]
) -> None:
    c, url = hooked
    serve, tokens = server
    bad = [
        ({"url": "http://evil.example.com/x", "events": ["completed"]}, "JOBSYS_WEBHOOK_HOSTS"),
        ({"url": url, "events": ["finished"]}, "finished"),
        ({"url": url, "events": ["completed"], "job": "tests.nope"}, "tests.nope"),
    ]
    with http(serve, tokens["ada"]) as api:
        for body, words in bad:
            answer = api.post("/api/v1/subscriptions", json=body)
            assert answer.status_code in (400, 404, 422) and words in answer.text, answer.text
    for body, words in bad:
        with pytest.raises((errors.InvalidInput, errors.UnknownJob)) as caught:
            tools.call(as_(c, ADA), "subscription_create", body)
        # (MCP checks the event against its schema's choices, and names the field)
        assert (words if words != "finished" else "events.0") in str(caught.value)
        argv = ["subscriptions", "create", "--url", str(body["url"])]
        argv += [a for e in body["events"] for a in ("--event", e)]
        if "job" in body:
            argv += ["--job", str(body["job"])]
        code, said = cli(c, tokens["ada"], *argv)
        assert code != 0 and words in said, said
    assert as_(c, ADA).subscriptions.list() == []
