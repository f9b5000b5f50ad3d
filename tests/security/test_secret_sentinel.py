"""Every shape of secret field, given a unique sentinel through every door (Python client, CLI,
HTTP API, MCP; runs, workflow runs of a catalog and an ad hoc workflow, schedules fired by
beat), reaches the job body as its real value, and is found nowhere afterwards: not in any
table of the database, any Redis key or value, any file of the cluster (its home, its logs),
any HTTP, SSE, MCP or CLI answer, nor Flower's API.

The shapes: a sub-model with a ``SecretStr``, the same sub-model optional, a list of them, a
dict of them, an optional ``SecretStr``, a ``str`` marked ``json_schema_extra={"secret": True}``
and a 2-character secret (non-ASCII letters, so that it is found only where it leaked; its log
line shows it redacted as a whole word)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from jobsys import Principal, RunState
from jobsys.base import sealing
from jobsys.declare import cadence
from tests import cli_runner
from tests.cluster import Cluster, cluster
from tests.integration.mcp_support import Session, stdio_session
from tests.integration.test_flower import PASSWORD, USER, Flower, _until_flower_receives
from tests.servers import Serve
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.interface]

ADMIN = Principal(id="ada", roles=("admin",), tenant="default")
DOORS = ("client", "cli", "http", "mcp")
SHORT = {"client": "ЖЩ", "cli": "ЮЯ", "http": "ҖҘ", "mcp": "ӁӜ"}
"""2-character secrets, one per door: letters no other text of a cluster holds."""


VISIBLE = f"VISIBLE{uuid.uuid4().hex[:12]}"
"""A plain field's value next to every secret: found where input is shown, it proves that
the search reads what it should."""


def _creds(secret: str) -> dict[str, Any]:
    return {"user": VISIBLE, "password": secret}


SHAPES: dict[str, tuple[str, Callable[[str], dict[str, Any]], Callable[[str], list[str]]]] = {
    # shape: (job, its input for a secret, the secret values the body receives, in order)
    "nested": ("tests.secret_nested", lambda s: {"creds": _creds(s)}, lambda s: [s]),
    "optional_nested": (
        "tests.secret_optional_nested",
        lambda s: {"creds": _creds(s)},
        lambda s: [s],
    ),
    "list": (
        "tests.secret_list",
        lambda s: {"creds": [_creds(f"{s}-a"), _creds(f"{s}-b")]},
        lambda s: [f"{s}-a", f"{s}-b"],
    ),
    "dict": (
        "tests.secret_dict",
        lambda s: {"creds": {"one": _creds(f"{s}-a"), "two.x": _creds(f"{s}-b")}},
        lambda s: [f"{s}-a", f"{s}-b"],
    ),
    "optional": ("tests.secret_optional", lambda s: {"token": s}, lambda s: [s]),
    "marked": ("tests.secret_marked", lambda s: {"token": s}, lambda s: [s]),
    "short": ("tests.secret_short", lambda s: {"pin": s}, lambda s: [s]),
}


def digest(values: list[str]) -> str:
    return hashlib.sha256("|".join(values).encode()).hexdigest()


def sentinel(label: str) -> str:
    return f"SNTL{label}{uuid.uuid4().hex[:12]}".replace("_", "")


class Harness:
    """The cluster, its HTTP server, and every answer read from it (to search)."""

    def __init__(self, c: Cluster, server: Serve, token: str) -> None:
        self.c, self.server = c, server
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        self.token = token
        self.sentinels: set[str] = set()
        self.answers: dict[str, list[str]] = {"http": [], "sse": [], "mcp": [], "cli": []}
        self.expected: dict[str, str] = {}
        """Run id -> digest of the secrets its body must have received."""
        self.fires: dict[str, str] = {}
        """Schedule of a job -> digest its fire's body must receive."""
        self.flows: dict[str, list[str]] = {}
        """Workflow run (or schedule of the workflow) -> digests its steps must receive."""

    def secret(self, label: str, door: str = "", short: bool = False) -> str:
        value = SHORT[door] if short else sentinel(label)
        self.sentinels.add(value)
        return value

    def cli(self, *args: str) -> str:
        """A CLI command: the first as a real ``python -m jobsys``, the rest in-process."""
        done = cli_runner.run(self.c.env, args, process=not self.answers["cli"])
        out = done.stdout + done.stderr
        self.answers["cli"].append(out)
        assert done.returncode == 0, f"jobsys {' '.join(args)} exited {done.returncode}: {out}"
        return done.stdout

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        self.answers["http"].append(response.text)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    def post(self, path: str, body: dict[str, Any], method: str = "POST") -> Any:
        response = self.http.request(method, path, json=body)
        self.answers["http"].append(response.text)
        assert response.status_code in (200, 201, 202), (path, response.text)
        return response.json()


# --- submitting through each door -----------------------------------------------------------


Queued = list[tuple[str, dict[str, Any], str]]
"""MCP submissions to make: job, input, digest its body must see."""


def submit_shapes(h: Harness, door: str, mcp: Queued) -> list[str]:
    """One run of each shape through ``door`` (MCP calls are queued in ``mcp``)."""
    ids = []
    for shape, (job, make, values) in SHAPES.items():
        secret = h.secret(f"{shape}{door}", door, short=shape == "short")
        given = make(secret)
        if door == "client":
            run_id = h.c.client.submit(job, given)
        elif door == "cli":
            run_id = h.cli("submit", job, "--input", json.dumps(given)).strip()
        elif door == "http":
            run_id = h.post(f"/api/v1/jobs/{job}/runs", {"input": given})["run_id"]
        else:
            mcp.append((job, given, digest(values(secret))))
            continue
        h.expected[run_id] = digest(values(secret))
        ids.append(run_id)
    return ids


async def mcp_session(h: Harness, calls: Queued, then: Callable[[Session], Any]) -> list[str]:
    """Makes the queued MCP submissions, then awaits ``then(session)``; the run ids."""
    async with stdio_session(h.c.env, h.c.tmp / "mcp-stdio.log") as s:
        ids = []
        for job, given, want in calls:
            arguments = {"job": job, "input": given, "mode": "background"}
            run_id = (await answer(h, s, "execute_job", arguments))["run_id"]
            h.expected[run_id] = want
            ids.append(run_id)
        await then(s)
        return ids


async def answer(h: Harness, s: Session, tool: str, arguments: dict[str, Any]) -> Any:
    result = await s.call_tool(tool, arguments)
    text = "".join(getattr(part, "text", "") for part in result.content)
    h.answers["mcp"].append(text + json.dumps(result.structured_content, ensure_ascii=False))
    assert not result.is_error, f"{tool} failed: {text}"
    return json.loads(text)


def flow_input(h: Harness, door: str) -> tuple[dict[str, Any], list[str]]:
    """An input of ``tests.secret_flow`` and the digests its two steps must see."""
    password, key = h.secret(f"flowpw{door}"), h.secret(f"flowkey{door}")
    given = {"creds": _creds(password), "key": key, "note": "visible"}
    return given, [digest([password]), digest([key])]


def adhoc(h: Harness, door: str) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """An ad hoc workflow with secrets in its input (by reference, and items of a for_each)
    and written into a step's input; the digests its steps must see, in step order."""
    token, first, second = (h.secret(f"adhoc{n}{door}") for n in ("tok", "one", "two"))
    literal = h.secret(f"adhoclit{door}")
    definition = {
        "name": f"adhoc.secrets.{door}",
        "steps": [
            {"name": "marked", "job": "tests.secret_marked", "input": {"token": "$input.tok"}},
            {
                "name": "each",
                "job": "tests.secret_nested",
                "for_each": "$input.logins",
                "input": {"creds": "$item"},
            },
            {"name": "literal", "job": "tests.secret_optional", "input": {"token": literal}},
        ],
    }
    given = {"tok": token, "logins": [_creds(first), _creds(second)], "note": "visible"}
    return (
        definition,
        given,
        [digest([token]), digest([first]), digest([second]), digest([literal])],
    )


FIRE_IN = 10.0
"""Seconds from now to the schedules' fire: after the slowest door (a CLI process) made them,
and about when the runs and workflows submitted meanwhile are done."""


def at(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


# --- waiting and checking ---------------------------------------------------------------------


def wait_workflow(h: Harness, workflow_id: str, digests: list[str]) -> list[str]:
    record = h.c.client.workflows.wait(workflow_id, timeout=120)
    assert record.state.value == "completed", record.error
    made = [r for st in h.c.client.workflows.steps(workflow_id).values() for r in st.runs]
    assert sorted(r.output["digest"] for r in made) == sorted(digests), "a step got a mask"
    return [r.id for r in made]


def wait_schedule_fire(h: Harness, schedule_id: str, timeout: float = 90) -> str:
    return eventually(
        lambda: h.c.store.schedules.get(schedule_id).last_run_id,
        timeout,
        0.2,
        what=f"schedule {schedule_id} to fire",
    )


def check_runs(h: Harness, run_ids: list[str]) -> None:
    records = h.c.wait_all(run_ids, timeout=120)
    for record in records:
        assert record.state is RunState.COMPLETED, (record.job, record.error)
        want = h.expected[record.id]
        assert record.output["digest"] == want, f"{record.job} got a mask, not the value"
        assert f"secrets {want}" in (h.c.effects / record.id).read_text()
        assert sealing.REDACTED in json.dumps(record.input), record.input
        lines = [line.message for line in h.c.client.logs(record.id)]
        assert f"received secret={sealing.REDACTED} (as given)" in lines, lines


# --- reading everything back ------------------------------------------------------------------


def read_key(r: redis.Redis, key: bytes) -> Any:
    kind = r.type(key).decode()
    readers: dict[str, Callable[[], Any]] = {
        "string": lambda: r.get(key),
        "list": lambda: r.lrange(key, 0, -1),
        "hash": lambda: r.hgetall(key),
        "set": lambda: r.smembers(key),
        "zset": lambda: r.zrange(key, 0, -1, withscores=True),
        "stream": lambda: r.xrange(key),
    }
    return readers.get(kind, lambda: f"<{kind}>")()


def as_text(value: Any) -> str:
    """Bytes decoded (a repr would escape the non-ASCII sentinels), the rest as JSON."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return " ".join(f"{as_text(k)}={as_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return " ".join(as_text(v) for v in value)
    return json.dumps(value, default=str, ensure_ascii=False)


def everything_in_redis(r: redis.Redis) -> str:
    return "\n".join(f"{as_text(k)} {as_text(read_key(r, k))}" for k in r.scan_iter("*"))


def everything_in_the_database(c: Cluster) -> str:
    parts = []
    with c.store.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                parts.append(f"{table} {as_text(list(row))}")
    assert parts
    return "\n".join(parts)


def every_file(root: Path) -> Iterator[tuple[str, str]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield str(path), path.read_bytes().decode("utf-8", errors="replace")


def sse(h: Harness, run_id: str) -> str:
    with (
        httpx.Client(base_url=h.server.url, timeout=60) as plain,
        plain.stream(
            "GET", f"/api/v1/runs/{run_id}/logs/stream", params={"token": h.token}
        ) as stream,
    ):
        assert stream.status_code == 200
        text = "\n".join(stream.iter_lines())
    assert "event: end" in text, text
    return text


def http_reads(h: Harness, run_ids: list[str], flows: list[str], schedules: list[str]) -> None:
    h.get("/api/v1/runs", limit=1000)
    h.get("/api/v1/runs", limit=1000, q="received")
    for run_id in run_ids:
        h.get(f"/api/v1/runs/{run_id}")
        h.get(f"/api/v1/runs/{run_id}/logs")
        h.get(f"/api/v1/runs/{run_id}/result")
        h.answers["sse"].append(sse(h, run_id))
    h.get("/api/v1/workflow-runs", limit=1000)
    for workflow_id in flows:
        h.get(f"/api/v1/workflow-runs/{workflow_id}")
    h.get("/api/v1/schedules", limit=1000)
    for schedule_id in schedules:
        h.get(f"/api/v1/schedules/{schedule_id}")


def cli_reads(h: Harness, run_ids: list[str], flows: list[str], schedules: list[str]) -> None:
    h.cli("runs", "list", "--json", "--limit", "1000")
    h.cli("runs", "list", "--limit", "1000")
    h.cli("schedules", "list")
    h.cli("schedules", "list", "--json")
    for run_id in run_ids:
        h.cli("runs", "show", run_id, "--json")
        h.cli("runs", "logs", run_id)
    for workflow_id in flows:
        h.cli("workflows", "show", workflow_id)
    for schedule_id in schedules:
        h.cli("schedules", "show", schedule_id, "--json")


def mcp_reads(h: Harness, run_ids: list[str], others: list[str]) -> Callable[[Session], Any]:
    async def read(s: Session) -> None:
        await answer(h, s, "job_list", {"limit": 200})
        await answer(h, s, "job_search", {"query": "received"})
        for run_id in run_ids:
            await answer(h, s, "get_job_status", {"run_id": run_id, "logs": 200})
            await answer(h, s, "job_result", {"id": run_id})
        for other in others:
            await answer(h, s, "job_show", {"id": other})

    return read


def leaks(sentinels: set[str], places: dict[str, str]) -> list[str]:
    found = []
    for secret in sorted(sentinels):
        escaped = json.dumps(secret)[1:-1]  # as JSON with ensure_ascii writes it
        for name, text in places.items():
            for form in {secret, escaped}:
                at_ = text.find(form)
                if at_ >= 0:
                    found.append(f"{secret!r} in {name}: ...{text[max(0, at_ - 150) : at_ + 80]}")
    return found


# --- the test -----------------------------------------------------------------------------------


@pytest.mark.timeout(600)  # every shape on every path: 85-105 s alone, twice that on a busy machine
def test_no_secret_is_found_anywhere_and_every_body_gets_the_real_value(
    tmp_path: Path, redis_url: str, database_url: str | None
) -> None:
    with cluster(tmp_path, redis_url, database_url) as c:
        c.start_worker("w", concurrency=2)
        c.start_beat()
        flower = Flower(c, "flower", auth=f"{USER}:{PASSWORD}")
        token = c.client.admin.create_token(ADMIN)[1]
        try:
            flower.wait_ready()
            c.wait_for_log("w", "Events of group {task} enabled by remote", timeout=30)
            _until_flower_receives(c, flower)
            with Serve(c) as server:
                h = Harness(c, server, token)
                try:
                    exercise(h, flower)
                finally:
                    h.http.close()
        finally:
            flower.stop()


def exercise(h: Harness, flower: Flower) -> None:
    c = h.c
    queued: Queued = []
    by_door = {door: submit_shapes(h, door, queued) for door in DOORS}
    submit_workflows(h)
    create_schedules(h)
    by_door["mcp"] = asyncio.run(mcp_session(h, queued, mcp_submissions(h)))
    schedules = [*h.fires, *(k for k in h.flows if k.startswith("sch_"))]
    run_ids = [i for ids in by_door.values() for i in ids]

    # Every body got the real values; what was stored shows masks.
    check_runs(h, run_ids)
    step_runs = [
        i
        for flow, want in h.flows.items()
        if flow.startswith("wf_")
        for i in wait_workflow(h, flow, want)
    ]
    fired = []
    for schedule_id, want in h.fires.items():
        run_id = wait_schedule_fire(h, schedule_id)
        h.expected[run_id] = want
        fired.append(run_id)
    check_runs(h, fired)
    fired_flows = []
    for schedule_id, want in [(k, v) for k, v in h.flows.items() if k.startswith("sch_")]:
        fired_flows.append(wait_schedule_fire(h, schedule_id))
        step_runs += wait_workflow(h, fired_flows[-1], want)
    flows = [*(k for k in h.flows if k.startswith("wf_")), *fired_flows]
    all_runs = [*run_ids, *fired, *step_runs]

    # Read everything back through every door.
    http_reads(h, all_runs, flows, schedules)
    cli_reads(h, by_door["cli"] + fired + step_runs[:3], flows, schedules)
    asyncio.run(mcp_session(h, [], mcp_reads(h, all_runs, [*flows, *schedules])))
    shown_by_flower = [flower.get("/api/tasks").text, flower.get("/api/workers").text]
    shown_by_flower += [flower.get(f"/api/task/info/{i}").text for i in all_runs]

    places = {
        "database": everything_in_the_database(c),
        "broker redis": everything_in_redis(c.redis),
        "result redis": everything_in_redis(c.results),
        "http answers": "\n".join(h.answers["http"]),
        "sse streams": "\n".join(h.answers["sse"]),
        "mcp answers": "\n".join(h.answers["mcp"]),
        "cli output": "\n".join(h.answers["cli"]),
        "flower api": "\n".join(shown_by_flower),
        **dict(every_file(c.tmp)),
    }
    assert len(h.sentinels) > 7 * 4 + 4 * 5  # every shape by every door, workflows, schedules
    seen_in = {name for name, text in places.items() if VISIBLE in text}
    assert {"database", "http answers", "mcp answers", "cli output"} <= seen_in, seen_in
    found = leaks(h.sentinels, places)
    assert not found, "\n".join(found[:20])


def submit_workflows(h: Harness) -> None:
    """The catalog workflow (declared and inferred secrets) by the client, HTTP and the CLI,
    and an ad hoc one (secrets by reference, as for_each items, written into a step) by the
    client and HTTP."""
    given, want = flow_input(h, "client")
    h.flows[h.c.client.workflows.submit("tests.secret_flow", given)] = want
    given, want = flow_input(h, "http")
    started = h.post("/api/v1/workflows/tests.secret_flow/runs", {"input": given})
    h.flows[started["workflow_run_id"]] = want
    given, want = flow_input(h, "cli")
    shown = h.cli("workflows", "submit", "tests.secret_flow", "--input", json.dumps(given))
    h.flows[shown.strip()] = want
    definition, given, want = adhoc(h, "client")
    h.flows[h.c.client.workflows.submit(definition, given)] = want
    definition, given, want = adhoc(h, "http")
    started = h.post("/api/v1/workflow-runs", {"workflow": definition, "input": given})
    h.flows[started["workflow_run_id"]] = want


def create_schedules(h: Harness) -> None:
    """Schedules carrying secrets, fired by beat in a few seconds, each changed once (so the
    change re-seals what was sealed): of a job by the client and the CLI, of the catalog
    workflow by HTTP."""
    secret = h.secret("schedclient")
    job, make, values = SHAPES["list"]
    made = h.c.client.schedules.create(job, cadence.once(at(FIRE_IN), input=make(secret)))
    h.c.client.schedules.update(made.id, metadata={"changed": True})
    h.fires[made.id] = digest(values(secret))
    secret = h.secret("schedcli")
    given = json.dumps({"token": secret})
    when = at(FIRE_IN)
    shown = h.cli(
        "schedules", "create", "tests.secret_marked", "--at", when, "--input", given, "--json"
    )
    h.fires[json.loads(shown)["id"]] = digest([secret])
    given_flow, want = flow_input(h, "sched")
    body = {"job": "tests.secret_flow", "kind": "once", "at": at(FIRE_IN), "input": given_flow}
    record = h.post("/api/v1/schedules", body)
    h.post(f"/api/v1/schedules/{record['id']}", {"metadata": {"changed": True}}, "PATCH")
    h.flows[record["id"]] = want


def mcp_submissions(h: Harness) -> Callable[[Session], Any]:
    """Through MCP: a schedule of a job and a run of the catalog workflow."""

    async def submit(s: Session) -> None:
        secret = h.secret("schedmcp")
        job, make, values = SHAPES["dict"]
        arguments = {"job": job, "input": make(secret), "schedule": {"once": at(FIRE_IN)}}
        created = await answer(h, s, "job_create", arguments)
        h.fires[created["schedule"]["schedule_id"]] = digest(values(secret))
        given, want = flow_input(h, "mcp")
        started = await answer(h, s, "job_create", {"job": "tests.secret_flow", "input": given})
        h.flows[started["workflow_run_id"]] = want

    return submit
