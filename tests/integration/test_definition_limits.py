"""Limits of jobs registered at runtime: an HTTP job's answer is read only up to its limit
(streamed, the rest never downloaded), and every duration a definition or an ad hoc workflow
gives is finite and bounded, refused at registration with the field named (one check for
both), so nothing half-made is left running."""

from __future__ import annotations

import contextlib
import http.server
import socketserver
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from jobsys import RunState
from jobsys.base import errors
from jobsys.declare import permissions, workflows
from jobsys.declare.http_jobs import MAX_RESPONSE_BYTES
from jobsys.store import schema, tokens
from jobsys.store import workflow_runs as workflows_store
from tests.cluster import Cluster, cluster
from tests.servers import Serve
from tests.waiting import eventually

pytestmark = pytest.mark.integration

BIG = 200 * 1024 * 1024
"""The answer of the report: 200 MiB."""
CHUNK = 64 * 1024


class _Big(http.server.BaseHTTPRequestHandler):
    """``/chunked`` streams 200 MiB without announcing it, ``/announced`` says so first,
    ``/small`` is just under the limit. Counts what it managed to send."""

    protocol_version = "HTTP/1.1"
    sent: dict[str, int] = {}

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/small":
            body = b'"' + b"x" * (MAX_RESPONSE_BYTES - 10) + b'"'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if path == "/announced":
            self.send_header("Content-Length", str(BIG))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent, block = 0, b"y" * CHUNK
        try:
            while sent < BIG:
                if path == "/announced":
                    self.wfile.write(block)
                else:
                    self.wfile.write(b"%x\r\n%s\r\n" % (CHUNK, block))
                sent += CHUNK
            if path != "/announced":
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the worker hung up: what it read is all it cost
            pass
        finally:
            type(self).sent[path] = sent
        self.close_connection = True

    def log_message(self, *_: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@pytest.fixture(scope="module")
def big() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Big)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def c(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[Cluster]:
    tmp: Path = tmp_path_factory.mktemp("definition-limits")
    with cluster(tmp, redis_url, database_url, JOBSYS_HTTP_JOB_HOSTS="127.0.0.1") as cl:
        cl.start_worker("w1", concurrency=1)
        yield cl


# --- an HTTP job's answer --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/chunked", "/announced"])
def test_an_answer_past_the_limit_fails_the_run_without_being_downloaded(
    c: Cluster, big: str, path: str
) -> None:
    name = f"big.{path.strip('/')}"
    c.client.definitions.register(
        {"name": name, "kind": "http", "method": "GET", "url": f"{big}{path}", "max_attempts": 3}
    )
    run = c.client.wait(c.client.submit(name, {}), timeout=60)
    assert run.state is RunState.FAILED and run.error is not None
    assert run.attempts == 1  # fatal: another attempt would download it again
    message = run.error["message"]
    assert "MAX_RESPONSE_BYTES" in message and str(MAX_RESPONSE_BYTES) in message, message
    # The worker stopped reading at the limit: the server could not send the 200 MiB.
    eventually(  # (the server's thread notices the hang-up on its own)
        lambda: path in _Big.sent, 30, 0.05, what="the server to stop sending"
    )
    assert _Big.sent[path] < BIG // 4, _Big.sent


def test_an_answer_under_the_limit_is_the_output(c: Cluster, big: str) -> None:
    c.client.definitions.register(
        {"name": "big.small", "kind": "http", "method": "GET", "url": f"{big}/small"}
    )
    out = c.client.execute("big.small", {}, timeout=60)
    assert out["status"] == 200 and len(out["body"]) == MAX_RESPONSE_BYTES - 10


# --- durations -------------------------------------------------------------------------------


def _flow(name: str, **step: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "workflow",
        "workflow": {
            "steps": [{"name": "s", "job": "examples.add", "input": {"a": 1, "b": 1}, **step}]
        },
    }


def _workflow_runs(c: Cluster) -> int:
    with c.store.engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(schema.workflow_runs)).one()[0]
        )


def test_the_reported_delay_is_refused_at_registration_over_http(c: Cluster) -> None:
    """Reported: ``delay`` 1e308 or inf registered, then submit answered 500 and left a
    workflow run ``running``."""
    root = permissions.Principal(id="root", roles=("admin",))
    admin = tokens.TokenStore(c.store.engine).create(root, "test")[1]
    before = _workflow_runs(c)
    with (
        Serve(c) as server,
        httpx.Client(
            base_url=f"{server.url}/api/v1",
            headers={"Authorization": f"Bearer {admin}"},
            timeout=60,
        ) as api,
    ):
        for delay in (1e308, "inf", "Infinity", "nan", -1, 86401):
            name = f"flow.bad_{uuid.uuid4().hex[:6]}"
            answer = api.post("/definitions", json=_flow(name, delay=delay))
            assert answer.status_code == 422, (delay, answer.text)
            error = answer.json()["error"]
            assert error["fields"][0]["loc"] == ["s", "delay"], (delay, error)
            assert "delay" in error["message"]
            assert api.post(f"/workflows/{name}/runs", json={"input": {}}).status_code == 404
        for field, value in (("timeout", "inf"), ("timeout", 1e308)):
            answer = api.post("/definitions", json=_flow("flow.bad_timeout", **{field: value}))
            assert answer.status_code == 422 and answer.json()["error"]["fields"][0]["loc"] == [
                "s",
                field,
            ]
        answer = api.post(
            "/definitions",
            json=_flow("flow.bad_retry", retry={"max_attempts": 2, "max_backoff": 1e308}),
        )
        assert answer.status_code == 422 and "max_backoff" in answer.text
        answer = api.post(
            "/definitions",
            json={
                "name": "tick.bad",
                "kind": "alias",
                "target": "examples.add",
                "schedule": {"every": 1e308},
            },
        )
        assert answer.status_code == 422 and answer.json()["error"]["fields"][0]["loc"] == ["every"]
        answer = api.post(
            "/definitions",
            json={
                "name": "hook.bad",
                "kind": "http",
                "url": "http://127.0.0.1/x",
                "timeout": 1e308,
            },
        )
        assert answer.status_code == 422 and answer.json()["error"]["fields"][0]["loc"] == [
            "timeout"
        ]
        # Ad hoc, the same check; a good delay still goes through.
        adhoc = api.post(
            "/workflow-runs",
            json={"workflow": {**_flow("x", delay=1e308)["workflow"], "name": "x"}, "input": {}},
        )
        assert adhoc.status_code == 422, adhoc.text
        good = api.post("/definitions", json=_flow("flow.good", delay=0.5))
        assert good.status_code == 201, good.text
    assert _workflow_runs(c) == before
    assert "Traceback" not in server.log(), server.tail()


def test_the_same_check_holds_for_workflows_given_ad_hoc_in_python(c: Cluster) -> None:
    data = {**_flow("x", delay=float("inf"))["workflow"], "name": "adhoc.bad"}
    with pytest.raises(errors.WorkflowDeclarationError) as caught:
        c.client.workflows.submit(data, {})
    assert caught.value.step == "s" and caught.value.field == "delay"


def _down(*_: Any, **__: Any) -> None:
    raise errors.BrokerUnavailable("the broker is down (test)")


def _submit_with_the_broker_down(
    c: Cluster, monkeypatch: pytest.MonkeyPatch, name: str
) -> workflows_store.WorkflowRecord:
    """Submit an ad hoc workflow ``name`` whose first step cannot be published: the submit
    raises; the workflow run it recorded."""
    monkeypatch.setattr(c.client, "publish_row", _down)
    data = {**_flow("x")["workflow"], "name": name}
    with pytest.raises(errors.BrokerUnavailable):
        c.client.workflows.submit(data, {})
    (record,) = [r for r in c.client.workflows.list() if r.workflow == name]
    return record


def test_a_submit_that_fails_leaves_no_workflow_running(
    c: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = _submit_with_the_broker_down(c, monkeypatch, "adhoc.down")
    assert record.state is workflows.WorkflowState.FAILED
    assert record.error is not None and "BrokerUnavailable" in record.error["message"]


def test_a_reaper_advancing_a_failed_submit_leaves_its_reason(
    c: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reaper that advances the workflow run after each commit of the submit's clean-up
    leaves the run to end with the submit's reason: seen in CI as "step 's' failed" in place
    of the broker's error, when the step's cancel was committed before the workflow's end."""
    store = c.client.workflows._store
    passes: list[str] = []

    def reaper_pass() -> None:  # once a step's cancel is committed, as the race had it
        if passes:
            return
        made = [r.id for r in c.client.workflows.list() if r.workflow == "adhoc.raced"]
        steps = c.client.list(workflow_id=made[0]) if made else []
        if not any(r.state is RunState.CANCELLED for r in steps):
            return
        (wf_id,) = made
        passes.append("running")
        store.advance(store.get(wf_id).workflow_def, wf_id, c.client.registry, _down)
        passes[-1] = "done"

    for owner in (store, store.store):
        monkeypatch.setattr(owner, "engine", _AfterEachCommit(owner.engine, reaper_pass))
    record = _submit_with_the_broker_down(c, monkeypatch, "adhoc.raced")
    assert passes, "no reaper pass ran between the clean-up's commits"
    assert record.state is workflows.WorkflowState.FAILED
    assert record.error is not None and "BrokerUnavailable" in record.error["message"]
    (step,) = c.client.list(workflow_id=record.id)
    assert step.state is RunState.CANCELLED


class _AfterEachCommit:
    """An engine whose ``begin`` blocks call ``after`` once they have committed."""

    def __init__(self, engine: sa.Engine, after: Callable[[], None]) -> None:
        self._engine, self._after = engine, after

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        with self._engine.begin() as conn:
            yield conn
        self._after()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def test_a_stored_run_with_an_unbounded_delay_ends_failed(c: Cluster) -> None:
    """A workflow run stored before delays were bounded fails on its next advance instead of
    failing every reaper pass."""
    wf = workflows.Workflow(
        "old.flow", (workflows.Step("s", "examples.add", {"a": 1, "b": 1}, delay=1e308),)
    )
    record = c.store.workflows.create(wf, {}, c.client.principal)
    done = c.store.workflows.advance(wf, record.id, c.client.registry, lambda *_: None)
    assert done.state is workflows.WorkflowState.FAILED
    assert done.error is not None and "cannot be scheduled" in done.error["message"]
