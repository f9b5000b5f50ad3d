"""Jobs registered at runtime: picked up by a worker started before the registration, refused
with the field named when they cannot run, and gone (with their waiting runs failed) once
removed."""

from __future__ import annotations

import dataclasses
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobsys import RunState, SubmitOptions
from jobsys.base import errors
from jobsys.declare import permissions
from jobsys.declare.workflows import WorkflowState
from jobsys.service.client import Client
from tests.cluster import Cluster, cluster

pytestmark = pytest.mark.integration


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = 400 if b"refuse" in body else 200
        answer = json.dumps({"got": json.loads(body or b"null"), "path": self.path}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def c(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[Cluster]:
    tmp: Path = tmp_path_factory.mktemp("definitions")
    with cluster(tmp, redis_url, database_url, JOBSYS_HTTP_JOB_HOSTS="127.0.0.1") as cl:
        cl.start_worker("early", concurrency=1)  # before any registration
        yield cl


def test_an_alias_runs_on_a_worker_started_before_it_was_registered(c: Cluster) -> None:
    record = c.client.definitions.register(
        {
            "name": "team.add10",
            "kind": "alias",
            "target": "examples.add",
            "defaults": {"b": 10},
            "metadata": {"owner": "team"},
            "tags": ["team"],
        }
    )
    assert record["version"] == 1 and record["created_by"] == "local"
    spec = c.client.registry.get("team.add10")
    assert spec.input_schema()["properties"]["b"]["default"] == 10
    assert "team" in spec.tags and "math" in spec.tags  # the target's tags too

    run_id = c.client.submit("team.add10", {"a": 1})
    run = c.client.wait(run_id, timeout=30)
    assert run.state is RunState.COMPLETED and run.output == 11
    assert run.worker is not None and run.worker.startswith("early")
    assert run.meta == {"owner": "team"} and run.job == "team.add10"
    assert c.client.execute("team.add10", {"a": 1, "b": 2}, timeout=30) == 3  # own value wins

    # Registering again replaces it, with a new version; the worker sees the new defaults.
    again = c.client.definitions.register({**record, "defaults": {"b": 100}})
    assert again["version"] == 2
    assert c.client.execute("team.add10", {"a": 1}, timeout=30) == 101


def test_definitions_that_cannot_run_are_refused_naming_the_field(c: Cluster) -> None:
    cases: list[tuple[dict[str, Any], type[errors.JobsysError], str]] = [
        (
            {"name": "x.a", "kind": "alias", "target": "examples.nope"},
            errors.JobDeclarationError,
            "target",
        ),
        (
            {"name": "x.a", "kind": "alias", "target": "examples.add", "defaults": {"b": "ten"}},
            errors.InvalidInput,
            "defaults.b",
        ),
        (
            {"name": "x.a", "kind": "alias", "target": "examples.add", "defaults": {"zz": 1}},
            errors.InvalidInput,
            "defaults.zz",
        ),
        (
            {"name": "examples.add", "kind": "alias", "target": "examples.add"},
            errors.JobDeclarationError,
            "name",
        ),
        ({"name": "x.a", "kind": "shell", "command": "rm -rf /"}, errors.InvalidInput, "kind"),
        (
            {"name": "bad name!", "kind": "alias", "target": "examples.add"},
            errors.InvalidInput,
            "name",
        ),
        (
            {"name": "x.h", "kind": "http", "url": "http://example.com/x"},
            errors.InvalidInput,
            "url",
        ),
        ({"name": "x.h", "kind": "http", "url": "file:///etc/passwd"}, errors.InvalidInput, "url"),
        (
            {
                "name": "x.w",
                "kind": "workflow",
                "workflow": {"steps": [{"name": "a", "job": "examples.nope", "input": {}}]},
            },
            errors.WorkflowDeclarationError,
            "job",
        ),
        (
            {
                "name": "x.s",
                "kind": "alias",
                "target": "examples.add",
                "schedule": {"cron": "99 * * * *"},
            },
            errors.InvalidSchedule,
            "cron",
        ),
    ]
    before = len(c.client.definitions.list())
    for data, kind, field in cases:
        with pytest.raises(kind) as caught:
            c.client.definitions.register(data)
        assert field in str(caught.value), (data, str(caught.value))
    assert len(c.client.definitions.list()) == before


def test_removed_jobs_cannot_be_submitted_and_their_waiting_runs_fail(c: Cluster) -> None:
    c.client.definitions.register({"name": "team.gone", "kind": "alias", "target": "examples.add"})
    waiting = c.client.submit("team.gone", {"a": 1, "b": 1}, SubmitOptions(countdown=2))
    c.client.definitions.remove("team.gone")
    with pytest.raises(errors.UnknownJob):
        c.client.submit("team.gone", {"a": 1, "b": 1})
    with pytest.raises(errors.UnknownJob):
        c.client.definitions.remove("team.gone")
    run = c.client.wait(waiting, timeout=30)
    assert run.state is RunState.FAILED
    assert run.error is not None and run.error["reason"] == "unknown_job"
    assert "register it again" in run.error["message"]


def test_an_http_job_calls_an_allowed_host(c: Cluster, echo: str) -> None:
    c.client.definitions.register(
        {
            "name": "team.hook",
            "kind": "http",
            "url": f"{echo}/hook",
            "max_attempts": 1,
            "overridable": ["body"],  # a run sets only what the definition allows
        }
    )
    out = c.client.execute("team.hook", {"body": {"hello": "world"}}, timeout=30)
    assert out["status"] == 200
    assert out["body"] == {"got": {"hello": "world"}, "path": "/hook"}
    refused = c.client.submit("team.hook", {"body": "refuse"})
    run = c.client.wait(refused, timeout=30)
    assert run.state is RunState.FAILED and "answered 400" in run.error["message"]


def test_a_workflow_of_registered_jobs(c: Cluster) -> None:
    c.client.definitions.register(
        {"name": "team.sq", "kind": "alias", "target": "examples.square", "defaults": {"n": 3}}
    )
    c.client.definitions.register(
        {
            "name": "team.flow",
            "kind": "workflow",
            "workflow": {
                "steps": [
                    {"name": "sq", "job": "team.sq", "input": {}},
                    {
                        "name": "sum",
                        "job": "examples.add",
                        "input": {"a": "$steps.sq.output.n", "b": 1},
                        "depends_on": ["sq"],
                    },
                ]
            },
        }
    )
    assert "team.flow" in c.client.registry.workflows
    wf_id = c.client.workflows.submit("team.flow", {})
    record = c.client.workflows.wait(wf_id, timeout=60)
    assert record.state is WorkflowState.COMPLETED, record.error
    steps = c.client.workflows.steps(wf_id)
    assert steps["sum"].runs[0].output == 10


def test_who_may_register(c: Cluster, echo: str) -> None:
    vic = permissions.Principal(id="vic", roles=("viewer",))
    _, viewer_token = c.client.admin.create_token(vic)
    viewer = Client.from_settings(dataclasses.replace(c.settings, token=viewer_token))
    try:
        assert viewer.principal == vic
        with pytest.raises(errors.PermissionDenied):
            viewer.definitions.register({"name": "v.h", "kind": "http", "url": f"{echo}/x"})
        with pytest.raises(errors.PermissionDenied):  # admin_only's rules hold for its alias
            viewer.definitions.register(
                {"name": "v.a", "kind": "alias", "target": "examples.admin_only"}
            )
    finally:
        viewer.close()
    denials = [e for e in c.client.admin.audit_log() if e.principal_id == "vic"]
    assert {(e.target, e.outcome) for e in denials} >= {("v.h", "denied"), ("v.a", "denied")}


def test_an_alias_brings_its_schedule_and_takes_it_away(c: Cluster) -> None:
    c.client.definitions.register(
        {
            "name": "team.tick",
            "kind": "alias",
            "target": "examples.add",
            "defaults": {"a": 1, "b": 1},
            "schedule": {"every": 3600},
        }
    )
    (sched,) = c.client.schedules.list(job="team.tick")
    assert sched.name == "definition:team.tick"
    run_id = c.client.schedules.trigger(sched.id)
    assert c.client.wait(run_id, timeout=30).output == 2
    c.client.definitions.remove("team.tick")
    assert [s.state for s in c.client.schedules.list(job="team.tick")] == ["cancelled"]


def test_an_alias_whose_schedule_is_refused_is_not_stored(c: Cluster) -> None:
    """All or nothing: the schedule's input is checked before the alias is stored."""
    definition = {
        "name": "team.late",
        "kind": "alias",
        "target": "examples.add",
        "defaults": {"b": 10},
        "schedule": {"every": 3600, "input": {"a": "x"}},
    }
    path = c.tmp / "def_alias.json"
    path.write_text(json.dumps(definition))
    for _ in range(2):  # and a retry changes nothing either
        cli = subprocess.run(
            [sys.executable, "-m", "jobsys", "jobs", "register", str(path)],
            env=c.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 2, cli.stderr
        assert "a: Input should be a valid integer" in cli.stderr
        assert "team.late" not in [d["name"] for d in c.client.definitions.list()]
        assert c.client.schedules.list(job="team.late") == []
    with pytest.raises(errors.UnknownJob):
        c.client.submit("team.late", {"a": 1})
    definition["schedule"] = {"every": 3600, "input": {"a": 1}}
    assert c.client.definitions.register(definition)["version"] == 1
    (sched,) = c.client.schedules.list(job="team.late")
    assert sched.input == {"a": 1, "b": 10}
    c.client.definitions.remove("team.late")
