"""Pausing and resuming a queue, a job or everything (README "Pausing queues and jobs"), on a
real broker with one worker node of two processes, shared by the module.

While paused, no run the pause covers starts: each message is taken and its run parked
(pending, no message, ``waiting.reason == "paused"``); nothing is lost, running runs finish.
Resuming publishes the parked runs, highest priority first; a reaper publishes them too when
the pause is gone and no one published them. The CLI, the HTTP API and the MCP tools show and
steer the same pauses; a tenant's admin pauses its own tenant's runs only.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from jobsys import Principal
from jobsys.base import errors
from jobsys.mcp import tools
from jobsys.service.client import Client, SubmitOptions
from jobsys.store import pauses, runs, schema, stores
from jobsys.store.runs import RunState
from jobsys.worker import execute
from tests import cli_runner
from tests.cluster import Cluster
from tests.integration.test_http_api import ApiServer
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration

PRIORITIES = (0, 3, 5, 7, 9)
PER_PRIORITY = 4
ACME_ADMIN = Principal(id="ann", roles=("admin",), tenant="acme")
ACME_VIEWER = Principal(id="val", roles=(), tenant="acme")


@pytest.fixture(autouse=True)
def unpaused(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test on the cluster ends with nothing paused and nothing parked."""
    yield
    if "shared" not in request.fixturenames:
        return
    c: Cluster = request.getfixturevalue("shared")
    with c.store.engine.begin() as conn:
        conn.execute(sa.delete(schema.pauses))
    c.client.pauses.resume_all()  # publishes whatever is still parked


@pytest.fixture(scope="module")
def server(shared: Cluster) -> Iterator[ApiServer]:
    with ApiServer(shared) as s:
        yield s


def as_principal(c: Cluster, who: Principal) -> Client:
    return Client(c.settings, c.registry, principal=who)


def parked(c: Cluster, run_ids: list[str], timeout: float = 30) -> None:
    """Wait until every run is parked by a pause (its message taken, the run pending)."""

    def all_parked() -> bool | NotYet:
        waiting = {r: c.store.get(r).waiting for r in run_ids}
        held = [r for r, w in waiting.items() if (w or {}).get("reason") == "paused"]
        return len(held) == len(run_ids) or NotYet(waiting)

    eventually(all_parked, timeout, what="every run to be parked by the pause")


def starts(c: Cluster, run_ids: list[str]) -> list[tuple[float, str, int]]:
    """The first execution of each run: (time it started, run id, process id), in order."""
    found = []
    for run_id in run_ids:
        path = c.effects / run_id
        if path.exists():
            _, pid, at, *_ = path.read_text().splitlines()[0].split()
            found.append((float(at), run_id, int(pid)))
    return sorted(found)


def test_a_paused_queue_starts_nothing_loses_nothing_and_resumes_by_priority(
    shared: Cluster,
) -> None:
    c = shared
    running = c.client.submit("tests.effect", {"seconds": 1.0})
    c.wait_state(running, RunState.RUNNING, 30)
    pause = c.client.pauses.pause_queue("jobs")
    assert (pause.scope, pause.name, pause.paused_by) == ("queue", "jobs", "local")
    order = [p for p in PRIORITIES for _ in range(PER_PRIORITY)]
    random.Random(7).shuffle(order)
    made = [
        (c.client.submit("tests.effect", {"seconds": 0.05}, SubmitOptions(priority=p)), p)
        for p in order
    ]
    ids = [r for r, _ in made]
    parked(c, ids)
    # the run that was running finished; none of the paused ones started
    assert c.wait_state(running, RunState.COMPLETED, 30).state is RunState.COMPLETED
    assert starts(c, ids) == []
    assert {c.store.get(r).state for r in ids} == {RunState.PENDING}
    assert c.queue_length() == 0  # their messages are gone: the record is what holds them
    jobs_queue = next(q for q in c.client.pauses.queues() if q.name == "jobs")
    assert jobs_queue.paused and (jobs_queue.waiting, jobs_queue.parked) == (20, 20)

    resumed = c.client.pauses.resume_queue("jobs")
    assert [p.name for p in resumed.resumed] == ["jobs"] and resumed.published == 20
    records = c.wait_all(ids, timeout=60)
    assert {r.state for r in records} == {RunState.COMPLETED}
    assert [c.executions(r) for r in ids] == [1] * 20  # nothing lost, nothing twice
    expected = [r for r, _ in sorted(made, key=lambda m: -m[1])]  # then in submitted order
    observed = starts(c, ids)
    for pid in {p for _, _, p in observed}:  # each process took them by priority
        mine = [r for _, r, p in observed if p == pid]
        assert mine == [r for r in expected if r in mine]
    place = {r: i for i, r in enumerate(expected)}
    assert all(abs(place[r] - i) <= 1 for i, (_, r, _) in enumerate(observed)), observed


def test_a_paused_job_holds_only_its_own_runs(shared: Cluster) -> None:
    c = shared
    c.client.pauses.pause_job("tests.urgent")
    held = c.client.submit("tests.urgent", {})
    free = c.client.submit("tests.effect", {})
    assert c.wait_state(free, RunState.COMPLETED, 30).state is RunState.COMPLETED
    parked(c, [held])
    assert c.store.get(held).state is RunState.PENDING
    assert [p.scope for p in c.client.pauses.job("tests.urgent")] == ["job"]
    assert c.client.pauses.job("tests.effect") == []
    assert c.client.pauses.resume_job("tests.urgent").published == 1
    assert c.wait_state(held, RunState.COMPLETED, 30).attempts == 1


def test_reapers_publish_parked_runs_whose_pause_is_gone(shared: Cluster) -> None:
    """A resumer that died after deleting the pause: a reaper's pass publishes the runs. A
    delayed run due while everything is paused waits too."""
    c = shared
    c.client.pauses.pause_all()
    now = c.client.submit("tests.effect", {})
    later = c.client.submit("tests.effect", {}, SubmitOptions(countdown=1.0))
    parked(c, [now, later])
    assert c.store.pauses.resume("all", "", None)[0]  # deleted, nothing published
    records = c.wait_all([now, later], timeout=30)
    assert [(r.state, r.attempts) for r in records] == [(RunState.COMPLETED, 1)] * 2


def test_a_tenants_admin_pauses_its_own_tenants_runs_only(shared: Cluster) -> None:
    c = shared
    acme = as_principal(c, ACME_ADMIN)
    viewer = as_principal(c, ACME_VIEWER)
    with pytest.raises(errors.PermissionDenied):
        viewer.pauses.pause_queue("jobs")
    with pytest.raises(errors.PermissionDenied):
        viewer.pauses.pause_job("tests.effect")
    pause = acme.pauses.pause_queue("jobs")
    assert pause.tenant == "acme"
    theirs = acme.submit("tests.effect", {})
    ours = c.client.submit("tests.effect", {})
    assert c.wait_state(ours, RunState.COMPLETED, 30).state is RunState.COMPLETED
    parked(c, [theirs])
    # a global pause (the local admin's) is not the tenant admin's to lift
    c.client.pauses.pause_all()
    done = acme.pauses.resume_all()
    assert done.resumed == [] and [p.tenant for p in done.still_paused] == ["*"]
    assert [(p.scope, p.tenant) for p in acme.pauses.list_pauses()] == [
        ("all", "*"),
        ("queue", "acme"),
    ]
    assert acme.pauses.resume_queue("jobs").published == 0  # everything is still paused
    assert c.store.get(theirs).state is RunState.PENDING
    assert c.client.pauses.resume_all().published == 1
    assert c.wait_state(theirs, RunState.COMPLETED, 30).attempts == 1
    denied = [(e.principal_id, e.action) for e in c.client.admin.audit_log("denied", 20)]
    assert ("val", "pause") in denied
    allowed = [(e.principal_id, e.action, e.target) for e in c.client.admin.audit_log("allowed")]
    assert ("ann", "pause", "queue jobs") in allowed and ("ann", "resume", "everything") in allowed


def test_every_interface_shows_and_steers_the_same_pauses(
    shared: Cluster, server: ApiServer
) -> None:
    c = shared
    cli = cli_runner.run(c.env, ["queues", "pause", "jobs", "--json"])
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["name"] == "jobs"
    run_id = c.client.submit("tests.effect", {})
    parked(c, [run_id])
    listed = cli_runner.run(c.env, ["runs", "list", "--job", "tests.effect", "--limit", "1"])
    assert "pending (paused)" in listed.stdout
    # the paused filter, on every path: only the held run, or every run but it
    held = json.loads(cli_runner.run(c.env, ["runs", "list", "--paused", "--json"]).stdout)
    assert [r["id"] for r in held] == [run_id]
    others = cli_runner.run(c.env, ["runs", "list", "--not-paused", "--json", "--limit", "1000"])
    assert run_id not in {r["id"] for r in json.loads(others.stdout)}
    assert [r.id for r in c.client.list(paused=True)] == [run_id]
    mcp_held = tools.call(c.client, "job_list", {"what": "runs", "paused": True})["runs"]
    assert [r["run_id"] for r in mcp_held] == [run_id]
    queues = json.loads(cli_runner.run(c.env, ["queues", "list", "--json"]).stdout)
    jobs_queue = next(q for q in queues if q["name"] == "jobs")
    assert jobs_queue["paused"] and jobs_queue["paused_runs"] == 1
    with server.client() as api:
        seen = api.get("/api/v1/queues").json()
        assert next(q for q in seen["queues"] if q["name"] == "jobs") == jobs_queue
        assert api.get("/api/v1/stats").json()["paused_runs"] == 1
        by_http = api.get("/api/v1/runs", params={"paused": "true"}).json()["runs"]
        assert [r["id"] for r in by_http] == [run_id]
        metrics = _gauge(api, "jobsys_runs_paused")
        assert metrics[("jobs",)] == 1.0
        assert api.post("/api/v1/jobs/tests.urgent/pause").json()["scope"] == "job"
        shown = api.get("/api/v1/jobs/tests.urgent").json()
        assert {p["scope"] for p in shown["paused"]} == {"queue", "job"}
        assert shown["may"]["pause"] is True
        bad = api.post("/api/v1/queues/bad%20name!/pause")
        assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["loc"] == ["queue"]
    mcp = tools.call(c.client, "queue_list", {})
    assert {(p["scope"], p["name"]) for p in mcp["pauses"]} == {
        ("queue", "jobs"),
        ("job", "tests.urgent"),
    }
    assert tools.call(c.client, "job_resume", {"job": "tests.urgent"})["published"] == 0
    with pytest.raises(errors.InvalidInput):
        tools.call(c.client, "queue_pause", {})
    shown_cli = json.loads(cli_runner.run(c.env, ["jobs", "show", "tests.effect", "--json"]).stdout)
    assert [p["scope"] for p in shown_cli["paused"]] == ["queue"]
    assert cli_runner.run(c.env, ["queues", "pause"]).returncode == 2
    assert cli_runner.run(c.env, ["queues", "pause", "jobs", "--all"]).returncode == 2
    assert cli_runner.run(c.env, ["queues", "pause", "a b"]).returncode == 2
    out = cli_runner.run(c.env, ["queues", "resume", "jobs", "--json"])
    assert json.loads(out.stdout)["published"] == 1
    assert c.wait_state(run_id, RunState.COMPLETED, 30).attempts == 1


def _gauge(api: httpx.Client, name: str) -> dict[tuple[str, ...], float]:
    text = api.get("/metrics").text
    found: dict[tuple[str, ...], Any] = {}
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for sample in family.samples:
                found[tuple(sample.labels.values())] = sample.value
    return found


def test_a_paused_runs_message_parks_it_and_only_a_resume_sends_it_again(
    store: stores.Store,
) -> None:
    """Without a broker: the claim of a paused run changes nothing and ``execute.run`` parks
    it (``PAUSED``); neither the reconciler nor the due-run publisher takes it; a stale
    message of it is still only stale; resuming takes it once, with a new message token."""
    from tests.integration.test_store import _deliver, make_run

    store.pauses.pause("job", "t.job", pauses.EVERY_TENANT, "ops")
    now = runs.utcnow()
    run = make_run(store, input={"x": 2}, next_attempt_at=now - dt.timedelta(seconds=1))
    _, outcome = _deliver(store, 2, run_id=run.id)
    assert outcome.kind is execute.Kind.PAUSED
    held = store.get(run.id)
    assert held.state is RunState.PENDING and held.attempts == 0
    assert held.waiting is not None and held.waiting["reason"] == "paused"
    assert "job 't.job' paused by ops" in held.waiting["message"]
    assert (held.published_at, held.next_attempt_at) == (None, None)
    later = now + dt.timedelta(hours=1)
    assert store.stale_waiting(later, 1.0) == []
    assert store.claim_due(later, 60.0) == []
    assert store.pauses.released() == []  # still held
    _, stale = _deliver(store, 2, dispatch=7, run_id=run.id)
    assert stale.kind is execute.Kind.STALE
    gone, taken = store.pauses.resume("job", "t.job", None, lambda r: True)
    assert [p.name for p in gone] == ["t.job"]
    assert [(r.id, r.dispatch) for r in taken] == [(run.id, held.dispatch + 1)]
    assert store.pauses.claim_released([held]) == []  # a second resumer takes nothing
    _, outcome = _deliver(store, 2, dispatch=held.dispatch + 1, run_id=run.id)
    assert outcome.kind is execute.Kind.COMPLETED


def test_pausing_a_queue_no_job_uses_is_refused_as_a_likely_typo(
    shared: Cluster, server: ApiServer
) -> None:
    """`jobsys queues pause jbos` would pause nothing while the user believes `jobs` paused:
    a queue no job uses, no run waits in and no pause holds is refused, naming the field and
    how to see the queues, on every interface (and nothing is paused)."""
    c = shared
    cli = cli_runner.run(c.env, ["queues", "pause", "jbos"])
    assert cli.returncode == 2 and "queues list" in cli.stderr, (cli.returncode, cli.stderr)
    with server.client() as api:
        r = api.post("/api/v1/queues/jbos/pause")
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["loc"] == ["queue"], r.text
    with pytest.raises(errors.InvalidInput, match="queues list"):
        tools.call(c.client, "queue_pause", {"name": "jbos"})
    assert c.client.pauses.list_pauses() == []
    assert c.client.pauses.pause_queue("jobs").name == "jobs"  # a queue in use still pauses
