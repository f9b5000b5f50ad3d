"""Bulk actions by filter (``runs cancel|retry|delete --where``) and the dead-letter view,
through a real Redis and a real ``jobsys worker``, by the Python client, the CLI, the HTTP API
and MCP. Each test tags its runs with a tag of its own and filters by it, so the tests of the
module's shared cluster do not meet each other's runs."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from jobsys import RunState, SubmitOptions
from jobsys.base import errors
from jobsys.declare import permissions
from jobsys.store import bulk, rows, runs, schema
from tests import cli_runner
from tests.cluster import Cluster
from tests.integration.mcp_support import http_session
from tests.servers import Serve
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration

ADMIN = permissions.Principal(id="bulk-admin", roles=("admin",))
N = 60
"""Dead letters replayed in the suite (in batches of 25: three)."""


@pytest.fixture(scope="module")
def server(shared: Cluster) -> Iterator[tuple[Serve, str]]:
    token = shared.client.admin.create_token(ADMIN)[1]
    with Serve(shared) as s:
        yield s, token


def new_tag() -> str:
    return f"bulk-{uuid.uuid4().hex[:10]}"


def dead_letters(c: Cluster, tag: str, n: int, exhausted: bool = True) -> list[str]:
    """``n`` runs of ``examples.add`` that ended failed, inserted through the store as a
    worker leaves them (with all their attempts used, or not)."""
    spec = c.registry.get("examples.add")
    now = runs.utcnow()
    made = []
    for i in range(n):
        row = rows.new_run(
            spec,
            {"a": i, "b": 1},
            principal=permissions.LOCAL.model_dump(mode="json"),
            principal_id="local",
            tenant="default",
            now=now,
            tags=[tag],
        )
        row.update(
            state=RunState.FAILED.value,
            attempts=row["max_attempts"] if exhausted else 1,
            error={"type": "CardDeclined", "message": f"card declined #{i}", "reason": "exception"},
            finished_at=now,
        )
        made.append(row)
    c.store.insert(made)
    return [r["id"] for r in made]


def tagged(c: Cluster, tag: str, state: RunState | None = None) -> list[runs.RunRecord]:
    return c.store.select(runs.RunFilter(tag=tag, state=state, limit=10_000))


def test_the_dead_letters_are_listed_and_replayed_by_one_filter_all_ending_completed(
    shared: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exhausted runs retried by one filter all end completed on a real worker, and the dry
    run's count is the number retried (500 of them: ``tests/benchmarks/bulk_replay.py``)."""
    monkeypatch.setattr(bulk, "BATCH", 25)  # N runs: three batches
    c = shared.client
    tag = new_tag()
    dead = set(dead_letters(shared, tag, N))
    dead_letters(shared, tag, 3, exhausted=False)  # failed, with attempts left: not dead letters
    listed = c.list(state="failed", exhausted=True, tag=tag, limit=1000)
    assert {r.id for r in listed} == dead
    assert {r.id for r in c.list(state="failed", exhausted=False, tag=tag)}.isdisjoint(dead)

    every_key = [
        f"tag={tag}",
        "job=examples.add",
        "state=failed,cancelled",
        "since=1h",
        f"until={(runs.utcnow() + dt.timedelta(minutes=1)).isoformat()}",
        "error=CARD DECLINED #",  # any case, % and _ taken as they are
        "priority=5",
        "principal=local",
    ]
    assert c.bulk.retry(every_key, dry_run=True).matched == N + 3
    assert c.bulk.retry([*every_key[:5], "error=50%_off"], dry_run=True).matched == 0
    assert c.bulk.retry([f"tag={tag}", "since=2030-01-01T00:00:00Z"], dry_run=True).matched == 0

    where = [f"tag={tag}", "state=failed", "exhausted=true"]
    dry = c.bulk.retry(where, dry_run=True)
    assert (dry.matched, dry.done, dry.to_json()["skipped"]) == (N, N, {})
    assert len(tagged(shared, tag)) == N + 3  # the dry run changed nothing

    done = c.bulk.retry(where)
    assert (done.matched, done.done) == (N, N)
    assert done.to_json()["skipped"] == {}

    def all_completed() -> int | NotYet:
        completed = [r for r in tagged(shared, tag, RunState.COMPLETED) if r.parent_id in dead]
        return len(completed) if len(completed) == N else NotYet(len(completed))

    assert eventually(all_completed, timeout=60) == N
    retries = [r for r in tagged(shared, tag) if r.parent_id]
    assert {r.parent_id for r in retries} == dead and len(retries) == N
    assert {r.output for r in retries} == {i + 1 for i in range(N)}  # each its own input
    one = retries[0]
    assert one.parent_id is not None
    [replayed] = [e for e in c.events(one.parent_id).events if e.kind == "action"]
    assert (replayed.actor, replayed.detail) == (
        c.principal.id,
        {"action": "retried", "run_id": one.id, "bulk": True},
    )

    again = c.bulk.retry(where)  # a second replay does not run them twice
    assert (again.matched, again.done, again.to_json()["skipped"]) == (
        N,
        0,
        {"already_retried": N},
    )
    audit = [e for e in c.audit.list(limit=20) if e.action == "bulk_retry"]
    detail = json.loads(audit[1].detail)  # the first replay's entry
    assert detail["where"] == {"tag": tag, "state": ["failed"], "exhausted": True}
    assert (detail["matched"], detail["done"], audit[1].outcome) == (N, N, "allowed")


def test_cancel_by_filter_stops_waiting_and_running_runs_and_skips_ended_ones(
    shared: Cluster,
) -> None:
    c = shared.client
    tag = new_tag()
    options = SubmitOptions(tags=(tag,), countdown=3600)
    later = [c.submit("examples.add", {"a": i, "b": 1}, options) for i in range(3)]
    running = c.submit("examples.sleep", {"seconds": 30}, SubmitOptions(tags=(tag,)))
    shared.wait_state(running, RunState.RUNNING, timeout=30)
    ended = c.submit("examples.add", {"a": 1, "b": 1}, SubmitOptions(tags=(tag,)))
    shared.wait_state(ended, RunState.COMPLETED, timeout=30)

    dry = c.bulk.cancel([f"tag={tag}"], dry_run=True)
    assert dry.to_json() | {"sample": None} == {
        "action": "cancel",
        "dry_run": True,
        "where": {"tag": tag},
        "matched": 5,
        "done": 4,
        "skipped": {"state": 1},
        "stopping": 1,
        "sample": None,
    }
    assert all(c.status(i).state is RunState.PENDING for i in later)

    done = c.bulk.cancel([f"tag={tag}"])
    assert (done.matched, done.done, done.stopping, done.to_json()["skipped"]) == (
        5,
        4,
        1,
        {"state": 1},
    )
    assert all(c.status(i).state is RunState.CANCELLED for i in later)
    shared.wait_state(running, RunState.CANCELLED, timeout=30)
    assert c.status(ended).state is RunState.COMPLETED
    # the cancelled runs are what a single cancel leaves
    single = c.cancel(c.submit("examples.add", {"a": 1, "b": 1}, options)).record
    bulk_one = c.status(later[0])
    assert (bulk_one.error, bulk_one.cancel_requested) == (single.error, single.cancel_requested)
    # and each run's history says who asked, as a single cancel's does
    asked = [e for e in c.events(later[0]).events if e.kind == "action"]
    assert [(e.actor, (e.detail or {}).get("action")) for e in asked] == [
        (c.principal.id, "cancel_requested")
    ]


def test_delete_by_filter_removes_ended_runs_with_their_logs_and_keeps_the_others(
    shared: Cluster,
) -> None:
    c = shared.client
    tag = new_tag()
    options = SubmitOptions(tags=(tag,))
    logged = c.submit("examples.flaky", {"failures": 1}, options)  # logs a line per attempt
    failed = c.submit("examples.fail", {"message": "gone soon"}, options)
    shared.wait_all([logged, failed], timeout=60)
    waiting = c.submit("examples.add", {"a": 1, "b": 1}, SubmitOptions(tags=(tag,), countdown=3600))
    assert c.logs(logged)

    dry = c.bulk.delete([f"tag={tag}"], dry_run=True)
    assert (dry.matched, dry.done, dry.to_json()["skipped"]) == (3, 2, {"state": 1})
    assert len(tagged(shared, tag)) == 3

    done = c.bulk.delete([f"tag={tag}"])
    assert (done.matched, done.done, done.to_json()["skipped"]) == (3, 2, {"state": 1})
    assert sorted(done.sample) == sorted([logged, failed])
    assert [r.id for r in tagged(shared, tag)] == [waiting]
    with pytest.raises(errors.RunNotFound):
        c.status(logged)
    assert shared.store.logs(logged) == []
    assert shared.store.events(logged) == []  # its history went with it
    assert c.list(search="gone soon", tag=tag) == []
    c.cancel(waiting)


def test_a_filter_without_a_condition_or_with_a_bad_key_is_refused_naming_it(
    shared: Cluster,
) -> None:
    c = shared.client
    for where, loc, text in (
        ([], ["where", "where"], "no condition"),
        (["color=red"], ["where", "color"], "unknown key"),
        (["state=done"], ["where", "state"], "'done' is not a state"),
        (["priority=12"], ["where", "priority"], "from 0 to 9"),
        (["since=yesterday"], ["where", "since"], "is not an ISO 8601 time"),
        (["exhausted=maybe"], ["where", "exhausted"], "true or false"),
        (["job"], ["where", "job"], "KEY=VALUE"),
    ):
        with pytest.raises(errors.InvalidFilter) as info:
            c.bulk.delete(where)
        assert [e["loc"] for e in info.value.errors] == [loc], where
        assert text in str(info.value), where
    assert c.bulk.delete(["all"], dry_run=True).where == {"all": True}


def test_the_cli_acts_by_filter_and_refuses_what_is_ambiguous(shared: Cluster) -> None:
    tag = new_tag()
    dead = dead_letters(shared, tag, 4)

    def cli(*args: str) -> Any:
        return cli_runner.run(shared.env, ["runs", *args])

    dry = cli("retry", "--where", f"tag={tag}", "--where", "exhausted=true", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("4 runs match; 4 would be retried (dry run: nothing changed)")
    listed = cli("list", "--state", "failed", "--exhausted", "--tag", tag, "--json")
    assert sorted(r["id"] for r in json.loads(listed.stdout)) == sorted(dead)
    answer = cli("retry", "--where", f"tag={tag}", "--where", "state=failed", "--json")
    data = json.loads(answer.stdout)
    assert (data["matched"], data["done"], sorted(data["retries"])) == (4, 4, sorted(dead))
    shared.wait_all(list(data["retries"].values()), timeout=30)
    deleted = cli("delete", "--where", f"tag={tag}", "--where", "state=failed")
    assert deleted.stdout.startswith("4 runs matched: 4 deleted"), deleted.stdout

    for args, message in (
        (("delete", "--where", "colour=red"), "where.colour: unknown key"),
        (("delete",), "give --where KEY=VALUE conditions"),
        (("cancel", dead[0], "--where", "all"), "not both"),
        (("retry", "--dry-run"), "give a run id, or --where"),
        (("delete", "--where", "state=failed", "--where", "job=a", "--where", "job=b"), "twice"),
    ):
        refused = cli(*args)
        assert refused.returncode == 2, (args, refused.stdout)
        assert message in refused.stderr, (args, refused.stderr)


def test_the_cli_http_and_mcp_answer_what_the_client_does(
    shared: Cluster, server: tuple[Serve, str]
) -> None:
    serve, token = server
    tag = new_tag()
    dead = dead_letters(shared, tag, 3)
    where = {"tag": tag, "state": "failed", "exhausted": True}
    expected = shared.client.bulk.retry(where, dry_run=True).to_json()
    assert expected["matched"] == 3
    flags = [f"--where={k}={str(v).lower()}" for k, v in where.items()]
    cli = cli_runner.run(shared.env, ["runs", "retry", *flags, "--dry-run", "--json"])
    assert json.loads(cli.stdout) == expected

    async def mcp() -> None:
        async with http_session(f"{serve.url}/mcp/", token) as s:
            result = await s.call_tool("runs_bulk_retry", {"where": where, "dry_run": True})
            assert not result.is_error, result.content
            assert result.structured_content == expected
            listed = await s.call_tool("job_list", {"what": "runs", "exhausted": True, "tag": tag})
            assert listed.structured_content is not None
            assert sorted(r["run_id"] for r in listed.structured_content["runs"]) == sorted(dead)
            bad = await s.call_tool("runs_bulk_cancel", {"where": {"state": "done"}})
            assert bad.is_error
            assert "where.state: 'done' is not a state" in bad.content[0].text  # type: ignore[union-attr]

    anyio.run(mcp)
    http = httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {token}"})
    with http:
        answer = http.post("/api/v1/runs/bulk/retry", json={"where": where, "dry_run": True})
        assert answer.status_code == 200, answer.text
        assert answer.json() == expected
        listed = http.get("/api/v1/runs", params={"exhausted": "true", "tag": tag}).json()
        assert sorted(r["id"] for r in listed["runs"]) == sorted(dead)
        refused = http.post("/api/v1/runs/bulk/delete", json={"where": {"colour": "red"}})
        assert refused.status_code == 422
        assert refused.json()["error"]["fields"][0]["loc"] == ["where", "colour"]
        empty = http.post("/api/v1/runs/bulk/cancel", json={"where": {}})
        assert empty.status_code == 422 and "no condition" in empty.json()["error"]["message"]
        done = http.post("/api/v1/runs/bulk/delete", json={"where": where}).json()
        assert (done["matched"], done["done"]) == (3, 3)
    with shared.store.engine.connect() as conn:  # the rows are gone
        left = conn.execute(schema.runs.select().where(schema.runs.c.id.in_(dead))).all()
    assert left == []
