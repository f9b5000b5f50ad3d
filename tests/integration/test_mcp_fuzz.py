"""Fuzz the MCP tools: well over 1,000 malformed tool calls (deterministic seed) over one stdio
session of ``jobsys mcp``: wrong types, missing and unknown fields, unknown jobs, tools, runs and
schedules, huge strings, deep nesting, bad cron and time zones, control characters.

Every answer must be a proper one (a tool error whose text is one clean line, or an MCP error),
the server must still answer afterwards, and nothing may be half-written: no run, schedule or
definition made by a rejected call, and every run row complete.
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
import string
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from jobsys.mcp.names import tool_name
from jobsys.store import definition_store, runs
from tests.cluster import Cluster
from tests.integration.mcp_support import GENERIC_TOOLS, stdio_session

pytestmark = [pytest.mark.integration, pytest.mark.interface]

SEED = 20260728
CALLS = 1200
CONTROL = "".join(chr(i) for i in range(32)) + "\x7f\u2028\u2029\u202e\ufeff"
TOOLS = GENERIC_TOOLS
NEEDING_ARGUMENTS = [t for t in TOOLS if t not in ("list_jobs", "job_list", "list_workers")]
"""The tools with required arguments."""
WRONG: list[Any] = [None, True, 0, -1, 3.5, 1e308, "", "x", [], [1, "a"], {}, {"k": [None]}]

Call = tuple[str, str, Any]
"""(category, tool, arguments)."""


def text(rng: random.Random, n: int = 12) -> str:
    """Random text that always holds a control character (so it is never a valid name)."""
    chars = [rng.choice(string.ascii_letters + CONTROL + "é✓🙂") for _ in range(n)]
    chars.insert(rng.randrange(n + 1), rng.choice(CONTROL))
    return "".join(chars)


def nested(depth: int) -> Any:
    value: Any = {"a": 1, "b": 2}
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def wrong_types(rng: random.Random) -> Call:
    tool, field = rng.choice(
        [
            ("execute_job", "job"),
            ("execute_job", "input"),
            ("execute_job", "mode"),
            ("execute_job", "timeout"),
            ("execute_job", "tags"),
            ("execute_job", "priority"),
            ("get_job_status", "run_id"),
            ("get_job_status", "logs"),
            ("list_jobs", "tag"),
            ("list_jobs", "include_hidden"),
            ("job_create", "schedule"),
            ("job_create", "input"),
            ("job_list", "limit"),
            ("job_list", "what"),
            ("job_show", "id"),
            ("job_result", "wait"),
            ("job_search", "query"),
            ("remove_job", "name"),
            ("job_cancel", "id"),
        ]
    )
    base: dict[str, Any] = {"job": "examples.add", "input": {"a": 1, "b": 2}, "mode": "background"}
    base = {k: v for k, v in base.items() if tool in ("execute_job", "job_create")}
    value = rng.choice(WRONG)
    if field in ("timeout", "logs", "limit", "wait", "priority"):
        value = rng.choice([-5, 10**9, "soon", [], {}, True, 1e308])
    elif field in ("mode", "what"):
        value = rng.choice(["sideways", 3, None, ["inline"]])
    elif field == "include_hidden":
        value = rng.choice(["yes please", [], {}, 7])
    elif field == "tags":
        value = rng.choice(["a", 5, {"k": 1}, [1, 2], [None], None])
    elif field in ("input", "schedule"):
        value = rng.choice(["{}", 5, [1], True])
    elif isinstance(value, str) or value is None:  # strings that are valid: make them wrong
        value = rng.choice([[], {}, 12, 1.5])
    return "wrong type", tool, {**base, field: value}


def missing_fields(rng: random.Random) -> Call:
    tool = rng.choice(NEEDING_ARGUMENTS)
    extra = rng.choice([{}, {"input": {"a": 1}}, {"wait": 1}, {"tags": ["x"]}])
    if tool in ("register_job",):
        extra = rng.choice([{}, {"kind": "alias"}, {"name": "mcp.fuzz_missing"}])
    if tool in ("job_create", "execute_job"):
        extra = {"input": {"a": 1, "b": 2}}
    return "missing field", tool, extra


def unknown_fields(rng: random.Random) -> Call:
    tool = rng.choice(TOOLS)
    args: dict[str, Any] = {"job": "examples.add", "input": {"a": 1, "b": 2}, "mode": "background"}
    if tool not in ("execute_job", "job_create"):
        args = {}
    args[f"zz_{text(rng, 6)}"] = rng.choice(WRONG)
    return "unknown field", tool, args


def unknown_names(rng: random.Random) -> Call:
    name = rng.choice(
        [
            f"examples.{text(rng, 8)}",
            "examples.ad",
            "nope",
            f"mcp.ghost_{rng.randrange(10**6)}",
            text(rng, 30),
        ]
    )
    choice = rng.randrange(8)
    if choice == 0:
        return "unknown job", "execute_job", {"job": name, "input": {}}
    if choice == 1:
        return "unknown job", "job_create", {"job": name, "input": {}}
    if choice == 2:
        return "unknown job", "job_create", {"job": name, "schedule": {"every": 60}}
    if choice == 3:
        return "unknown job", "remove_job", {"name": name}
    if choice == 4:
        run_id = rng.choice(["0" * 32, "wf_" + "0" * 24, "sch_" + "0" * 20, name])
        return (
            "unknown id",
            rng.choice(["get_job_status", "job_show", "job_result"]),
            ({"run_id": run_id} if rng.random() < 0.3 else {"id": run_id}),
        )
    if choice == 5:
        sid = rng.choice(["sch_" + "f" * 20, "0" * 32, "wf_" + "1" * 24])
        return "unknown id", rng.choice(["job_pause", "job_resume", "job_cancel"]), {"id": sid}
    if choice == 6:
        return "unknown tool", f"run__{name}", {"a": 1}
    return "unknown tool", rng.choice([name, "", "tools/list", "LIST-JOBS", "job list"]), {}


def huge(rng: random.Random) -> Call:
    size = rng.choice([10_000, 200_000, 1_100_000])
    blob = rng.choice(string.ascii_letters) * size
    tool, args = rng.choice(
        [
            ("execute_job", {"job": blob, "input": {}}),
            ("execute_job", {"job": "examples.add", "input": {"a": blob, "b": 1}}),
            ("execute_job", {"job": "examples.fail", "input": {"message": 3}, "tags": [blob]}),
            ("get_job_status", {"run_id": blob}),
            ("job_search", {"query": blob}),
            (
                "job_create",
                {
                    "job": "examples.add",
                    "input": {"a": 1, "b": 2},
                    "name": blob,
                    "schedule": {"every": 60},
                },
            ),
            (
                "register_job",
                {
                    "name": "mcp.fuzz_huge",
                    "kind": "alias",
                    "target": "examples.add",
                    "description": blob,
                },
            ),
            ("list_jobs", {"query": blob}),
            (f"run__{blob[:300]}", {}),
        ]
    )
    return "huge string", tool, args


def deep(rng: random.Random) -> Call:
    """Deeper than the tools take (32), and now and then deeper than the SDK's JSON parser
    takes (about 200; the client cannot send more than about 250): answered by the server with
    a JSON-RPC parse error naming the request id."""
    depth = rng.randrange(33, 150) if rng.random() < 0.8 else rng.randrange(200, 240)
    tool, args = rng.choice(
        [
            ("execute_job", {"job": "examples.add", "input": {"a": nested(depth), "b": 1}}),
            ("execute_job", {"job": "examples.add", "input": nested(depth)}),
            ("job_create", {"job": "examples.add", "metadata": {"x": nested(depth)}}),
            (
                "register_job",
                {
                    "name": "mcp.fuzz_deep",
                    "kind": "alias",
                    "target": "examples.add",
                    "defaults": {"a": nested(depth)},
                },
            ),
            ("run__examples__add", {"a": 1, "b": nested(depth)}),
            ("list_jobs", {"tag": nested(depth)}),
        ]
    )
    return "deep nesting", tool, args


def bad_schedule(rng: random.Random) -> Call:
    when = rng.choice(
        [
            {
                "cron": rng.choice(
                    [
                        "61 * * * *",
                        "* * *",
                        "@sometimes",
                        "a b c d e",
                        "",
                        "*/0 * * * *",
                        "0 0 31 2 * *",
                        text(rng, 9),
                    ]
                )
            },
            {
                "cron": "0 8 * * 1",
                "timezone": rng.choice(["Mars/Olympus", "UTC+25", "", "../../etc", text(rng, 10)]),
            },
            {"every": rng.choice([0, -1, 0.5, 1e400, "60"])},
            {"ongoing": rng.choice([0, -3])},
            {"once": rng.choice(["tomorrow", "2026-13-01T00:00Z", "2026-01-01T00:00", text(rng)])},
            {"every": 60, "cron": "* * * * *"},
            {"every": 60, "start": "2030-01-01T00:00Z", "end": "2020-01-01T00:00Z"},
            {"every": 60, "overlap": "sometimes"},
            {"every": 60, "max_runs": 0},
            {},
            {"timezone": "UTC"},
        ]
    )
    if rng.random() < 0.75:
        return (
            "bad schedule",
            "job_create",
            {"job": "examples.add", "input": {"a": 1, "b": 2}, "schedule": when},
        )
    return "bad schedule", "job_update", {"id": "sch_" + "a" * 20, **when}


def bad_definition(rng: random.Random) -> Call:
    data = rng.choice(
        [
            {"name": "mcp.fuzz_def", "kind": "rocket"},
            {"name": "mcp.fuzz_def", "kind": "alias"},
            {"name": "mcp.fuzz_def", "kind": "alias", "target": "examples.nope"},
            {
                "name": "mcp.fuzz_def",
                "kind": "alias",
                "target": "examples.add",
                "defaults": {"zz": 1},
            },
            {
                "name": "mcp.fuzz_def",
                "kind": "alias",
                "target": "examples.add",
                "defaults": {"a": "one"},
            },
            {
                "name": "mcp.fuzz_def",
                "kind": "alias",
                "target": "examples.add",
                "schedule": {"cron": "99 * * * *"},
            },
            {"name": "bad name!", "kind": "alias", "target": "examples.add"},
            {"name": "examples.add", "kind": "alias", "target": "examples.add"},
            {"name": "mcp.fuzz_def", "kind": "http", "url": "http://evil.example.com/x"},
            {"name": "mcp.fuzz_def", "kind": "http", "url": "file:///etc/passwd"},
            {"name": "mcp.fuzz_def", "kind": "workflow", "workflow": {"steps": "all"}},
            {
                "name": "mcp.fuzz_def",
                "kind": "workflow",
                "workflow": {"steps": [{"name": "s", "job": "examples.nope"}]},
            },
            {
                "name": "mcp.fuzz_def",
                "kind": "alias",
                "target": "examples.add",
                "code": "import os",
            },
            {"name": text(rng, 20), "kind": "alias", "target": "examples.add"},
        ]
    )
    return "bad definition", "register_job", data


def bad_input(rng: random.Random) -> Call:
    job, value = rng.choice(
        [
            ("examples.add", {"a": "two", "b": 2}),
            ("examples.add", {"a": 1}),
            ("examples.add", {"a": [1], "b": {}}),
            ("examples.add", {"a": 1.5, "b": 2}),
            ("examples.sleep", {"seconds": -1}),
            ("examples.sleep", {"seconds": 10**6}),
            ("examples.hash_file", {"path": "/x", "algorithm": "rot13"}),
            ("examples.flaky", {"failures": "many"}),
            ("examples.fail", {"message": ["not", "a", "string"]}),
        ]
    )
    if rng.random() < 0.5:
        return "bad job input", tool_name(job), value
    mode = rng.choice(["inline", "background"])
    return (
        "bad job input",
        rng.choice(["execute_job", "job_create"]),
        ({"job": job, "input": value} | ({"mode": mode} if rng.random() < 0.5 else {})),
    )


def bad_filters(rng: random.Random) -> Call:
    args = rng.choice(
        [
            {"state": rng.choice(["exploded", text(rng, 5), "COMPLETED"])},
            {"what": "runs", "state": "nope"},
            {"limit": 0},
            {"limit": 10**6},
        ]
    )
    return "bad filter", "job_list", args


def wrong_target(rng: random.Random) -> Call:
    """Actions on the wrong kind of id (a run where a schedule is needed and so on)."""
    tool, args = rng.choice(
        [
            ("job_pause", {"id": "0" * 32}),
            ("job_resume", {"id": "wf_" + "2" * 24}),
            ("job_update", {"id": "0" * 32, "every": 60}),
            ("job_update", {"id": "sch_" + "b" * 20}),
            ("job_result", {"id": "sch_" + "c" * 20}),
        ]
    )
    return "wrong id kind", tool, args


def control_chars(rng: random.Random) -> Call:
    noisy = text(rng, rng.randrange(1, 40))
    tool, args = rng.choice(
        [
            ("execute_job", {"job": noisy, "input": {}}),
            ("get_job_status", {"run_id": noisy}),
            ("job_show", {"id": noisy}),
            ("job_cancel", {"id": noisy}),
            ("remove_job", {"name": noisy}),
            (
                "job_create",
                {"job": "examples.add", "input": {"a": 1, "b": 2}, "schedule": {"cron": noisy}},
            ),
            (
                "job_create",
                {
                    "job": "examples.add",
                    "input": {"a": 1, "b": 2},
                    "schedule": {"every": 60, "timezone": noisy, "cron": noisy},
                },
            ),
            (noisy, {}),
            ("execute_job", {"job": "examples.add", "input": {noisy: 1}}),
            ("register_job", {"name": noisy, "kind": "alias", "target": "examples.add"}),
        ]
    )
    return "control characters", tool, args


def no_arguments(rng: random.Random) -> Call:
    return (
        "no arguments",
        rng.choice(NEEDING_ARGUMENTS),
        None,
    )


GENERATORS: list[Callable[[random.Random], Call]] = [
    wrong_types,
    missing_fields,
    unknown_fields,
    unknown_names,
    huge,
    deep,
    bad_schedule,
    bad_definition,
    bad_input,
    bad_filters,
    wrong_target,
    control_chars,
    no_arguments,
]


def malformed_calls(seed: int, n: int) -> Iterator[Call]:
    rng = random.Random(seed)
    for i in range(n):
        yield GENERATORS[i % len(GENERATORS)](rng)


def snapshot(c: Cluster) -> dict[str, set[str]]:
    return {
        "runs": {r.id for r in c.store.select(runs.RunFilter(limit=100_000))},
        "schedules": {s.id for s in c.client.schedules.list(limit=10_000)},
        "workflow_runs": {w.id for w in c.client.workflows.list(limit=10_000)},
        "definitions": {d.name for d in definition_store.DefinitionStore(c.store.engine).all()},
    }


def assert_complete(record: runs.RunRecord) -> None:
    """A run row with everything a run must have."""
    assert record.id and record.job and isinstance(record.input, dict), record
    assert record.state in runs.RunState and record.created_at is not None, record
    assert record.principal_id and record.tenant and record.queue, record
    if record.terminal:
        assert record.finished_at is not None, record
    if record.state is runs.RunState.COMPLETED:
        assert record.error is None, record
    if record.state is runs.RunState.FAILED:
        assert record.error and record.error.get("message"), record


def test_malformed_tool_calls(shared: Cluster) -> None:
    calls = list(malformed_calls(SEED, CALLS))
    assert len(calls) >= 1000
    before = snapshot(shared)
    counts: collections.Counter[str] = collections.Counter()
    by_category: collections.Counter[str] = collections.Counter()
    accepted: list[tuple[str, str, Any]] = []
    internal: list[tuple[str, str]] = []

    async def main() -> None:
        async with stdio_session(shared.env, shared.tmp / "mcp-fuzz.log") as s:
            for category, tool, arguments in calls:
                by_category[category] += 1
                try:
                    result = await s.call_tool(tool, arguments)
                except MCPError as exc:  # a protocol-level error is a proper answer too
                    counts["mcp error"] += 1
                    assert exc.error.message, (category, tool)
                    continue
                message = "".join(getattr(c, "text", "") for c in result.content)
                if not result.is_error:
                    accepted.append((category, tool, _short(arguments)))
                    continue
                counts["tool error"] += 1
                error = result.structured_content["error"]
                counts[f"  {error['type']}"] += 1
                if error["type"] == "InternalError":
                    internal.append((tool, message))
                assert message == error["message"] and message.strip()
                assert "\n" not in message and "Traceback" not in message
                assert len(message) <= 1000 and message.isprintable(), message
            # still alive and answering
            tools = (await s.list_tools()).tools
            assert len(tools) > 14
            listed = await s.call_tool("list_jobs", {"tag": "math"})
            assert not listed.is_error
            assert [j["name"] for j in listed.structured_content["jobs"]] == ["examples.add"]

    anyio.run(main)
    print(f"\nMCP fuzz: {len(calls)} malformed calls (seed {SEED})")
    for category, n in sorted(by_category.items()):
        print(f"  {category}: {n}")
    for name, n in sorted(counts.items()):
        print(f"{name}: {n}")
    assert not accepted, f"malformed calls were accepted: {accepted[:20]}"
    assert not internal, f"internal errors: {internal[:5]}"
    assert counts["tool error"] + counts["mcp error"] == len(calls)

    after = snapshot(shared)
    assert after == before, {k: after[k] - before[k] for k in after}
    for record in shared.store.select(runs.RunFilter(limit=100_000)):
        assert_complete(record)


def _short(value: Any) -> str:
    with contextlib.suppress(Exception):
        return json.dumps(value)[:200]
    return repr(value)[:200]
