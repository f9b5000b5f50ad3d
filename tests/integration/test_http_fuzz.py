"""Fuzzing the HTTP API: well over a thousand malformed requests (a fixed seed, so a failure
replays) against `jobsys serve` on a real port, with a real worker.

Oversized and endlessly nested bodies, wrong types in every field of every body, unknown jobs
and ids, bad cron expressions and time zones, control characters and odd Unicode in paths,
queries and bodies, wrong methods, missing and garbage tokens. Expected: no 5xx at all, every
error in the one error shape, the server alive and answering afterwards, no traceback in its
log, and nothing half-written: every run and schedule row created meanwhile is complete, and
each belongs to a request that was accepted.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import dataclasses
import json
import os
import random
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from jobsys import RunState
from jobsys.store import schema
from tests.cluster import Cluster
from tests.integration.test_http_api import ADMIN, VIEWER, ApiServer

pytestmark = [pytest.mark.integration, pytest.mark.interface]

SEED = int(os.environ.get("JOBSYS_FUZZ_SEED", "72024"))
"""Fixed, so that a failure replays; set JOBSYS_FUZZ_SEED to explore other requests."""
REQUESTS = 1500
THREADS = 4
MIB = 1 << 20

# --- building blocks -------------------------------------------------------------------------

ODD_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x01\x02\x1f",
    "\x7f",
    "\t\r\n",
    "\u202eevil",
    "\ufeffbom",
    "\u200b",
    "e\u0301\u0301\u0301",
    "🙂" * 3,
    "\U0001d518\U0001d52b\U0001d526",  # Fraktur letters
    "\uffff",
    "名前",
    "../../etc/passwd",
    "%00",
    "%",
    "%zz",
    "' OR 1=1 --",
    '"; DROP TABLE jobsys_runs; --',
    "<script>alert(1)</script>",
    "null",
    "true",
    "1e999",
    "NaN",
    "-1",
    "10",
    "x" * 250,
    "y" * 5000,
    "$steps.a.output",
    "$input",
    "$item",
]
RAW_STRINGS = ['"\\ud800"', '"\\udfff x"', '"a\\u0000b"', '"\\u0000"']
"""JSON string literals (as text) that decode to lone surrogates or NUL."""
CRONS = [
    "* * * * *",
    "61 * * * *",
    "* * * *",
    "* * * * * *",
    "@never",
    "@daily",
    "*/0 * * * *",
    "1-0 * * * *",
    "a b c d e",
    "0 0 31 2 *",
    "",
    " ",
    "\x00 * * * *",
    "0 8 * * 1 \u0000",
    "🙂 * * * *",
    "9" * 200,
    "L W # ? *",
]
ZONES = ["UTC", "Europe/Paris", "Mars/Olympus", "", "../../etc", "\x00", "+05:00", "🙂", "utc"]
JOBS = ["examples.add", "examples.addd", "", "x" * 300, "tests.ops_only", "examples.admin_only"]
MALFORMED = [
    b"{",
    b'{"input": }',
    b"[]",
    b"null",
    b"42",
    b'"text"',
    b"\xff\xfe\x00",
    b'{"input": {"a": 1, "b": 2}',
    b"{'input': {}}",
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": 1e999}',
    b"\xef\xbb\xbf{}",
    b'{"input": {"a": 1' + b"0" * 5000 + b"}}",
]
CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


@dataclasses.dataclass
class Req:
    kind: str
    method: str
    path: str
    params: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    content: bytes | None = None
    chunked: bool = False


class Generator:
    """Malformed requests from a seeded random source."""

    def __init__(self, rng: random.Random, known: dict[str, str], tokens: dict[str, str]):
        self.rng = rng
        self.known = known
        self.tokens = tokens

    # --- values ---

    def text(self) -> str:
        return self.rng.choice(ODD_TEXT)

    def value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if r < 0.12:
            return None
        if r < 0.2:
            return self.rng.choice([True, False])
        if r < 0.35:
            return self.rng.choice([0, -1, 1, 7, 2**31, -(2**63), 10**30, 10**400 // 10**380])
        if r < 0.45:
            return self.rng.choice([0.5, -0.0, 1e308, -1e-308, 3.14, 1e20])
        if r < 0.75 or depth > 3:
            return self.text()
        if r < 0.88:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        return {self.text()[:20]: self.value(depth + 1) for _ in range(self.rng.randint(0, 4))}

    def segment(self) -> str:
        """A path segment: an unknown id, or odd text, percent-encoded (or broken)."""
        r = self.rng.random()
        if r < 0.3:
            return self.rng.choice(["0" * 32, "nope", "wf_nope", "sch_nope", "a" * 500, "-1"])
        if r < 0.4:
            return self.rng.choice(["%00", "%ff%fe", "%zz", "%", "%e2%80%ae", "%c0%ae%c0%ae"])
        return urllib.parse.quote(self.text(), safe="")

    def auth(self, garbage: bool = False) -> dict[str, str]:
        r = self.rng.random()
        if r < 0.85 and not garbage:
            return {"Authorization": f"Bearer {self.tokens['ada']}"}
        if r < 0.95 and not garbage:
            return {"Authorization": f"Bearer {self.tokens['vic']}"}
        return self.rng.choice(
            [
                {},
                {"Authorization": "Bearer"},
                {"Authorization": ""},
                {"Authorization": "Bearer ,"},
                {"Authorization": "Basic YWRhOnNlY3JldA=="},
                {"Authorization": "Bearer js_" + "A" * 5000},
                {"Authorization": "Bearer js_x_y"},
                {"Authorization": "Bearer " + self.tokens["ada"][:-2]},
                {"Authorization": "bearer  " + self.tokens["ada"] + " extra"},
                {"Authorization": "Token " + self.tokens["ada"]},
            ]
        )

    # --- bodies ---

    def submit_body(self) -> dict[str, Any]:
        return {
            "input": {"a": 1, "b": 2},
            "wait": 0,
            "tags": ["fuzz"],
            "metadata": {"m": 1},
            "idempotency_key": None,
            "countdown": None,
            "start_at": None,
            "priority": None,
            "depends_on": [],
            "run_anyway": False,
        }

    def schedule_body(self) -> dict[str, Any]:
        if self.rng.random() < 0.5:
            return {
                "job": "examples.add",
                "kind": "cron",
                "cron": self.rng.choice(CRONS),
                "timezone": self.rng.choice(ZONES),
                "input": {"a": 1, "b": 2},
            }
        return {
            "job": "examples.add",
            "name": "fuzz",
            "kind": self.rng.choice(["every", "interval", "ongoing", "once", "cron", "weekly"]),
            "every": 3600,
            "at": "2100-01-01T00:00:00Z",
            "start_at": "2100-01-01T00:00:00Z",
            "end_at": self.rng.choice(["2099-01-01T00:00:00Z", "2101-01-01T00:00:00Z"]),
            "input": {"a": 1, "b": 2},
            "options": {"max_runs": 3, "overlap": "skip", "misfire": "skip", "grace": 5},
        }

    def workflow_body(self) -> dict[str, Any]:
        return {
            "workflow": {
                "name": "fuzz.flow",
                "description": "fuzzed",
                "timeout": 60,
                "failure": "continue",
                "steps": [
                    {"name": "a", "job": "examples.add", "input": {"a": 1, "b": 2}},
                    {
                        "name": "b",
                        "job": "examples.add",
                        "input": {"a": "$steps.a.output", "b": 1},
                        "depends_on": ["a"],
                        "retry": {"max_attempts": 2},
                    },
                ],
            },
            "input": {},
        }

    def definition_body(self) -> dict[str, Any]:
        return self.rng.choice(
            [
                {
                    "name": "fuzz.alias",
                    "kind": "alias",
                    "target": "examples.add",
                    "defaults": {"b": 1},
                    "schedule": {"kind": "cron", "cron": "0 0 1 1 *"},
                },
                {"name": "fuzz.ping", "kind": "http", "url": "http://127.0.0.1:9/x"},
                {
                    "name": "fuzz.wf",
                    "kind": "workflow",
                    "workflow": self.workflow_body()["workflow"],
                },
            ]
        )

    def mutate(self, body: Any) -> Any:
        """Replace, drop or add fields at any depth (one to three changes)."""
        body = copy.deepcopy(body)
        for _ in range(self.rng.randint(1, 3)):
            target, key = self._pick(body)
            if target is None:
                return self.value()
            action = self.rng.random()
            if isinstance(target, dict) and action < 0.15:
                target.pop(key, None)
            elif isinstance(target, dict) and action < 0.25:
                target[self.text()[:30] or "extra"] = self.value()
            else:
                target[key] = self.value()
        return body

    def _pick(self, body: Any) -> tuple[Any, Any]:
        node, parent, key = body, None, None
        while isinstance(node, dict | list) and node and self.rng.random() < 0.7:
            parent = node
            key = (
                self.rng.choice(list(node))
                if isinstance(node, dict)
                else self.rng.randrange(len(node))
            )
            node = node[key]
        if parent is None:
            if isinstance(body, dict) and body:
                return body, self.rng.choice(list(body))
            return None, None
        return parent, key

    def nested(self, depth: int) -> bytes:
        inner = self.rng.choice(['{"k": ', "["])
        close = "}" if inner.startswith("{") else "]"
        where = self.rng.choice(["input", "metadata", "tags", "workflow"])
        core = inner * depth + "1" + close * depth
        return f'{{"{where}": {core}}}'.encode()

    # --- requests ---

    def route(self) -> tuple[str, str, Any]:
        """A route of the API (method, path, a valid body for it or None)."""
        k = self.known
        seg = self.segment
        r = self.rng.random
        with_body: list[tuple[str, str, Any]] = [
            ("POST", f"/api/v1/jobs/{self.rng.choice(JOBS)}/runs", self.submit_body()),
            ("POST", "/api/v1/jobs/examples.add/runs", self.submit_body()),
            ("POST", "/api/v1/schedules", self.schedule_body()),
            (
                "PATCH",
                f"/api/v1/schedules/{k['schedule'] if r() < 0.5 else seg()}",
                {"every": 7200, "input": {"a": 1, "b": 2}},
            ),
            ("POST", "/api/v1/workflow-runs", self.workflow_body()),
            (
                "POST",
                f"/api/v1/workflows/{self.rng.choice(['tests.pair', seg()])}/runs",
                {"input": {}},
            ),
            ("POST", "/api/v1/definitions", self.definition_body()),
        ]
        if self.rng.random() < 0.6:
            return self.rng.choice(with_body)
        choices: list[tuple[str, str, Any]] = [
            ("GET", f"/api/v1/runs/{k['run'] if r() < 0.3 else seg()}", None),
            ("GET", f"/api/v1/runs/{seg()}/logs", None),
            ("GET", f"/api/v1/runs/{k['run'] if r() < 0.3 else seg()}/logs/stream", None),
            ("GET", f"/api/v1/runs/{k['run'] if r() < 0.3 else seg()}/result", None),
            ("POST", f"/api/v1/runs/{k['run'] if r() < 0.3 else seg()}/cancel", None),
            ("POST", f"/api/v1/runs/{k['run'] if r() < 0.3 else seg()}/retry", None),
            ("GET", f"/api/v1/jobs/{seg()}", None),
            ("GET", "/api/v1/jobs", None),
            ("GET", "/api/v1/runs", None),
            ("GET", f"/api/v1/schedules/{seg()}", None),
            ("DELETE", f"/api/v1/schedules/{seg()}", None),
            (
                "POST",
                f"/api/v1/schedules/{seg()}/{self.rng.choice(['pause', 'resume', 'trigger'])}",
                None,
            ),
            ("GET", f"/api/v1/workflow-runs/{seg()}", None),
            ("POST", f"/api/v1/workflow-runs/{seg()}/cancel", None),
            ("GET", f"/api/v1/definitions/{seg()}", None),
            ("DELETE", f"/api/v1/definitions/{seg()}", None),
            ("GET", "/api/v1/stats", None),
            ("GET", "/metrics", None),
            ("GET", "/api/v1/me", None),
            ("GET", f"/{seg()}", None),
            ("GET", f"/api/v1/{seg()}/{seg()}", None),
        ]
        return self.rng.choice(choices)

    def query(self) -> list[tuple[str, str]]:
        keys = [
            "limit",
            "state",
            "job",
            "tag",
            "since",
            "until",
            "q",
            "after",
            "wait",
            "label",
            "all",
            "token",
            "principal",
            self.text()[:10],
        ]
        values = [
            "-1",
            "0",
            "abc",
            "1e999",
            "NaN",
            "9" * 40,
            "",
            "2020-13-45",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "30x",
            "999999999d",
            "completed",
            "noequals",
            "=v",
            "a=b",
            "true",
            "301",
            "0.5",
        ]
        return [
            (self.rng.choice(keys), self.rng.choice([*values, self.text()]))
            for _ in range(self.rng.randint(1, 4))
        ]

    KINDS = {
        "oversized": 1,
        "deep": 8,
        "types": 30,
        "cron": 8,
        "control": 12,
        "method": 8,
        "auth": 8,
        "malformed": 8,
        "query": 12,
        "unknown": 8,
    }
    """Kinds of malformed request, and their weights."""

    def make(self) -> Req:
        kind = self.rng.choices(list(self.KINDS), weights=list(self.KINDS.values()))[0]
        method, path, body = self.route()
        req = Req(kind, method, path, headers=self.auth(garbage=kind == "auth"))
        getattr(self, f"_{kind}")(req, body)
        if req.content is not None and "Content-Type" not in req.headers:
            req.headers["Content-Type"] = "application/json"
        return req

    @staticmethod
    def _json(body: Any) -> bytes | None:
        return json.dumps(_bounded(body)).encode() if body is not None else None

    def _oversized(self, req: Req, body: Any) -> None:
        size = self.rng.choice([MIB + 1, MIB + 4096, 3 * MIB])
        req.method, req.path = "POST", "/api/v1/jobs/examples.add/runs"
        req.content = b'{"input": {"a": "' + b"x" * size + b'"}}'
        req.chunked = self.rng.random() < 0.5

    def _deep(self, req: Req, body: Any) -> None:
        req.method = "POST" if body is None else req.method
        req.content = self.nested(self.rng.choice([33, 40, 64, 500, 5000, 100_000]))

    def _types(self, req: Req, body: Any) -> None:
        req.content = self._json(self.mutate(self.value() if body is None else body))

    def _cron(self, req: Req, body: Any) -> None:
        body = self.schedule_body()
        body["cron"], body["kind"] = self.rng.choice(CRONS), "cron"
        req.method, req.path = "POST", "/api/v1/schedules"
        req.content = self._json(self.mutate(body) if self.rng.random() < 0.3 else body)

    def _control(self, req: Req, body: Any) -> None:
        req.params = [(self.rng.choice(["q", "job", "tag", "token"]), self.text())]
        if body is not None:
            text = json.dumps(_bounded(body))
            raw = self.rng.choice(RAW_STRINGS)
            text = text.replace('"fuzz"', raw, 1).replace('"a": 1', f'"a": {raw}', 1)
            req.content = text.encode()

    def _auth(self, req: Req, body: Any) -> None:
        req.content = self._json(body)

    def _method(self, req: Req, body: Any) -> None:
        req.method = self.rng.choice(METHODS)
        req.content = self._json(body)

    def _malformed(self, req: Req, body: Any) -> None:
        req.method = req.method if body is not None else "POST"
        req.content = self.rng.choice(MALFORMED)
        req.headers["Content-Type"] = self.rng.choice(CONTENT_TYPES)

    def _query(self, req: Req, body: Any) -> None:
        req.params = self.query()
        req.method = "GET" if self.rng.random() < 0.8 else req.method
        if body is not None and req.method != "GET":
            req.content = self._json(body)

    def _unknown(self, req: Req, body: Any) -> None:
        req.path = self.rng.choice(
            [
                f"/api/v1/jobs/{self.segment()}/runs",
                f"/api/v1/runs/{self.segment()}",
                f"/api/v1/workflows/{self.segment()}/runs",
                f"/api/v1/schedules/{self.segment()}",
            ]
        )
        req.method = "POST" if req.path.endswith("/runs") else "GET"
        req.content = json.dumps({"input": {"a": 1, "b": 2}}).encode()


def _bounded(body: Any) -> Any:
    """No waiting in the fuzz run: a body that would wait is made to wait at most a second."""
    if isinstance(body, dict) and "wait" in body:
        wait = body["wait"]
        try:
            number = float(wait)
        except (TypeError, ValueError, OverflowError):
            return body
        if 1 < number <= 300:
            body["wait"] = 1
    return body


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


# --- the run ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    req: Req
    status: int
    body: bytes
    content_type: str


def send(http: httpx.Client, req: Req) -> Outcome:
    content: Any = req.content
    if req.chunked and req.content is not None:
        content = chunks(req.content)
    resp = http.request(
        req.method, req.path, params=req.params or None, headers=req.headers, content=content
    )
    return Outcome(req, resp.status_code, resp.content, resp.headers.get("content-type", ""))


def rows(cluster: Cluster, table: sa.Table) -> dict[str, dict[str, Any]]:
    with cluster.store.engine.connect() as conn:
        return {r.id: r._asdict() for r in conn.execute(sa.select(table))}


def accepted_ids(outcomes: list[Outcome]) -> tuple[set[str], set[str], set[str]]:
    """Run, workflow run and schedule ids that accepted requests answered with."""
    run_ids: set[str] = set()
    workflow_ids: set[str] = set()
    schedule_ids: set[str] = set()
    for o in outcomes:
        if not 200 <= o.status < 300 or not o.content_type.startswith("application/json"):
            continue
        data = json.loads(o.body)
        if not isinstance(data, dict):
            continue
        for key, found in (("run_id", run_ids), ("workflow_run_id", workflow_ids)):
            if isinstance(data.get(key), str):
                found.add(data[key])
        if o.req.path == "/api/v1/schedules" and o.req.method == "POST":
            schedule_ids.add(data["id"])
        if o.req.path == "/api/v1/definitions" and o.req.method == "POST":
            schedule_ids.add("definition:" + str(data.get("name")))
    return run_ids, workflow_ids, schedule_ids


def check_error_shape(o: Outcome) -> None:
    if o.req.method == "HEAD" or not o.body:
        return
    assert o.content_type.startswith("application/json"), (o.req, o.status, o.body[:300])
    body = json.loads(o.body)
    assert set(body) >= {"error"}, (o.req, body)
    assert set(body["error"]) == {"type", "message", "fields"}, (o.req, body)
    assert isinstance(body["error"]["fields"], list) and body["error"]["message"]


def check_runs(before: dict[str, Any], after: dict[str, Any], accepted: set[str], flows: set[str]):
    valid_states = {s.value for s in RunState}
    for run_id, row in after.items():
        if run_id in before:
            continue
        assert run_id in accepted or row["workflow_id"] in flows, ("unaccepted run", row)
        assert isinstance(row["input"], dict), row
        assert row["state"] in valid_states and row["job"], row
        assert row["created_at"] is not None and row["principal_id"], row
        assert isinstance(row["tags"], list) and isinstance(row["meta"], dict), row


def check_schedules(before: dict[str, Any], after: dict[str, Any], accepted: set[str]) -> None:
    for sid, row in after.items():
        if sid in before:
            continue
        named = str(row["name"])
        assert sid in accepted or named in accepted, ("unaccepted schedule", row)
        assert isinstance(row["cadence"], dict) and row["cadence"].get("kind"), row
        assert isinstance(row["input"], dict) and row["job"] and row["state"], row


@pytest.fixture(scope="module")
def server(shared: Cluster) -> Iterator[ApiServer]:
    with ApiServer(shared) as s:
        yield s


@pytest.mark.timeout(900)
def test_fuzz_http_api(server: ApiServer, shared: Cluster) -> None:
    with server.client(ADMIN) as admin:
        done = admin.post(
            "/api/v1/jobs/examples.add/runs", json={"input": {"a": 1, "b": 1}, "wait": 60}
        ).json()
        schedule = admin.post(
            "/api/v1/schedules",
            json={
                "job": "examples.add",
                "kind": "every",
                "every": 3600,
                "start_at": "2100-01-01T00:00:00Z",
                "input": {"a": 1, "b": 2},
            },
        ).json()
    assert done["state"] == "completed"
    known = {"run": done["run_id"], "schedule": schedule["id"]}
    runs_before = rows(shared, schema.runs)
    schedules_before = rows(shared, schema.schedules)

    gen = Generator(random.Random(SEED), known, server.tokens)
    requests = [gen.make() for _ in range(REQUESTS)]
    with (
        httpx.Client(base_url=server.url, timeout=120) as http,
        concurrent.futures.ThreadPoolExecutor(THREADS) as pool,
    ):
        outcomes = list(pool.map(lambda r: send(http, r), requests))

    histogram = collections.Counter(o.status for o in outcomes)
    by_kind = collections.Counter((o.req.kind, o.status) for o in outcomes)
    print(f"\nfuzz: {len(outcomes)} requests (seed {SEED}); status histogram:")
    for status, n in sorted(histogram.items()):
        print(f"  {status}: {n}")
    print("by kind:", dict(sorted(by_kind.items())))

    server_errors = [(o.req, o.status, o.body[:300]) for o in outcomes if o.status >= 500]
    assert not server_errors, server_errors[:5]
    for o in outcomes:
        if 400 <= o.status < 500:
            check_error_shape(o)
    assert len(outcomes) >= 1000

    # alive, answering, and working
    assert server.proc.poll() is None
    with server.client(ADMIN) as admin:
        assert admin.get("/api/v1/health").json() == {"status": "ok"}
        again = admin.post(
            "/api/v1/jobs/examples.add/runs", json={"input": {"a": 2, "b": 2}, "wait": 60}
        ).json()
        assert again["state"] == "completed" and again["output"] == 4
    log = server.log()
    assert "Traceback" not in log and "unhandled error" not in log, log[-5000:]

    # nothing half-written, nothing made by a rejected request
    run_ids, flows, schedule_ids = accepted_ids(outcomes)
    run_ids.add(again["run_id"])
    runs_after, schedules_after = rows(shared, schema.runs), rows(shared, schema.schedules)
    print(
        f"runs {len(runs_before)} -> {len(runs_after)} ({len(run_ids)} accepted submissions, "
        f"{len(flows)} workflow runs); schedules {len(schedules_before)} -> "
        f"{len(schedules_after)}"
    )
    check_runs(runs_before, runs_after, run_ids, flows)
    check_schedules(schedules_before, schedules_after, schedule_ids)
    with server.client(VIEWER) as viewer:
        assert viewer.get("/api/v1/me").status_code == 200
