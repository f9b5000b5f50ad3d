"""The HTTP API end to end: `jobsys serve` in a subprocess on a real port, a real worker, real
Redis and the run store, driven with httpx as any producer in any language would."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from jobsys import Principal
from jobsys.store import schema
from tests.cluster import Cluster
from tests.servers import Serve
from tests.waiting import NotYet, eventually

pytestmark = [pytest.mark.integration, pytest.mark.interface]

ADMIN = Principal(id="ada", roles=("admin",), tenant="default")
VIEWER = Principal(id="vic", roles=("viewer",), tenant="default")
OTHER_TENANT = Principal(id="otto", roles=("ops",), tenant="elsewhere")


class ApiServer(Serve):
    """`python -m jobsys serve` against a cluster, with tokens for a few principals."""

    def __init__(self, cluster: Cluster, **env: str) -> None:
        self.tokens = {
            p.id: cluster.client.admin.create_token(p)[1] for p in (ADMIN, VIEWER, OTHER_TENANT)
        }
        super().__init__(cluster, **env)

    def client(self, who: Principal | None = ADMIN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who.id]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def server(shared: Cluster) -> Iterator[ApiServer]:
    with ApiServer(shared) as s:
        yield s
    assert "Traceback" not in s.log(), s.log()[-5000:]  # no bug was logged


@pytest.fixture(scope="module")
def api(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client(ADMIN) as c:
        yield c


def poll(
    fetch: Callable[[], Any],
    done: Callable[[Any], bool],
    timeout: float = 60,
    show: Callable[[Any], Any] = repr,
) -> Any:
    """``fetch()`` again until ``done`` says its answer is final; that answer (on a timeout,
    the last one as ``show`` shows it)."""

    def final() -> list[Any] | NotYet:
        value = fetch()
        return [value] if done(value) else NotYet(repr(show(value))[:3000])

    return eventually(final, timeout, what="a final answer")[0]


def wait_run(api: httpx.Client, run_id: str, timeout: float = 60) -> dict[str, Any]:
    return poll(
        lambda: api.get(f"/api/v1/runs/{run_id}").json(),
        lambda r: r["state"] in ("completed", "failed", "cancelled"),
        timeout,
    )


def assert_error(resp: httpx.Response, status: int, type_: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"type", "message", "fields"}
    assert error["message"] and isinstance(error["fields"], list)
    if type_ is not None:
        assert error["type"] == type_, error
    return error


def run_count(cluster: Cluster) -> int:
    return cluster.store.count()


# --- service ---------------------------------------------------------------------------------


def test_health_ready_and_openapi(server: ApiServer) -> None:
    with server.client(None) as anonymous:
        assert anonymous.get("/api/v1/health").json() == {"status": "ok"}
        assert anonymous.get("/api/v1/ready").json() == {
            "status": "ready",
            "database": "ok",
            "broker": "ok",
        }
        doc = anonymous.get("/openapi.json").json()
        assert anonymous.get("/docs").status_code == 200
        page = anonymous.get("/")  # the dashboard asks for its token itself
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert anonymous.get("/static/index.html").status_code == 200
        assert_error(anonymous.get("/static/nothing-here.js"), 404)
    paths = doc["paths"]
    for path, method in [
        ("/api/v1/jobs", "get"),
        ("/api/v1/jobs/{name}", "get"),
        ("/api/v1/jobs/{name}/runs", "post"),
        ("/api/v1/runs", "get"),
        ("/api/v1/runs/{run_id}", "get"),
        ("/api/v1/runs/{run_id}/events", "get"),
        ("/api/v1/runs/{run_id}/logs", "get"),
        ("/api/v1/runs/{run_id}/logs/stream", "get"),
        ("/api/v1/runs/{run_id}/result", "get"),
        ("/api/v1/runs/{run_id}/cancel", "post"),
        ("/api/v1/runs/{run_id}/retry", "post"),
        ("/api/v1/schedules", "post"),
        ("/api/v1/schedules/{schedule_id}", "patch"),
        ("/api/v1/schedules/{schedule_id}/trigger", "post"),
        ("/api/v1/workflows/{name}/runs", "post"),
        ("/api/v1/workflow-runs/{workflow_id}", "get"),
        ("/api/v1/definitions", "post"),
        ("/api/v1/stats", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths.get(path, {}), (path, method)
    submit = paths["/api/v1/jobs/{name}/runs"]["post"]
    assert "requestBody" in submit
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_tokens_are_required(server: ApiServer) -> None:
    with server.client(None) as anonymous:
        for path in ("/api/v1/jobs", "/api/v1/runs", "/api/v1/me", "/api/v1/stats", "/metrics"):
            error = assert_error(anonymous.get(path), 401, "Unauthenticated")
            assert "Bearer" in error["message"]
        bad = {"Authorization": "Bearer js_nope_nope"}
        assert_error(anonymous.get("/api/v1/me", headers=bad), 401, "Unauthenticated")
        basic = {"Authorization": "Basic YWRhOnNlY3JldA=="}
        assert_error(anonymous.get("/api/v1/me", headers=basic), 401, "Unauthenticated")
    with server.client(VIEWER) as viewer:
        assert viewer.get("/api/v1/me").json() == {
            "id": "vic",
            "roles": ["viewer"],
            "scopes": [],
            "tenant": "default",
            "admin": False,
        }


def test_errors_share_one_shape(api: httpx.Client) -> None:
    assert_error(api.get("/api/v1/nowhere"), 404, "NotFound")
    assert_error(api.delete("/api/v1/runs/abc"), 405, "MethodNotAllowed")
    assert_error(
        api.post("/api/v1/jobs/examples.add/runs", content=b'{"input": '), 400, "MalformedJSON"
    )
    assert_error(api.post("/api/v1/jobs/examples.add/runs", content=b"[1, 2]"), 400)
    big = b'{"input": {"a": "' + b"x" * (1 << 20) + b'"}}'
    assert_error(api.post("/api/v1/jobs/examples.add/runs", content=big), 413, "PayloadTooLarge")
    deep = b'{"input": {"a": ' + b"[" * 40 + b"]" * 40 + b"}}"
    assert_error(api.post("/api/v1/jobs/examples.add/runs", content=deep), 422)
    error = assert_error(
        api.post("/api/v1/jobs/examples.add/runs", json={"input": {}, "wait": "soon"}), 422
    )
    assert ["body", "wait"] in [f["loc"] for f in error["fields"]]
    assert_error(api.get("/api/v1/runs/a%00b"), 422)


# --- jobs and runs ---------------------------------------------------------------------------


def test_jobs_list_filters_and_show(api: httpx.Client) -> None:
    body = api.get("/api/v1/jobs").json()
    names = {j["name"] for j in body["jobs"]}
    assert {"examples.add", "examples.sleep", "tests.chatty"} <= names
    assert all(j["kind"] == "code" for j in body["jobs"] if j["name"].startswith("examples."))
    assert "examples.diamond" in {w["name"] for w in body["workflows"]}
    math = api.get("/api/v1/jobs", params={"tag": "math"}).json()["jobs"]
    assert [j["name"] for j in math] == ["examples.add"]
    core = api.get("/api/v1/jobs", params={"label": "team=core"}).json()["jobs"]
    assert [j["name"] for j in core] == ["examples.add"]
    assert api.get("/api/v1/jobs", params={"label": "team=none"}).json()["jobs"] == []
    found = api.get("/api/v1/jobs", params={"q": "integers"}).json()["jobs"]
    assert [j["name"] for j in found] == ["examples.add"]
    add = api.get("/api/v1/jobs/examples.add").json()
    assert add["input_schema"]["required"] == ["a", "b"]
    assert add["output_schema"]["type"] == "integer"


def test_submit_in_background_then_poll(api: httpx.Client) -> None:
    resp = api.post("/api/v1/jobs/examples.add/runs", json={"input": {"a": 2, "b": 3}})
    assert resp.status_code == 202, resp.text
    started = resp.json()
    assert started["url"] == f"/api/v1/runs/{started['run_id']}"
    assert started["state"] in ("pending", "running", "completed")  # as the store has it
    run = wait_run(api, started["run_id"])
    assert run["state"] == "completed" and run["output"] == 5 and run["attempts"] == 1
    result = api.get(f"/api/v1/runs/{run['id']}/result").json()
    assert result == {"run_id": run["id"], "state": "completed", "output": 5}


def test_submit_and_wait_returns_the_output(api: httpx.Client) -> None:
    resp = api.post(
        "/api/v1/jobs/examples.add/runs",
        json={"input": {"a": 20, "b": 22}, "wait": 60, "tags": ["http"], "metadata": {"k": 1}},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["state"] == "completed" and body["output"] == 42 and body["error"] is None
    assert body["run"]["id"] == body["run_id"] and "http" in body["run"]["tags"]
    assert body["run"]["meta"] == {"k": 1}


def test_waiting_for_a_failed_run_gives_its_error(api: httpx.Client) -> None:
    resp = api.post(
        "/api/v1/jobs/examples.fail/runs", json={"input": {"message": "no luck"}, "wait": 60}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["state"] == "failed" and body["output"] is None
    assert body["error"]["message"] == "no luck"
    result = api.get(f"/api/v1/runs/{body['run_id']}/result").json()
    assert result["state"] == "failed" and result["error"]["type"] == "Fatal"


def test_invalid_input_names_the_field_and_records_nothing(
    api: httpx.Client, shared: Cluster
) -> None:
    before = run_count(shared)
    resp = api.post("/api/v1/jobs/examples.add/runs", json={"input": {"a": "two"}})
    error = assert_error(resp, 422, "InvalidInput")
    locs = {tuple(f["loc"]): f["type"] for f in error["fields"]}
    assert locs == {("a",): "int_parsing", ("b",): "missing"}
    assert "examples.add" in error["message"]
    bad_option = api.post(
        "/api/v1/jobs/examples.add/runs", json={"input": {"a": 1, "b": 2}, "priority": 12}
    )
    assert [f["loc"] for f in assert_error(bad_option, 422)["fields"]] == [["priority"]]
    typo = api.post("/api/v1/jobs/examples.add/runs", json={"input": {"a": 1, "b": 2}, "tag": []})
    assert [f["loc"] for f in assert_error(typo, 422, "InvalidRequest")["fields"]] == [
        ["body", "tag"]
    ]
    assert run_count(shared) == before


def test_unknown_job_is_404(api: httpx.Client, shared: Cluster) -> None:
    before = run_count(shared)
    error = assert_error(
        api.post("/api/v1/jobs/examples.addd/runs", json={"input": {}}), 404, "UnknownJob"
    )
    assert "examples.add" in error["message"]  # the close match is suggested
    assert_error(api.get("/api/v1/jobs/nope"), 404, "UnknownJob")
    assert_error(api.get("/api/v1/runs/0123456789abcdef"), 404, "RunNotFound")
    assert run_count(shared) == before


def test_viewer_is_denied_admin_only_job(server: ApiServer, api: httpx.Client) -> None:
    admin_run = api.post("/api/v1/jobs/examples.admin_only/runs", json={"wait": 60}).json()
    assert admin_run["state"] == "completed" and admin_run["output"] == {"by": "ada"}
    before = run_count(server.cluster)
    with server.client(VIEWER) as viewer:
        denied = viewer.post("/api/v1/jobs/examples.admin_only/runs", json={"input": {}})
        error = assert_error(denied, 403, "PermissionDenied")
        assert "vic" in error["message"] and "examples.admin_only" in error["message"]
        assert_error(viewer.get(f"/api/v1/runs/{admin_run['run_id']}"), 403, "PermissionDenied")
        listed = viewer.get("/api/v1/runs", params={"limit": 1000}).json()["runs"]
        assert admin_run["run_id"] not in {r["id"] for r in listed}
        assert "examples.admin_only" not in {
            j["name"] for j in viewer.get("/api/v1/jobs").json()["jobs"]
        }
        assert_error(viewer.get("/metrics"), 403, "PermissionDenied")
        # each job says what the caller may do to it: a hint; the server still checks
        may = {j["name"]: j["may"] for j in viewer.get("/api/v1/jobs").json()["jobs"]}
        assert may["examples.add"] == {
            **dict.fromkeys(("execute", "create", "update", "delete"), True),
            "pause": False,  # admins only, unless a rule says otherwise
        }
        assert may["tests.operated"] == dict.fromkeys(
            ("execute", "create", "update", "delete", "pause"), False
        )
        assert viewer.get("/api/v1/jobs/tests.operated").json()["may"]["delete"] is False
        # a guard that decides on the input is not asked without one
        assert may["tests.small_pay"]["create"] is True
        # a job without rules is open to the viewer
        mine = viewer.post("/api/v1/jobs/examples.add/runs", json={"input": {"a": 1, "b": 1}})
        assert mine.status_code == 202
    with server.client(OTHER_TENANT) as other:
        assert_error(other.get(f"/api/v1/runs/{mine.json()['run_id']}"), 404, "RunNotFound")
    assert run_count(server.cluster) == before + 1


def test_list_filter_and_search_runs(api: httpx.Client) -> None:
    word = f"zebra{uuid.uuid4().hex[:8]}"
    failed = api.post(
        "/api/v1/jobs/examples.fail/runs",
        json={"input": {"message": f"the {word} escaped"}, "wait": 60, "tags": [word]},
    ).json()
    done = api.post(
        "/api/v1/jobs/examples.add/runs",
        json={"input": {"a": 1, "b": 1}, "wait": 60, "tags": [word]},
    ).json()
    assert failed["state"] == "failed" and done["state"] == "completed"

    def ids(**params: Any) -> list[str]:
        resp = api.get("/api/v1/runs", params=params)
        assert resp.status_code == 200, resp.text
        return [r["id"] for r in resp.json()["runs"]]

    assert ids(tag=word) == [done["run_id"], failed["run_id"]]  # newest first
    assert ids(tag=word, state="failed") == [failed["run_id"]]
    assert ids(tag=word, job="examples.add") == [done["run_id"]]
    assert ids(q=word) == [failed["run_id"]]
    assert ids(q=f"{word} escaped") == [failed["run_id"]]
    assert ids(q=f"{word} unrelated") == []
    assert ids(tag=word, limit=1) == [done["run_id"]]
    assert ids(tag=word, since="1h") == [done["run_id"], failed["run_id"]]
    assert ids(tag=word, until="2000-01-01T00:00:00Z") == []
    assert_error(api.get("/api/v1/runs", params={"state": "sleeping"}), 422, "InvalidInput")
    assert_error(api.get("/api/v1/runs", params={"limit": 0}), 422, "InvalidRequest")


def parse_events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    name, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def test_logs_and_the_live_stream(server: ApiServer, api: httpx.Client) -> None:
    run_id = api.post("/api/v1/jobs/tests.chatty/runs", json={"input": {"seconds": 2}}).json()[
        "run_id"
    ]
    events: list[tuple[str, Any]] = []
    token = server.tokens["ada"]
    with (
        httpx.Client(base_url=server.url, timeout=60) as plain,
        plain.stream(
            "GET", f"/api/v1/runs/{run_id}/logs/stream", params={"token": token}
        ) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events.extend(parse_events(stream.iter_lines()))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "end" and events[-1][1] == {"run_id": run_id, "state": "completed"}
    assert kinds.count("end") == 1
    logs = [d["message"] for k, d in events if k == "log"]
    assert logs == [f"step {i} of 10" for i in range(1, 11)]
    states = [d for k, d in events if k == "state"]
    assert states[-1]["state"] == "completed" and states[-1]["progress"]["pct"] == 100
    assert len(states) >= 2  # seen while it ran, then finished
    listed = api.get(f"/api/v1/runs/{run_id}/logs").json()["logs"]
    assert [x["message"] for x in listed] == logs
    after = api.get(f"/api/v1/runs/{run_id}/logs", params={"after": listed[4]["id"]}).json()
    assert [x["message"] for x in after["logs"]] == logs[5:]
    with server.client(None) as anonymous:
        assert_error(anonymous.get(f"/api/v1/runs/{run_id}/logs/stream"), 401)
    assert_error(api.get("/api/v1/runs/nope/logs/stream"), 404, "RunNotFound")


def test_cancel_and_retry(api: httpx.Client) -> None:
    run_id = api.post("/api/v1/jobs/examples.sleep/runs", json={"input": {"seconds": 60}}).json()[
        "run_id"
    ]
    poll(lambda: api.get(f"/api/v1/runs/{run_id}").json(), lambda r: r["state"] == "running")
    assert_error(api.get(f"/api/v1/runs/{run_id}/result"), 409, "InvalidTransition")
    cancelled = api.post(f"/api/v1/runs/{run_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"] is True
    assert wait_run(api, run_id)["state"] == "cancelled"
    assert_error(api.post(f"/api/v1/runs/{run_id}/cancel"), 409, "InvalidTransition")
    retried = api.post(f"/api/v1/runs/{run_id}/retry")
    assert retried.status_code == 202, retried.text
    new_id = retried.json()["run_id"]
    assert new_id != run_id
    again = api.get(f"/api/v1/runs/{new_id}").json()
    assert again["parent_id"] == run_id and again["input"] == {"seconds": 60.0}
    assert api.post(f"/api/v1/runs/{new_id}/cancel").status_code == 200
    assert wait_run(api, new_id)["state"] == "cancelled"
    # Its history says who cancelled it and as which run it was retried.
    history = api.get(f"/api/v1/runs/{run_id}/events").json()
    actions = [e["detail"] for e in history["events"] if e["kind"] == "action"]
    assert actions == [{"action": "cancel_requested"}, {"action": "retried", "run_id": new_id}]
    assert {e["actor"] for e in history["events"] if e["kind"] == "action"} == {ADMIN.id}
    [attempt] = history["attempts"]
    assert attempt["outcome"] == "cancelled" and attempt["error"]["reason"] == "cancelled"
    assert_error(api.get("/api/v1/runs/nope/events"), 404, "RunNotFound")
    done = api.post("/api/v1/jobs/examples.add/runs", json={"input": {"a": 1, "b": 2}, "wait": 60})
    assert_error(api.post(f"/api/v1/runs/{done.json()['run_id']}/retry"), 409, "InvalidTransition")


# --- schedules and workflows -----------------------------------------------------------------


def test_schedule_lifecycle(api: httpx.Client) -> None:
    later = "2100-01-01T00:00:00Z"
    resp = api.post(
        "/api/v1/schedules",
        json={
            "job": "examples.add",
            "name": "nightly sum",
            "kind": "every",
            "every": 3600,
            "start_at": later,
            "input": {"a": 4, "b": 5},
            "options": {"max_runs": 10},
        },
    )
    assert resp.status_code == 201, resp.text
    schedule = resp.json()
    sid = schedule["id"]
    assert schedule["state"] == "active" and schedule["cadence"]["every"] == 3600
    assert schedule["options"]["max_runs"] == 10 and schedule["version"] == 1
    changed = api.patch(f"/api/v1/schedules/{sid}", json={"every": 7200, "overlap": "allow"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2 and changed.json()["cadence"]["every"] == 7200
    shown = api.get(f"/api/v1/schedules/{sid}").json()
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert api.post(f"/api/v1/schedules/{sid}/pause").json()["state"] == "paused"
    assert api.post(f"/api/v1/schedules/{sid}/resume").json()["state"] == "active"
    fired = api.post(f"/api/v1/schedules/{sid}/trigger")
    assert fired.status_code == 202, fired.text
    run = wait_run(api, fired.json()["run_id"])
    assert run["state"] == "completed" and run["output"] == 9 and run["schedule_id"] == sid
    assert sid in {s["id"] for s in api.get("/api/v1/schedules").json()["schedules"]}
    assert api.delete(f"/api/v1/schedules/{sid}").json()["state"] == "cancelled"
    bad_cron = api.post(
        "/api/v1/schedules",
        json={"job": "examples.add", "kind": "cron", "cron": "61 * * * *", "input": {}},
    )
    assert [f["loc"] for f in assert_error(bad_cron, 422, "InvalidSchedule")["fields"]] == [
        ["cron"]
    ]
    bad_input = api.post(
        "/api/v1/schedules",
        json={"job": "examples.add", "kind": "every", "every": 60, "input": {"a": 1}},
    )
    assert [f["loc"] for f in assert_error(bad_input, 422, "InvalidInput")["fields"]] == [["b"]]
    unknown = api.post("/api/v1/schedules", json={"job": "nope", "kind": "every", "every": 60})
    assert_error(unknown, 404, "UnknownJob")
    assert_error(api.post("/api/v1/schedules/sch_nope/pause"), 404, "ScheduleNotFound")
    assert_error(api.patch(f"/api/v1/schedules/{sid}", json={}), 422)


def step_states(record: dict[str, Any]) -> dict[str, Any]:
    return {
        name: [step["state"], [(r["id"], r["state"], r["attempts"]) for r in step["runs"]]]
        for name, step in record["steps"].items()
    }


def test_workflow_run_with_steps(api: httpx.Client) -> None:
    resp = api.post(
        "/api/v1/workflows/examples.diamond/runs", json={"input": {"count": 3, "bonus": 1}}
    )
    assert resp.status_code == 202, resp.text
    wid = resp.json()["workflow_run_id"]
    record = poll(
        lambda: api.get(f"/api/v1/workflow-runs/{wid}").json(),
        lambda r: r["state"] != "running",
        timeout=90,
        show=step_states,
    )
    assert record["state"] == "completed", record
    steps = record["steps"]
    assert set(steps) == {"numbers", "squares", "offset", "total"}
    assert all(s["state"] == "succeeded" for s in steps.values())
    assert sorted(r["output"]["n"] for r in steps["squares"]["runs"]) == [1, 4, 9]
    assert steps["total"]["runs"][0]["output"] == {"total": 14 + 4, "parts": 3}
    assert sorted(map(tuple, record["edges"])) == [
        ("numbers", "offset"),
        ("numbers", "squares"),
        ("offset", "total"),
        ("squares", "total"),
    ]
    assert wid in {w["id"] for w in api.get("/api/v1/workflow-runs").json()["workflow_runs"]}
    assert_error(api.get("/api/v1/workflow-runs/wf_nope"), 404, "WorkflowNotFound")
    assert_error(api.post("/api/v1/workflows/nope/runs", json={}), 404, "UnknownJob")
    bad = api.post("/api/v1/workflows/examples.diamond/runs", json={"input": {"count": -1}})
    assert [f["loc"] for f in assert_error(bad, 422, "InvalidInput")["fields"]] == [["count"]]


def test_workflow_given_as_data(api: httpx.Client) -> None:
    data = {
        "name": "adhoc.pair",
        "steps": [
            {"name": "one", "job": "examples.add", "input": {"a": 1, "b": 2}},
            {
                "name": "two",
                "job": "examples.add",
                "input": {"a": "$steps.one.output", "b": 10},
                "depends_on": ["one"],
            },
        ],
    }
    resp = api.post("/api/v1/workflow-runs", json={"workflow": data})
    assert resp.status_code == 202, resp.text
    wid = resp.json()["workflow_run_id"]
    record = poll(
        lambda: api.get(f"/api/v1/workflow-runs/{wid}").json(), lambda r: r["state"] != "running"
    )
    assert record["state"] == "completed" and record["steps"]["two"]["runs"][0]["output"] == 13
    cycle = {**data, "steps": [{**data["steps"][0], "depends_on": ["two"]}, data["steps"][1]]}
    error = assert_error(api.post("/api/v1/workflow-runs", json={"workflow": cycle}), 422)
    assert error["type"] == "WorkflowDeclarationError" and "cycle" in error["message"]


def test_definitions_register_submit_remove(api: httpx.Client, server: ApiServer) -> None:
    name = f"http.add10_{uuid.uuid4().hex[:6]}"
    data = {"name": name, "kind": "alias", "target": "examples.add", "defaults": {"b": 10}}
    resp = api.post("/api/v1/definitions", json=data)
    assert resp.status_code == 201, resp.text
    assert name in {d["name"] for d in api.get("/api/v1/definitions").json()["definitions"]}
    listed = {j["name"]: j for j in api.get("/api/v1/jobs").json()["jobs"]}
    assert listed[name]["kind"] == "alias"
    ran = api.post(f"/api/v1/jobs/{name}/runs", json={"input": {"a": 5}, "wait": 60}).json()
    assert ran["state"] == "completed" and ran["output"] == 15
    assert api.get(f"/api/v1/definitions/{name}").json()["name"] == name
    bad = api.post("/api/v1/definitions", json={"name": "x.y", "kind": "alias"})
    assert "target" in {str(f["loc"][-1]) for f in assert_error(bad, 422)["fields"]}
    with server.client(VIEWER) as viewer:
        http_job = {"name": "x.ping", "kind": "http", "url": "http://127.0.0.1:9/ping"}
        assert_error(viewer.post("/api/v1/definitions", json=http_job), 403)
    assert api.delete(f"/api/v1/definitions/{name}").json() == {"name": name, "removed": True}
    assert_error(api.post(f"/api/v1/jobs/{name}/runs", json={"input": {"a": 1}}), 404)
    assert_error(api.get(f"/api/v1/definitions/{name}"), 404)


def test_broker_down_keeps_the_run_not_yet_queued_or_503_with_require_queued(
    shared: Cluster,
) -> None:
    with ApiServer(shared, JOBSYS_BROKER_URL="redis://127.0.0.1:1/0") as down:
        with down.client(None) as anonymous:
            ready = anonymous.get("/api/v1/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["database"] == "ok" and ready.json()["broker"] != "ok"
        assert ready.json()["error"]["type"] == "ServiceUnavailable"
        with down.client(ADMIN) as api:
            # The run is recorded and its id answered at once: not failed, not yet queued.
            resp = api.post("/api/v1/jobs/examples.add/runs", json={"input": {"a": 1, "b": 2}})
            assert resp.status_code == 202, resp.text
            run = api.get(f"/api/v1/runs/{resp.json()['run_id']}").json()
            assert run["state"] == "pending" and run["waiting"]["reason"] == "not_queued", run
            # Queued or nothing: 503, and no record left behind.
            resp = api.post(
                "/api/v1/jobs/examples.add/runs",
                json={"input": {"a": 1, "b": 2}, "require_queued": True},
            )
            error = assert_error(resp, 503, "BrokerUnavailable")
            found = re.search(r"run ([0-9a-f]{32})", error["message"])
            assert found and "not kept" in error["message"], error
            assert_error(api.get(f"/api/v1/runs/{found.group(1)}"), 404)
        assert "Traceback" not in down.log()


# --- figures ---------------------------------------------------------------------------------


def store_counts(cluster: Cluster) -> dict[tuple[str, str], int]:
    """Counted here, independently of the code under test."""
    t = schema.runs
    with cluster.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.state, t.c.job, sa.func.count()).group_by(t.c.state, t.c.job)
        ).all()
    return {(str(s), str(j)): int(n) for s, j, n in rows}


def test_stats_and_metrics_count_the_runs(api: httpx.Client, shared: Cluster) -> None:
    for i in range(3):
        done = api.post(
            "/api/v1/jobs/examples.add/runs", json={"input": {"a": i, "b": 1}, "wait": 60}
        ).json()
        assert done["state"] == "completed"
    busy = ("pending", "running", "retrying", "blocked")
    stats = poll(  # quiet: nothing waiting or running, nothing left in the queue
        lambda: api.get("/api/v1/stats").json(),
        lambda s: not any(s["runs_by_state"][b] for b in busy) and s["queues"]["jobs"] == 0,
    )
    expected = store_counts(shared)
    completed_add = expected[("completed", "examples.add")]
    assert completed_add >= 3
    assert stats["runs_by_job_state"]["examples.add"]["completed"] == completed_add
    by_state: dict[str, int] = {}
    for (state, _), n in expected.items():
        by_state[state] = by_state.get(state, 0) + n
    assert {k: v for k, v in stats["runs_by_state"].items() if v} == by_state
    assert stats["throughput"]["last_300s"] >= 3
    assert any(w["name"].startswith("w1") for w in stats["workers"])

    text = api.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    gauge = {(s.labels["state"], s.labels["job"]): s.value for s in families["jobsys_runs"].samples}
    assert gauge == {k: float(v) for k, v in expected.items()}
    histogram = {
        (s.name, s.labels.get("le")): s.value
        for s in families["jobsys_run_duration_seconds"].samples
        if s.labels["job"] == "examples.add"
    }
    t = schema.runs
    with shared.store.engine.connect() as conn:  # ended after starting: they have a duration
        finished_add, under_a_minute = conn.execute(
            sa.select(sa.func.count(), sa.func.sum(sa.case((t.c.duration <= 60, 1), else_=0)))
            .where(t.c.job == "examples.add", t.c.duration.is_not(None))
            .where(t.c.state.in_(["completed", "failed"]))
        ).one()
    assert finished_add >= completed_add
    assert histogram[("jobsys_run_duration_seconds_count", None)] == finished_add
    assert histogram[("jobsys_run_duration_seconds_bucket", "+Inf")] == finished_add
    assert histogram[("jobsys_run_duration_seconds_bucket", "60.0")] == under_a_minute
    assert {s.labels["queue"] for s in families["jobsys_queue_depth"].samples} >= {"jobs"}
    workers = families["jobsys_worker_last_seen_seconds"].samples
    assert any(s.labels["worker"].startswith("w1") and s.value >= 0 for s in workers)
    assert [s.value for s in families["jobsys_schedule_lag_seconds"].samples] == [0.0]


def series_from_records(cluster: Cluster, answer: dict[str, Any], tenant: str) -> dict[str, Any]:
    """What ``GET /api/v1/stats/series`` should say, worked out here from the run records."""
    start = dt.datetime.fromisoformat(answer["start"])
    step, count = answer["bucket_seconds"], len(answer["buckets"])
    runs_: dict[str, list[int]] = {s: [0] * count for s in SERIES}
    durations: dict[str, list[float]] = {}
    t = schema.runs
    query = sa.select(t.c.created_at, t.c.finished_at, t.c.state, t.c.job, t.c.duration)
    with cluster.store.engine.connect() as conn:
        rows = conn.execute(query.where(t.c.tenant == tenant)).all()
    for created, finished, state, job, duration in rows:
        if 0 <= (i := int((created - start).total_seconds() // step)) < count:
            runs_["submitted"][i] += 1
        if finished is None or state not in SERIES:
            continue
        if 0 <= (i := int((finished - start).total_seconds() // step)) < count:
            runs_[state][i] += 1
            if state in ("completed", "failed") and duration is not None:
                durations.setdefault(job, []).append(duration)
    ranks = {
        job: (
            len(d),
            sorted(d)[math.ceil(0.5 * len(d)) - 1],
            sorted(d)[math.ceil(0.95 * len(d)) - 1],
        )
        for job, d in durations.items()
    }
    return {"runs": runs_, "durations": ranks}


SERIES = ("submitted", "cancelled", "completed", "failed")


def test_series_count_runs_by_state_and_bucket_and_each_jobs_percentiles(
    api: httpx.Client, shared: Cluster
) -> None:
    ids = [
        api.post("/api/v1/jobs/examples.add/runs", json={"input": {"a": i, "b": 1}}).json()[
            "run_id"
        ]
        for i in range(8)
    ] + [
        api.post("/api/v1/jobs/examples.fail/runs", json={"input": {}}).json()["run_id"]
        for _ in range(4)
    ]
    for run_id in ids:
        wait_run(api, run_id)

    def agrees(answer: dict[str, Any]) -> bool:
        want = series_from_records(shared, answer, "default")
        got = {d["job"]: (d["count"], d["p50"], d["p95"]) for d in answer["durations"]}
        return answer["runs"] == want["runs"] and got == want["durations"]

    hour = poll(lambda: api.get("/api/v1/stats/series?window=1h").json(), agrees)
    assert hour["bucket_seconds"] == 60 and len(hour["buckets"]) == 60
    assert hour["totals"]["submitted"] >= 12 and hour["totals"]["failed"] >= 4
    for i, rate in enumerate(hour["failure_rate"]):  # failed / ended, none where none ended
        ended = sum(hour["runs"][s][i] for s in ("completed", "failed", "cancelled"))
        assert rate == (pytest.approx(hour["runs"]["failed"][i] / ended) if ended else None)
    assert {"examples.add", "examples.fail"} <= {d["job"] for d in hour["durations"]}
    # queue depth and live workers: the server's own samples, at least the one just taken
    samples = hour["samples"]
    assert samples["every_seconds"] == 15
    assert [q for q in samples["queued"] if q is not None] and max(
        w or 0 for w in samples["workers"]
    ) >= 1

    day = poll(lambda: api.get("/api/v1/stats/series", params={"window": "1d"}).json(), agrees)
    assert day["bucket_seconds"] == 900 and len(day["buckets"]) == 96
    assert day["totals"] == hour["totals"]  # everything here happened in the last hour


def test_series_count_only_the_callers_tenant_and_check_the_window(
    server: ApiServer, api: httpx.Client
) -> None:
    wait_run(
        api,
        api.post("/api/v1/jobs/examples.add/runs", json={"input": {"a": 1, "b": 2}}).json()[
            "run_id"
        ],
    )
    ours = api.get("/api/v1/stats/series").json()
    assert ours["window"] == "1h" and ours["totals"]["submitted"] >= 1 and ours["durations"]
    with server.client(OTHER_TENANT) as other:
        theirs = other.get("/api/v1/stats/series").json()
        assert set(theirs["totals"].values()) == {0}, theirs["totals"]
        assert theirs["durations"] == [] and set(theirs["failure_rate"]) == {None}
        error = assert_error(other.get("/api/v1/stats/series?window=2h"), 422)
        assert any("window" in f["loc"] for f in error["fields"]), error
    with server.client(None) as anonymous:
        assert_error(anonymous.get("/api/v1/stats/series"), 401)
