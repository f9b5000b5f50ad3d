"""Retention and archiving: the pruner deletes the ended runs its policies let go (with their
logs and history) and keeps every other run; two pruners at once delete each run once; a
worker's own pruner runs by itself; archived runs and schedules leave the default lists
(CLI, HTTP) and come back when unarchived. Old runs are made through the store, as workers
leave them, with their ages set back."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import sqlalchemy as sa

from jobsys import RunState
from jobsys.base import errors
from jobsys.declare import cadence, permissions
from jobsys.service.client import Client
from jobsys.store import retention, rows, runs, schema
from tests import cli_runner
from tests.cluster import CATALOG, Cluster, cluster
from tests.integration.mcp_support import http_session
from tests.servers import Serve
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration

POLICIES = {
    "JOBSYS_CATALOG": CATALOG + ",tests.retention_jobs",
    "JOBSYS_KEEP_COMPLETED": "1h",
    "JOBSYS_KEEP_FAILED": "1d",
    "JOBSYS_KEEP_CANCELLED": "1h",
    "JOBSYS_KEEP_LAST": "2",
    "JOBSYS_PRUNE_SECONDS": "0",  # in this module, prunes happen when a test asks
}


@pytest.fixture(scope="module")
def kept(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[Cluster]:
    """A cluster with retention policies and no worker (nothing prunes by itself)."""
    with cluster(tmp_path_factory.mktemp("retention"), redis_url, database_url, **POLICIES) as c:
        yield c


@pytest.fixture(scope="module")
def http(kept: Cluster) -> Iterator[httpx.Client]:
    """The HTTP API of ``kept`` (one server for the module), as an admin of its tenant."""
    token = kept.client.admin.create_token(permissions.Principal(id="ops", roles=("admin",)))[1]
    with Serve(kept) as s:
        yield httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {token}"})


def admin_of(c: Cluster, tenant: str) -> Client:
    who = permissions.Principal(id=f"admin-{tenant}", roles=("admin",), tenant=tenant)
    return Client(c.settings, c.registry, principal=who, store=c.client.store)


def old(
    c: Cluster,
    job: str,
    n: int,
    age: dt.timedelta,
    state: RunState = RunState.COMPLETED,
    tenant: str = "default",
    **extra: object,
) -> list[str]:
    """``n`` runs of ``job`` made and ended ``age`` ago, each with a log line."""
    spec = c.registry.get(job)
    then = runs.utcnow() - age
    made = []
    for i in range(n):
        row = rows.new_run(
            spec,
            {"a": i, "b": 1} if job == "examples.add" else {},
            principal=permissions.LOCAL.model_dump(mode="json"),
            principal_id="local",
            tenant=tenant,
            now=then - dt.timedelta(seconds=n - i),  # the last made last
        )
        ended = state in (RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED)
        row.update(state=state.value, finished_at=then if ended else None, **extra)
        made.append(row)
    c.store.insert(made)
    c.store.write_logs(
        [{"run_id": r["id"], "attempt": 1, "at": then, "message": "a line"} for r in made]
    )
    return [r["id"] for r in made]


def present(c: Cluster, ids: list[str]) -> set[str]:
    T = schema.runs
    with c.store.engine.connect() as conn:
        return {str(i) for (i,) in conn.execute(sa.select(T.c.id).where(T.c.id.in_(ids)))}


def traces(c: Cluster, ids: list[str]) -> tuple[int, int]:
    """Log lines and events left of runs ``ids``."""
    L, E = schema.run_logs, schema.run_events
    with c.store.engine.connect() as conn:
        logs = conn.execute(sa.select(sa.func.count()).where(L.c.run_id.in_(ids))).scalar_one()
        events = conn.execute(sa.select(sa.func.count()).where(E.c.run_id.in_(ids))).scalar_one()
    return int(logs), int(events)


def test_the_policies_prune_what_they_say_and_keep_every_other_run(kept: Cluster) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    hours, minutes = dt.timedelta(hours=2), dt.timedelta(minutes=10)
    add = "examples.add"
    gone = old(kept, add, 5, hours, tenant=tenant)  # completed, past 1h
    gone += old(kept, add, 2, hours, RunState.CANCELLED, tenant=tenant)
    stay = old(kept, add, 2, minutes, tenant=tenant)  # too young (and the newest two)
    failed = old(kept, add, 3, hours, RunState.FAILED, tenant=tenant)  # failed: kept 1d
    stay += failed
    stay += old(kept, add, 1, hours, RunState.PENDING, tenant=tenant)  # not ended
    archived = old(kept, add, 1, hours, tenant=tenant, archived_at=runs.utcnow())
    stay += archived
    stay += old(kept, "retention.kept_long", 3, hours, tenant=tenant)  # its own 30d
    short = old(kept, "retention.short", 3, minutes, tenant=tenant)  # its own 1m, last 1
    gone += short[:2]
    stay += short[2:]
    # a run that a blocked run waits for, and a step of a workflow run still going
    [waited_on] = old(kept, add, 1, hours, tenant=tenant, has_dependents=True)
    [blocked] = old(kept, add, 1, hours, RunState.BLOCKED, tenant=tenant)
    workflow_id = f"wf_{uuid.uuid4().hex[:12]}"
    [step] = old(kept, add, 1, hours, tenant=tenant, workflow_id=workflow_id)
    with kept.store.engine.begin() as conn:
        conn.execute(schema.run_deps.insert().values(run_id=blocked, depends_on=waited_on))
        conn.execute(
            schema.workflow_runs.insert().values(
                id=workflow_id,
                workflow="w",
                definition={},
                state="running",
                input={},
                skipped=[],
                principal={},
                principal_id="local",
                tenant=tenant,
                created_at=runs.utcnow(),
                timeout_at=runs.utcnow() + dt.timedelta(hours=1),
            )
        )
    stay += [waited_on, blocked, step]
    # another tenant's old runs: not this tenant admin's to prune
    elsewhere = old(kept, add, 4, hours, tenant=f"{tenant}-other")

    admin = admin_of(kept, tenant)
    dry = admin.retention.prune(dry_run=True)
    assert (dry.runs, dict(dry.by_state)) == (len(gone), {"completed": 7, "cancelled": 2})
    assert present(kept, gone + stay) == set(gone + stay)  # the dry run deleted nothing

    done = admin.retention.prune()
    assert done.runs == len(gone)
    assert present(kept, gone + stay + elsewhere) == set(stay + elsewhere)
    assert traces(kept, gone) == (0, 0)  # logs and events went with them
    assert traces(kept, stay)[0] == len(stay)
    assert admin.retention.prune().runs == 0  # nothing more to do
    entry = [e for e in kept.client.audit.list(limit=50) if e.action == "prune"][1]
    assert (entry.principal_id, json.loads(entry.detail)["runs"]) == (f"admin-{tenant}", 9)

    member = Client(
        kept.settings,
        kept.registry,
        principal=permissions.Principal(id="someone", roles=(), tenant=tenant),
        store=kept.client.store,
    )
    with pytest.raises(errors.PermissionDenied):
        member.retention.prune(dry_run=True)

    # --older-than: every ended run past that age (the newest two of each job still stay)
    aged = admin.retention.prune(older_than=60.0, job=add)
    assert aged.runs == 3  # the failed ones, beyond the newest two of examples.add
    assert present(kept, stay) == set(stay) - set(failed)


def test_two_pruners_at_once_delete_each_run_once(kept: Cluster) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ids = old(kept, "retention.kept_long", 240, dt.timedelta(days=40), tenant=tenant)
    rules = retention.policy_rules(kept.settings, kept.registry, runs.utcnow())
    results: list[retention.PruneResult] = []
    failures: list[BaseException] = []

    def prune() -> None:
        try:
            results.append(kept.store.retention.prune(rules, batch=20, tenant=tenant))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=prune) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    assert sum(r.runs for r in results) == len(ids) - 2  # each run deleted once
    assert len(present(kept, ids)) == 2  # the job's newest two
    assert all(r.batches >= 1 for r in results)


def test_prune_on_the_cli_and_http(kept: Cluster, http: httpx.Client) -> None:
    ids = old(kept, "retention.short", 4, dt.timedelta(hours=3))
    env = kept.env

    dry = cli_runner.run(env, ["runs", "prune", "--job", "retention.short", "--dry-run", "--json"])
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["runs"] == 3  # all but its newest one
    text = cli_runner.run(env, ["runs", "prune", "--job", "retention.short", "--dry-run"])
    assert "3 runs would be deleted (3 completed) (dry run" in text.stdout

    bad = cli_runner.run(env, ["runs", "prune", "--older-than", "soon"])
    assert bad.returncode == 2 and "--older-than" in bad.stderr

    async def mcp() -> None:
        token = http.headers["Authorization"].split(" ", 1)[1]
        async with http_session(f"{str(http.base_url).rstrip('/')}/mcp/", token) as session:
            args = {"job": "retention.short", "dry_run": True}
            result = await session.call_tool("runs_prune", args)
            assert not result.is_error and result.structured_content is not None
            assert result.structured_content["runs"] == 3
            bad = await session.call_tool("runs_prune", {"older_than": "soon"})
            assert bad.is_error and "older_than" in bad.content[0].text  # type: ignore[union-attr]

    anyio.run(mcp)
    refused = http.post("/api/v1/runs/prune", json={"older_than": "soon"})
    assert refused.status_code == 422 and "older_than" in refused.text
    answer = http.post("/api/v1/runs/prune", json={"job": "retention.short"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["runs"] == 3
    assert present(kept, ids) == {ids[-1]}


def old_workflow(
    c: Cluster,
    tenant: str,
    age: dt.timedelta,
    state: str = "completed",
    steps: int = 0,
    **run: object,
) -> tuple[str, list[str]]:
    """A workflow run ended (``state``) ``age`` ago, and ``steps`` step runs of it (completed
    as old, unless ``run`` says otherwise); its id and theirs."""
    workflow_id = f"wf_{uuid.uuid4().hex[:12]}"
    then = runs.utcnow() - age
    with c.store.engine.begin() as conn:
        conn.execute(
            schema.workflow_runs.insert().values(
                id=workflow_id,
                workflow="w",
                definition={},
                state=state,
                input={},
                skipped=[],
                principal={},
                principal_id="local",
                tenant=tenant,
                created_at=then,
                timeout_at=then + dt.timedelta(hours=1),
                finished_at=None if state == "running" else then,
            )
        )
    step_age = run.pop("step_age", age)
    assert isinstance(step_age, dt.timedelta)
    if not steps:
        return workflow_id, []
    made = old(c, "retention.kept_long", steps, step_age, tenant=tenant, workflow_id=workflow_id)
    return workflow_id, made


def workflows_present(c: Cluster, ids: list[str]) -> set[str]:
    W = schema.workflow_runs
    with c.store.engine.connect() as conn:
        return {str(i) for (i,) in conn.execute(sa.select(W.c.id).where(W.c.id.in_(ids)))}


def old_workflows(c: Cluster, tenant: str) -> tuple[list[str], list[str], list[str]]:
    """Workflow runs of ``tenant`` a prune (``--older-than 1d``) deletes, and keeps: (workflow
    runs that go, those that stay, the step runs that go)."""
    days, hours = dt.timedelta(days=3), dt.timedelta(hours=2)
    both, both_steps = old_workflow(c, tenant, days, steps=2)  # its steps go first, then it
    empty, _ = old_workflow(c, tenant, days, "failed")  # no step left
    one_young, _ = old_workflow(c, tenant, days, steps=1, step_age=hours)  # a step stays
    young, _ = old_workflow(c, tenant, hours)  # too young
    running, _ = old_workflow(c, tenant, days, "running")  # not ended
    # keep_last: the newest two ended runs of retention.kept_long stay, so make them younger
    old(c, "retention.kept_long", 2, dt.timedelta(minutes=5), tenant=tenant)
    return [both, empty], [one_young, young, running], both_steps


def test_a_dry_run_counts_the_workflow_runs_the_prune_then_deletes(
    kept: Cluster, http: httpx.Client
) -> None:
    day = 86400.0
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    gone, stay, steps = old_workflows(kept, tenant)
    admin = admin_of(kept, tenant)
    dry = admin.retention.prune(older_than=day, dry_run=True)
    assert (dry.runs, dry.workflow_runs) == (len(steps), len(gone))
    assert workflows_present(kept, gone + stay) == set(gone + stay)  # nothing deleted
    done = admin.retention.prune(older_than=day)
    assert (done.runs, done.workflow_runs) == (dry.runs, dry.workflow_runs)
    assert workflows_present(kept, gone + stay) == set(stay)
    assert present(kept, steps) == set()

    # Every interface's dry run says the same, and the prune then deletes that (one token:
    # an admin of the default tenant)
    gone, stay, steps = old_workflows(kept, "default")
    token = http.headers["Authorization"].split(" ", 1)[1]
    cli = cli_runner.run(
        kept.env, ["runs", "prune", "--older-than", "1d", "--dry-run", "--json", "--token", token]
    )
    assert cli.returncode == 0, cli.stderr
    by_cli = json.loads(cli.stdout)
    text = cli_runner.run(
        kept.env, ["runs", "prune", "--older-than", "1d", "--dry-run", "--token", token]
    )
    assert f"{by_cli['workflow_runs']} workflow runs" in text.stdout, text.stdout
    by_http = http.post("/api/v1/runs/prune", json={"older_than": "1d", "dry_run": True}).json()

    async def mcp() -> dict[str, object]:
        async with http_session(f"{str(http.base_url).rstrip('/')}/mcp/", token) as session:
            args = {"older_than": "1d", "dry_run": True}
            result = await session.call_tool("runs_prune", args)
            assert not result.is_error and result.structured_content is not None
            return dict(result.structured_content)

    by_mcp = anyio.run(mcp)
    counts = {(a["runs"], a["workflow_runs"]) for a in (by_cli, by_http, by_mcp)}
    assert len(counts) == 1, (by_cli, by_http, by_mcp)
    assert by_http["runs"] >= len(steps) and by_http["workflow_runs"] >= len(gone)
    real = http.post("/api/v1/runs/prune", json={"older_than": "1d"}).json()
    assert (real["runs"], real["workflow_runs"]) == counts.pop(), real
    assert workflows_present(kept, gone + stay) == set(stay)


def test_prune_refuses_absurd_ages_with_a_clear_message(kept: Cluster, http: httpx.Client) -> None:
    """An age past any date (`999999999w`, 1e300, 99999999999999 s) is a 422 / usage error naming
    `older_than`, not an internal error, and deletes nothing (Infinity is no JSON: 400)."""
    ids = old(kept, "retention.short", 2, dt.timedelta(hours=3))
    for value in ['"999999999w"', "1e300", "99999999999999"]:
        body = f'{{"older_than": {value}, "dry_run": true}}'
        headers = {"Content-Type": "application/json"}
        refused = http.post("/api/v1/runs/prune", content=body, headers=headers)
        assert refused.status_code == 422, (value, refused.status_code, refused.text)
        assert "older_than" in refused.text and "at most" in refused.text
    inf = http.post(
        "/api/v1/runs/prune",
        content='{"older_than": Infinity}',
        headers={"Content-Type": "application/json"},
    )
    assert inf.status_code == 400 and "Infinity is not JSON" in inf.text, inf.text
    bad = cli_runner.run(kept.env, ["runs", "prune", "--older-than", "999999999w"])
    assert bad.returncode == 2 and "--older-than" in bad.stderr, bad.stderr
    assert "at most" in bad.stderr and "Traceback" not in bad.stderr

    async def mcp() -> None:
        token = http.headers["Authorization"].split(" ", 1)[1]
        async with http_session(f"{str(http.base_url).rstrip('/')}/mcp/", token) as session:
            bad = await session.call_tool("runs_prune", {"older_than": "999999999w"})
            text = bad.content[0].text  # type: ignore[union-attr]
            assert bad.is_error and "older_than" in text and "at most" in text, text

    anyio.run(mcp)
    assert present(kept, ids) == set(ids)


def test_archived_runs_and_schedules_leave_the_default_lists(
    kept: Cluster, http: httpx.Client
) -> None:
    tenant_runs = old(kept, "examples.add", 3, dt.timedelta(minutes=1))
    one, two = tenant_runs[0], tenant_runs[1]
    env = kept.env

    def listed(*args: str) -> set[str]:
        done = cli_runner.run(env, ["runs", "list", "--limit", "1000", "--json", *args])
        assert done.returncode == 0, done.stderr
        return {r["id"] for r in json.loads(done.stdout)}

    assert cli_runner.run(env, ["runs", "archive", one, two]).stdout.split("\n")[0] == (
        f"{one} archived"
    )
    assert one not in listed() and two not in listed() and tenant_runs[2] in listed()
    assert {one, two} <= listed("--archived") and tenant_runs[2] not in listed("--archived")
    again = cli_runner.run(env, ["runs", "archive", one])
    assert again.stdout.strip() == f"{one} already archived"
    with pytest.raises(errors.RunNotFound):  # another tenant's admin: not found
        admin_of(kept, "elsewhere").retention.archive([tenant_runs[2]])
    assert tenant_runs[2] in listed()

    schedule = kept.client.schedules.create("tests.effect", cadence.every(3600), name="to-archive")
    archived = cli_runner.run(env, ["schedules", "archive", schedule.id])
    assert archived.returncode == 0, archived.stderr
    assert kept.client.schedules.get(schedule.id).state.value == "paused"  # archiving pauses
    assert schedule.id not in {s.id for s in kept.client.schedules.list()}
    assert schedule.id in {s.id for s in kept.client.schedules.list(archived=True)}

    ids = {r["id"] for r in http.get("/api/v1/runs", params={"limit": 1000}).json()["runs"]}
    assert one not in ids and tenant_runs[2] in ids
    shown = http.get("/api/v1/runs", params={"archived": "true", "limit": 1000}).json()
    assert one in {r["id"] for r in shown["runs"]}
    back = http.post(f"/api/v1/runs/{one}/unarchive")
    assert back.status_code == 200 and back.json()["archived_at"] is None
    ids = {r["id"] for r in http.get("/api/v1/runs", params={"limit": 1000}).json()["runs"]}
    assert one in ids and two not in ids
    gone = http.post("/api/v1/runs/run_nope/archive")
    assert gone.status_code == 404
    listed_schedules = http.get("/api/v1/schedules").json()["schedules"]
    assert schedule.id not in {x["id"] for x in listed_schedules}
    restored = http.post(f"/api/v1/schedules/{schedule.id}/unarchive")
    assert restored.status_code == 200 and restored.json()["state"] == "paused"
    listed_schedules = http.get("/api/v1/schedules").json()["schedules"]
    assert schedule.id in {x["id"] for x in listed_schedules}


def test_a_workers_pruner_prunes_by_itself(
    tmp_path: Path, redis_url: str, database_url: str | None
) -> None:
    env = {**POLICIES, "JOBSYS_PRUNE_SECONDS": "1", "JOBSYS_KEEP_LAST": "0"}
    with cluster(tmp_path, redis_url, database_url, **env) as c:
        ids = old(c, "examples.add", 30, dt.timedelta(hours=2))
        young = old(c, "examples.add", 2, dt.timedelta(minutes=5))
        c.start_worker("w1", concurrency=1)

        def pruned() -> bool | NotYet:
            left = present(c, ids)
            return True if not left else NotYet(f"{len(left)} old runs left")

        assert eventually(pruned, timeout=30)
        assert present(c, young) == set(young)
        assert traces(c, ids) == (0, 0)
