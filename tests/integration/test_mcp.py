"""The MCP tools through the official ``mcp`` SDK's client, over stdio (``jobsys mcp``, a real
subprocess) and over streamable HTTP (``jobsys serve``, a real server on a real port), against
a real cluster: Redis, the run store and a ``jobsys worker`` started before anything else."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import psutil
import pytest

from jobsys.declare import permissions
from jobsys.mcp.names import tool_name
from jobsys.store import runs
from tests.cluster import Cluster
from tests.integration.mcp_support import GENERIC_TOOLS, Session, http_session, stdio_session
from tests.servers import Serve

pytestmark = [pytest.mark.integration, pytest.mark.interface]


async def call(s: Session, tool: str, arguments: dict[str, Any]) -> tuple[bool, Any, str]:
    """(is_error, structured content, text) of a tool call."""
    result = await s.call_tool(tool, arguments)
    text = "".join(getattr(c, "text", "") for c in result.content)
    return result.is_error, result.structured_content, text


async def answer(s: Session, tool: str, arguments: dict[str, Any]) -> Any:
    is_error, data, text = await call(s, tool, arguments)
    assert not is_error, f"{tool} failed: {text}"
    assert data == json.loads(text)
    return data


async def poll(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await anyio.sleep(0.2)
    raise AssertionError(f"{what} not seen in {timeout} s (last: {last})")


def worker_pids(c: Cluster, name: str) -> set[int]:
    root = psutil.Process(c.processes[name].pid)
    return {root.pid} | {p.pid for p in root.children(recursive=True)}


async def exercise(s: Session, c: Cluster, worker: str, transport: str) -> None:
    """The flow the issue asks of an MCP client, over either transport."""
    suffix = f"{transport}_{uuid.uuid4().hex[:6]}"

    # tools: the generic ones and one per job, with the job's input schema
    tools = {t.name: t for t in (await s.list_tools()).tools}
    assert set(tools) >= set(GENERIC_TOOLS)
    add_tool = tools["run__examples__add"]
    assert add_tool.input_schema["required"] == ["a", "b"]
    assert add_tool.input_schema["properties"]["a"]["type"] == "integer"

    # list_jobs, with the tag and label filters
    listed = await answer(s, "list_jobs", {"tag": "math", "label": "team=core"})
    assert [j["name"] for j in listed["jobs"]] == ["examples.add"]
    add = listed["jobs"][0]
    assert add["kind"] == "code" and add["labels"] == {"team": "core"}
    assert set(add["input_schema"]["properties"]) == {"a", "b"}
    everything = await answer(s, "list_jobs", {})
    assert "examples.sleep" in {j["name"] for j in everything["jobs"]}
    assert "tests.chain" in {w["name"] for w in everything["workflows"]}

    # execute_job inline, and through the job's own tool
    done = await answer(s, "execute_job", {"job": "examples.add", "input": {"a": 2, "b": 3}})
    assert done["output"] == 5 and done["state"] == "completed"
    assert (await answer(s, "run__examples__add", {"a": 20, "b": 22}))["output"] == 42

    # background, polled to completion with get_job_status
    started = await answer(
        s,
        "execute_job",
        {"job": "examples.sleep", "input": {"seconds": 1}, "mode": "background"},
    )
    run_id = started["run_id"]

    async def finished() -> Any:
        status = await answer(s, "get_job_status", {"run_id": run_id})
        return status if status["finished"] else None

    status = await poll(finished, f"run {run_id} finished")
    assert status["state"] == "completed", status
    assert status["progress"]["pct"] == 100
    assert status["output"]["slept"] >= 1
    assert any("done" in line["message"] for line in status["logs"])
    history = await answer(s, "get_job_events", {"run_id": run_id})
    assert [a["outcome"] for a in history["attempts"]] == ["completed"]
    assert history["attempts"][0]["duration"] >= 1
    states = [e["to_state"] for e in history["events"] if e["kind"] != "progress"]
    assert states == ["pending", "running", "completed"]
    # The run reported progress: the quarters it crossed are in its history too.
    milestones = [e["detail"]["milestone"] for e in history["events"] if e["kind"] == "progress"]
    assert milestones and milestones[-1] == 100 and milestones == sorted(milestones)

    await register_and_remove(s, c, worker, suffix)
    await names_and_deprecated_names(s, suffix)
    await errors_and_search(s, c, suffix)
    await durable_work(s, suffix)


async def register_and_remove(s: Session, c: Cluster, worker: str, suffix: str) -> None:
    name = f"mcp.add10_{suffix}"
    pids_before = worker_pids(c, worker)
    registered = await answer(
        s,
        "register_job",
        {
            "name": name,
            "kind": "alias",
            "target": "examples.add",
            "defaults": {"b": 10},
            "description": "Add ten",
            "tags": ["mcp"],
        },
    )
    assert registered["tool"] == tool_name(name)
    tools = {t.name: t for t in (await s.list_tools()).tools}
    assert tool_name(name) in tools  # the tool list is computed when it is asked for
    assert tools[tool_name(name)].input_schema["properties"]["b"]["default"] == 10
    listed = await answer(s, "list_jobs", {"tag": "mcp"})
    assert {j["name"]: j["kind"] for j in listed["jobs"]}[name] == "alias"

    done = await answer(s, "execute_job", {"job": name, "input": {"a": 5}})
    assert done["output"] == 15
    record = c.store.get(done["run_id"])
    assert record.job == name and record.state is runs.RunState.COMPLETED
    # run by the worker started before the registration, which was not restarted
    assert c.processes[worker].poll() is None
    assert record.worker_pid in worker_pids(c, worker) and record.worker_pid in pids_before
    assert (await answer(s, tool_name(name), {"a": 1}))["output"] == 11

    assert (await answer(s, "remove_job", {"name": name})) == {"removed": name}
    is_error, data, text = await call(s, "execute_job", {"job": name, "input": {"a": 5}})
    assert is_error and data["error"]["type"] == "UnknownJob"
    assert f"unknown job {name!r}" in text and "\n" not in text
    assert tool_name(name) not in {t.name for t in (await s.list_tools()).tools}
    is_error, _, text = await call(s, tool_name(name), {"a": 1})
    assert is_error and "unknown tool" in text


STRICT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""What the strictest MCP clients accept as a tool name."""


async def names_and_deprecated_names(s: Session, suffix: str) -> None:
    """Every listed tool name is one the strictest clients accept, even for odd job names;
    no two jobs share a tool; the old names still answer, saying which name to use."""
    odd = [
        f"mcp.odd__name-{suffix}",  # holds __: hashed
        f"mcp._under.a_.b-{suffix}",
        "mcp." + ".".join(f"seg-{i}_x" for i in range(14)) + f".{suffix}",  # > 64 characters
    ]
    for name in odd:
        made = await answer(
            s, "register_job", {"name": name, "kind": "alias", "target": "examples.add"}
        )
        assert made["tool"] == tool_name(name) and STRICT_NAME.fullmatch(made["tool"]), made
    try:
        listed = [t.name for t in (await s.list_tools()).tools]
        assert all(STRICT_NAME.fullmatch(n) for n in listed), listed
        assert len(set(listed)) == len(listed), "two tools share a name"
        jobs = (await answer(s, "list_jobs", {}))["jobs"]
        assert len({j["tool"] for j in jobs}) == len(jobs), "two jobs share a tool"
        assert {tool_name(name) for name in odd} <= set(listed)
        for name in odd:  # called by its listed name, found by the job it names
            done = await answer(s, tool_name(name), {"a": 1, "b": 2})
            assert done["output"] == 3 and done["job"] == name and "deprecated" not in done
        # the old dotted name of a job's tool still runs it, pointing at the new one
        old = await answer(s, f"run__{odd[0]}", {"a": 2, "b": 2})
        assert old["output"] == 4 and tool_name(odd[0]) in old["deprecated"]
    finally:
        for name in odd:
            await answer(s, "remove_job", {"name": name})

    # the hyphenated names: not listed, still answered, naming their new name
    assert not {"list-jobs", "execute-job", "get-job-status"} & set(listed)
    assert "run__examples.add" not in listed and "run__examples__add" in listed
    old = await answer(s, "list-jobs", {"tag": "math", "label": "team=core"})
    assert [j["name"] for j in old["jobs"]] == ["examples.add"]
    assert "'list_jobs'" in old["deprecated"] and "deprecated" in old["deprecated"]
    done = await answer(s, "execute-job", {"job": "examples.add", "input": {"a": 1, "b": 1}})
    assert done["output"] == 2 and "'execute_job'" in done["deprecated"]
    status = await answer(s, "get-job-status", {"run_id": done["run_id"]})
    assert status["state"] == "completed" and "'get_job_status'" in status["deprecated"]
    old = await answer(s, "run__examples.add", {"a": 20, "b": 22})
    assert old["output"] == 42 and "'run__examples__add'" in old["deprecated"]
    is_error, data, text = await call(s, "execute-job", {"job": "examples.add", "input": {}})
    assert is_error and data["error"]["type"] == "InvalidInput", text
    name = f"mcp.old_{suffix}"
    made = await answer(
        s, "register-job", {"name": name, "kind": "alias", "target": "examples.add"}
    )
    assert made["tool"] == tool_name(name) and "'register_job'" in made["deprecated"]
    gone = await answer(s, "remove-job", {"name": name})
    assert gone["removed"] == name and "'remove_job'" in gone["deprecated"]


async def errors_and_search(s: Session, c: Cluster, suffix: str) -> None:
    # a bad argument names the field; nothing is recorded
    before = len(c.store.select(runs.RunFilter(limit=10_000)))
    is_error, data, text = await call(
        s, "execute_job", {"job": "examples.add", "input": {"a": "two", "b": 3}}
    )
    assert is_error and data["error"]["type"] == "InvalidInput"
    assert data["error"]["fields"][0]["loc"] == ["a"] and "a: " in text
    is_error, data, text = await call(s, "execute_job", {"input": {}})
    assert is_error and data["error"]["fields"][0]["loc"] == ["job"], text
    is_error, data, text = await call(s, "run__examples__add", {"a": 1})
    assert is_error and data["error"]["fields"][0]["loc"] == ["b"], text
    is_error, data, text = await call(s, "job_create", {"job": "examples.add", "nope": 1})
    assert is_error and "nope" in text
    is_error, _, text = await call(s, "no-such-tool", {})
    assert is_error and "unknown tool 'no-such-tool'" in text
    assert len(c.store.select(runs.RunFilter(limit=10_000))) == before

    # a failed run: an error result, and job_search finds it by a word of its error
    word = f"quokka{suffix.replace('_', '')}"
    is_error, data, text = await call(
        s, "execute_job", {"job": "examples.fail", "input": {"message": f"the {word} escaped"}}
    )
    assert is_error and data["error"]["type"] == "RunFailed" and word in text
    failed_id = data["error"]["run_id"]
    found = await answer(s, "job_search", {"query": word})
    assert [r["run_id"] for r in found["runs"]] == [failed_id]
    assert found["runs"][0]["state"] == "failed"
    jobs_found = await answer(s, "job_search", {"query": "add integers"})
    assert "examples.add" in {j["name"] for j in jobs_found["jobs"]}


async def durable_work(s: Session, suffix: str) -> None:
    # one background run, its result awaited with job_result
    created = await answer(s, "job_create", {"job": "examples.add", "input": {"a": 1, "b": 2}})
    assert created["kind"] == "run"
    result = await answer(s, "job_result", {"id": created["run_id"], "wait": 60})
    assert result["finished"] and result["output"] == 3
    listed = await answer(s, "job_list", {"what": "runs", "job": "examples.add"})
    assert created["run_id"] in {r["run_id"] for r in listed["runs"]}

    # a schedule: create, show, update, pause, resume, cancel (= delete)
    made = await answer(
        s,
        "job_create",
        {
            "job": "examples.add",
            "input": {"a": 1, "b": 1},
            "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Paris"},
            "name": f"nightly {suffix}",
        },
    )
    sid = made["schedule"]["schedule_id"]
    assert made["kind"] == "schedule" and made["schedule"]["state"] == "active"
    shown = await answer(s, "job_show", {"id": sid})
    assert shown["cadence"] == {"kind": "cron", "cron": "0 3 * * *", "timezone": "Europe/Paris"}
    updated = await answer(s, "job_update", {"id": sid, "every": 7200, "input": {"a": 2, "b": 2}})
    assert updated["schedule"]["cadence"]["every"] == 7200
    assert updated["schedule"]["version"] == 2
    assert (await answer(s, "job_pause", {"id": sid}))["schedule"]["state"] == "paused"
    assert (await answer(s, "job_resume", {"id": sid}))["schedule"]["state"] == "active"
    listed = await answer(s, "job_list", {"what": "schedules"})
    assert sid in {x["schedule_id"] for x in listed["schedules"]}
    cancelled = await answer(s, "job_cancel", {"id": sid})
    assert cancelled["deleted"] and cancelled["schedule"]["state"] == "cancelled"
    is_error, _, text = await call(
        s, "job_create", {"job": "examples.add", "schedule": {"cron": "61 * * * *"}}
    )
    assert is_error and "cron" in text

    # a long run cancelled with job_cancel
    long = await answer(
        s, "execute_job", {"job": "examples.sleep", "input": {"seconds": 60}, "mode": "background"}
    )
    await answer(s, "job_cancel", {"id": long["run_id"]})

    async def cancelled_run() -> Any:
        status = await answer(s, "get_job_status", {"run_id": long["run_id"]})
        return status if status["finished"] else None

    assert (await poll(cancelled_run, "the cancelled run ending"))["state"] == "cancelled"


# --- stdio -----------------------------------------------------------------------------------


def test_stdio(shared: Cluster) -> None:
    async def main() -> None:
        async with stdio_session(shared.env, shared.tmp / "mcp-stdio.log") as s:
            await exercise(s, shared, "w1", "stdio")

    anyio.run(main)


def test_stdio_acts_as_the_token(shared: Cluster) -> None:
    """``jobsys mcp`` acts as JOBSYS_TOKEN's principal: its permissions and its runs."""
    viewer = permissions.Principal(id=f"viewer-{uuid.uuid4().hex[:6]}", roles=("viewer",))
    _, token = shared.client.admin.create_token(viewer)

    async def main() -> None:
        env = {**shared.env, "JOBSYS_TOKEN": token}
        async with stdio_session(env, shared.tmp / "mcp-stdio-token.log") as s:
            tools = {t.name for t in (await s.list_tools()).tools}
            assert "run__examples__add" in tools
            assert "run__tests__ops_only" not in tools  # needs the role ops to execute
            made = await answer(s, "job_create", {"job": "examples.add", "input": {"a": 1, "b": 1}})
            assert shared.store.get(made["run_id"]).principal_id == viewer.id
            is_error, data, text = await call(
                s, "execute_job", {"job": "tests.ops_only", "input": {}}
            )
            assert is_error and data["error"]["type"] == "PermissionDenied", text

    anyio.run(main)


# --- streamable HTTP -------------------------------------------------------------------------


def test_http(shared: Cluster) -> None:
    agent = permissions.Principal(id=f"agent-{uuid.uuid4().hex[:6]}", roles=("ops",))
    _, token = shared.client.admin.create_token(agent)
    with Serve(shared) as server:
        url = f"{server.url}/mcp"
        refused = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "Unauthenticated"
        assert refused.json()["error"]["fields"] == []
        wrong = httpx.post(url, json={}, headers={"Authorization": "Bearer not-a-token"})
        assert wrong.status_code == 401 and wrong.json()["error"]["message"]

        async def main() -> None:
            async with http_session(url, token) as s:
                await exercise(s, shared, "w1", "http")
                # the tools act as the token's principal
                made = await answer(
                    s, "job_create", {"job": "examples.add", "input": {"a": 0, "b": 0}}
                )
                assert shared.store.get(made["run_id"]).principal_id == agent.id

        anyio.run(main)
        check_session_binding(shared, url, token)


def rpc(method: str, params: dict[str, Any] | None = None, id: int | None = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id is not None:
        message["id"] = id
    return message


def check_session_binding(c: Cluster, url: str, token: str) -> None:
    """Each request is authenticated: a session answers only the token that opened it, and a
    token revoked mid-session is refused at once."""
    other = permissions.Principal(id=f"other-{uuid.uuid4().hex[:6]}", roles=("ops",))
    record, stolen_by = c.client.admin.create_token(other)
    accept = {"Accept": "application/json, text/event-stream"}
    with httpx.Client(timeout=30) as http:

        def post(message: dict[str, Any], who: str, session: str | None) -> httpx.Response:
            headers = {**accept, "Authorization": f"Bearer {who}"}
            if session:
                headers |= {"Mcp-Session-Id": session, "Mcp-Protocol-Version": "2025-11-25"}
            return http.post(url, json=message, headers=headers)

        hello = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        }
        opened = post(rpc("initialize", hello), stolen_by, None)
        assert opened.status_code == 200, opened.text
        session = opened.headers["mcp-session-id"]
        assert (
            post(rpc("notifications/initialized", id=None), stolen_by, session).status_code == 202
        )
        listed = post(rpc("tools/list", {}, id=2), stolen_by, session)
        assert listed.status_code == 200 and "execute_job" in listed.text
        # another (valid) token cannot use this session
        assert post(rpc("tools/list", {}, id=3), token, session).status_code == 404
        # revoked: refused on the next request, with the API's error body
        c.client.admin.revoke_token(record.id)
        refused = post(rpc("tools/list", {}, id=4), stolen_by, session)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "Unauthenticated"
