"""The operator's view of the cluster, ``jobsys workers list``, through the CLI, the HTTP API
and MCP, against real worker processes: two ``jobsys worker`` nodes with different catalogs
(the one behind flagged ``mismatch: ["catalog"]``), the run one holds, a killed node turning
``lost``, a stopped one leaving the list (``jobsys.store.presence``, ``jobsys.engine.presence``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from jobsys.base import release
from jobsys.declare import catalog, permissions
from jobsys.store import presence, runs
from tests.cluster import ROOT, Cluster, cluster
from tests.integration.mcp_support import http_session, stdio_session
from tests.servers import Serve
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration

OLD_CATALOG = "workers.examples"
"""The catalog of a node left on an older deploy (the cluster's: ``tests.cluster.CATALOG``)."""
ADMIN = permissions.Principal(id="ops-admin", roles=("admin",))
OTHER_ADMIN = permissions.Principal(id="globex-admin", roles=("admin",), tenant="globex")
VIEWER = permissions.Principal(id="ops-viewer", roles=())


@pytest.fixture(scope="module")
def two_nodes(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("workers"), redis_url, database_url) as c:
        c.start_worker("new", concurrency=2, wait=False)
        c.start_worker("old", concurrency=1, catalog=OLD_CATALOG)
        c.wait_for_log("new", "ready.", timeout=60)
        yield c


def cli_workers(c: Cluster, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobsys", "workers", "list", *argv],
        env=c.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def by_name(workers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {w["name"].partition("@")[0]: w for w in workers}


def all_live(c: Cluster) -> dict[str, dict[str, Any]]:
    def seen() -> dict[str, dict[str, Any]] | NotYet:
        found = by_name(c.client.admin.workers()["workers"])
        live = {k for k, w in found.items() if w["state"] == "live"}
        return found if live >= {"new-1", "new-2", "old"} else NotYet(sorted(found))

    return eventually(seen, 30, what="three live worker processes")


def test_each_worker_process_is_listed_with_its_catalog_and_mismatches(two_nodes: Cluster) -> None:
    c = two_nodes
    found = all_live(c)
    want_hash = catalog.digest(c.registry)
    for name in ("new-1", "new-2"):
        w = found[name]
        assert w["catalog_hash"] == want_hash and w["mismatch"] == []
        assert w["catalog"] == ["workers.examples", "tests.jobs"]
        assert w["pool"] == "inline" and w["concurrency"] == 1
        assert w["version"] == release.version() and w["pid"] > 0 and w["host"]
        assert "jobs" in w["queues"] and not any(q.startswith("_jobsys") for q in w["queues"])
    old = found["old"]
    assert old["mismatch"] == ["catalog"] and old["catalog"] == [OLD_CATALOG]
    assert old["catalog_hash"] != want_hash
    assert old["last_seen"] >= old["started_at"] and old["seen_seconds_ago"] < 5

    # The run a worker holds is listed on it, from the run records.
    run_id = c.client.submit("examples.sleep", {"seconds": 60})
    holder = c.wait_state(run_id, runs.RunState.RUNNING, timeout=30).worker
    assert holder is not None
    view = c.client.admin.workers()
    (holding,) = [w for w in view["workers"] if w["name"] == holder]
    assert holding["running"] == 1 and [r["id"] for r in holding["runs"]] == [run_id]
    assert view["summary"]["mismatched"] == 1 and view["summary"]["running"] >= 1
    assert view["expected"]["catalog_hash"] == want_hash

    # The CLI: --json is the list, the table flags the old node and sums up.
    done = cli_workers(c, "--json")
    assert done.returncode == 0, done.stderr
    listed = by_name(json.loads(done.stdout))
    assert listed["old"]["mismatch"] == ["catalog"] and listed["new-1"]["mismatch"] == []
    assert [r["id"] for r in listed[holder.partition("@")[0]]["runs"]] == [run_id]
    table = cli_workers(c)
    assert table.returncode == 0, table.stderr
    (old_line,) = [line for line in table.stdout.splitlines() if " old@" in line]
    assert "catalog" in old_line and old["catalog_hash"] in old_line
    assert "1 mismatched" in table.stdout and f"catalog {want_hash}" in table.stdout
    denied = cli_workers(c, "--token", c.client.admin.create_token(VIEWER)[1])
    assert denied.returncode == 3 and "permission denied" in denied.stderr
    c.client.cancel(run_id)
    c.wait_state(run_id, runs.RunState.CANCELLED, timeout=30)


def test_http_and_mcp_answer_the_same_view(two_nodes: Cluster) -> None:
    c = two_nodes
    all_live(c)
    tokens = {p.id: c.client.admin.create_token(p)[1] for p in (ADMIN, OTHER_ADMIN, VIEWER)}
    run_id = c.client.submit("examples.sleep", {"seconds": 60})
    holder = c.wait_state(run_id, runs.RunState.RUNNING, timeout=30).worker
    with Serve(c) as server:

        def get(who: str) -> httpx.Response:
            auth = {"Authorization": f"Bearer {tokens[who]}"}
            return httpx.get(f"{server.url}/api/v1/workers", headers=auth, timeout=30)

        answer = get(ADMIN.id)
        assert answer.status_code == 200, answer.text
        over_http = by_name(answer.json()["workers"])
        assert over_http["old"]["mismatch"] == ["catalog"]
        assert {k for k, w in over_http.items() if not w["mismatch"]} >= {"new-1", "new-2"}
        (holding,) = [w for w in over_http.values() if w["name"] == holder]
        assert [r["id"] for r in holding["runs"]] == [run_id]
        # Another tenant's admin sees the workers and how busy they are, not the run's id.
        other = by_name(get(OTHER_ADMIN.id).json()["workers"])
        assert other[holding["name"].partition("@")[0]]["running"] == 1
        assert all(w["runs"] == [] for w in other.values())
        refused = get(VIEWER.id)
        assert refused.status_code == 403
        assert refused.json()["error"]["type"] == "PermissionDenied"

        async def over_mcp() -> tuple[dict[str, Any], dict[str, Any]]:
            async with stdio_session(c.env, c.tmp / "mcp.err") as s:
                stdio = await s.call_tool("list_workers", {})
                assert not stdio.is_error, stdio.content
            async with http_session(f"{server.url}/mcp", tokens[ADMIN.id]) as s:
                http = await s.call_tool("list_workers", {})
                assert not http.is_error, http.content
                refused = await s.call_tool("list_workers", {"host": "x"})
                assert refused.is_error
            assert stdio.structured_content and http.structured_content
            return stdio.structured_content, http.structured_content

        stdio, http = anyio.run(over_mcp)
    for seen in (by_name(stdio["workers"]), by_name(http["workers"])):
        assert seen["old"]["mismatch"] == ["catalog"]
        assert seen["new-1"]["mismatch"] == [] and seen["new-2"]["mismatch"] == []
        assert seen[holding["name"].partition("@")[0]]["runs"][0]["id"] == run_id
    c.client.cancel(run_id)
    c.wait_state(run_id, runs.RunState.CANCELLED, timeout=30)


def test_a_killed_node_turns_lost_a_stopped_one_leaves_and_old_rows_are_pruned(
    two_nodes: Cluster,
) -> None:
    c = two_nodes
    found = all_live(c)
    c.kill("old")  # SIGKILL: no clean stop, its row stays and goes stale
    beat = c.settings.heartbeat_seconds

    def lost() -> dict[str, Any] | NotYet:
        old = by_name(c.client.admin.workers()["workers"]).get("old")
        return old if old and old["state"] == "lost" else NotYet(old)

    old = eventually(lost, 10 * beat + 10, what="the killed node to be lost")
    assert old["seen_seconds_ago"] > presence.LOST_AFTER_BEATS * beat
    assert old["pid"] == found["old"]["pid"]
    assert by_name(c.client.admin.workers()["workers"])["new-1"]["state"] == "live"

    # A node of another jobsys version is flagged too (its heartbeat written here).
    store = presence.PresenceStore(c.store.engine)
    (record,) = [w for w in store.known() if w.name.startswith("new-1@")]
    other = dataclasses.replace(record, name="other@elsewhere", version="0.0.1", pid=1)
    store.beat(other)
    (shown,) = [w for w in c.client.admin.workers()["workers"] if w["name"] == other.name]
    assert shown["mismatch"] == ["version"]
    store.remove(other.name, other.pid)

    # A clean stop removes a node's rows at once.
    c.stop("new")
    eventually(
        lambda: not any(k.startswith("new-") for k in by_name(c.client.admin.workers()["workers"])),
        30,
        what="the stopped node's processes to leave the list",
    )
    # A lost node is forgotten once silent for FORGET_AFTER.
    later = runs.utcnow() + presence.FORGET_AFTER + dt.timedelta(seconds=1)
    assert store.prune(later) == 1
    assert "old" not in by_name(c.client.admin.workers()["workers"])
