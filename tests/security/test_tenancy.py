"""Tenancy and read rules, replayed as an attacker would: a tenant admin minting tokens for
another tenant, a viewer reading an admin-only workflow step, and the smaller holes (NUL
characters, big integers, security headers, /docs, tracebacks, idempotency scope), through
the CLI, the HTTP API, MCP and the Python client, against real workers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from jobsys import Principal, RunState
from jobsys.base import errors
from jobsys.service import client
from jobsys.store import runs
from tests import cli_runner
from tests.cluster import ROOT, Cluster
from tests.integration.mcp_support import Session, http_session, stdio_session
from tests.servers import Serve

pytestmark = pytest.mark.integration

ADA = Principal(id="ada", roles=("admin",), tenant="t1")
"""An admin of tenant t1 only."""
BOB = Principal(id="bob", roles=("admin",), tenant="t2")
SUE = Principal(id="sue", roles=("superadmin",), tenant="ops")
"""Administers every tenant (JOBSYS_SUPERADMIN_ROLES' default role)."""
ADMIN = Principal(id="root-ish", roles=("admin",), tenant="default")
VIEWER = Principal(id="vic", roles=("viewer",), tenant="default")
SENTINEL = "sentinel-7f3a9c"


def as_(c: Cluster, who: Principal) -> client.Client:
    return client.Client(c.settings, c.registry, principal=who, store=c.store, app=c.client.app)


def cli(
    c: Cluster, token: str | None, *args: str, process: bool = False
) -> subprocess.CompletedProcess[str]:
    """``jobsys ARGS`` as ``token``'s principal (the local admin for ``None``): in-process,
    or (``process``) as a real ``python -m jobsys``."""
    return cli_runner.run(c.env, [*args, *(["--token", token] if token else [])], process)


class Server(Serve):
    """``jobsys serve`` with tokens for ``ADMIN`` and ``VIEWER`` (both of tenant default)."""

    def __init__(self, cluster: Cluster) -> None:
        self.tokens = {p.id: cluster.client.admin.create_token(p)[1] for p in (ADMIN, VIEWER)}
        super().__init__(cluster)

    def client(self, who: Principal | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who.id]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def server(shared: Cluster) -> Iterator[Server]:
    s = Server(shared)
    with s:
        yield s
    assert "Traceback" not in s.log(), s.log()[-5000:]


# --- finding 4: a tenant admin administers its own tenant only --------------------------------


def test_tenant_admin_cannot_mint_tokens_for_another_tenant_cli(shared: Cluster) -> None:
    local = shared.client.admin
    ada = local.create_token(ADA)[1]
    bob_record, bob = local.create_token(BOB)
    sue = local.create_token(SUE)[1]
    mallory = f"mallory-{uuid.uuid4().hex[:6]}"

    # As reported: an admin of t1 mints an admin token for t2. Refused, and nothing is made.
    crossed = cli(
        shared,
        ada,
        "tokens",
        "create",
        "--principal",
        mallory,
        "--roles",
        "admin",
        "--tenant",
        "t2",
        process=True,
    )
    assert crossed.returncode == 3, crossed.stderr
    assert "own tenant ('t1')" in crossed.stderr and "JOBSYS_SUPERADMIN_ROLES" in crossed.stderr
    assert "Traceback" not in crossed.stderr
    # A role it does not hold (a superadmin one) is refused in its own tenant too.
    raised = cli(shared, ada, "tokens", "create", "--principal", mallory, "--roles", "superadmin")
    assert raised.returncode == 3 and "superadmin" in raised.stderr, raised.stderr
    assert mallory not in {t.principal["id"] for t in local.list_tokens()}

    # What it may do: tokens of its tenant (its tenant by default), with roles it may grant.
    made = cli(
        shared, ada, "tokens", "create", "--principal", "t1-bot", "--roles", "viewer", "--json"
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["principal"]["tenant"] == "t1"

    # It lists, revokes and audits its own tenant only; another tenant's token is not found.
    listed = cli(shared, ada, "tokens", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    tenants = {t["principal"]["tenant"] for t in json.loads(listed.stdout)}
    assert tenants == {"t1"}
    revoked = cli(shared, ada, "tokens", "revoke", bob_record.id)
    assert revoked.returncode == 2 and "not found" in revoked.stderr, revoked.stderr
    assert cli(shared, bob, "tokens", "list").returncode == 0  # bob's token still works
    audit = cli(shared, ada, "audit", "list", "--json", "--limit", "10000")
    assert audit.returncode == 0, audit.stderr
    entries = json.loads(audit.stdout)
    assert {e["tenant"] for e in entries} == {"t1"}
    assert ("create token", "denied") in {(e["action"], e["outcome"]) for e in entries}

    # Cross-tenant administration is the explicit superadmin role (and the local admin).
    for token in (sue, None):
        other = cli(
            shared,
            token,
            "tokens",
            "create",
            "--principal",
            f"{mallory}-ok",
            "--tenant",
            "t2",
            "--json",
        )
        assert other.returncode == 0, other.stderr
        assert json.loads(other.stdout)["principal"]["tenant"] == "t2"
        everyone = cli(shared, token, "tokens", "list", "--json")
        assert {"t1", "t2", "ops"} <= {
            t["principal"]["tenant"] for t in json.loads(everyone.stdout)
        }


def test_tenant_admin_scope_in_the_python_client(shared: Cluster) -> None:
    ada = as_(shared, ADA).admin
    with pytest.raises(errors.PermissionDenied, match="own tenant"):
        ada.create_token(Principal(id="x", roles=("viewer",), tenant="t2"))
    with pytest.raises(errors.PermissionDenied, match="superadmin"):
        ada.create_token(Principal(id="x", roles=("superadmin",), tenant="t1"))
    # An admin token naming the local admin's id is an admin of tenant default, no more.
    local_lookalike = shared.client.admin.create_token(
        Principal(id="local", roles=("admin",), tenant="default")
    )[1]
    refused = cli(shared, local_lookalike, "tokens", "create", "--principal", "y", "--tenant", "t2")
    assert refused.returncode == 3, refused.stderr
    assert {t.principal["tenant"] for t in ada.list_tokens()} <= {"t1"}
    assert {e.tenant for e in ada.audit_log(limit=10_000)} == {"t1"}
    # A token it makes for its tenant acts in its tenant, over HTTP too.
    token = ada.create_token(Principal(id="t1-viewer", roles=("viewer",), tenant="t1"))[1]
    with Serve(shared) as s:
        me = httpx.get(f"{s.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json() == {
        "id": "t1-viewer",
        "roles": ["viewer"],
        "scopes": [],
        "tenant": "t1",
        "admin": False,
    }


# --- finding 5: a workflow run's steps follow their jobs' read rules --------------------------


def _secret_workflow(c: Cluster) -> tuple[str, str]:
    """An ad hoc workflow run by the local admin (tenant default): an admin-only step whose
    input and output hold ``SENTINEL``, and an open one. Its id and the secret step's run."""
    data = {
        "name": f"mixed-{uuid.uuid4().hex[:6]}",
        "steps": [
            {"name": "secret", "job": "tests.admin_echo", "input": {"text": SENTINEL}},
            {"name": "sum", "job": "examples.add", "input": {"a": 1, "b": 2}},
        ],
    }
    workflow_id = c.client.workflows.submit(data, {})
    record = c.client.workflows.wait(workflow_id, timeout=60)
    assert record.state.value == "completed", record
    assert SENTINEL in json.dumps(record.output)
    secret = c.client.workflows.steps(workflow_id)["secret"].runs[0].id
    return workflow_id, secret


def test_viewer_reads_a_workflow_run_without_its_admin_only_step_http(
    shared: Cluster, server: Server
) -> None:
    workflow_id, secret = _secret_workflow(shared)
    with server.client(VIEWER) as viewer, server.client(ADMIN) as admin:
        assert viewer.get(f"/api/v1/runs/{secret}").status_code == 403
        # As reported: the workflow run showed the admin-only step's input and output.
        shown = viewer.get(f"/api/v1/workflow-runs/{workflow_id}")
        assert shown.status_code == 200, shown.text
        assert SENTINEL not in shown.text
        body = shown.json()
        assert body["withheld"] == ["secret"] and body["input"] == {}
        assert body["output"] == {"sum": 3}
        step = body["steps"]["secret"]
        assert step["withheld"] is True and step["state"] == "succeeded"
        assert step["runs"][0]["input"] == {} and step["runs"][0]["output"] is None
        assert body["steps"]["sum"]["runs"][0]["output"] == 3
        listed = viewer.get("/api/v1/workflow-runs", params={"limit": 1000})
        assert listed.status_code == 200 and SENTINEL not in listed.text
        assert SENTINEL not in viewer.get("/api/v1/runs", params={"limit": 1000}).text
        # The admin sees everything.
        full = admin.get(f"/api/v1/workflow-runs/{workflow_id}").json()
        assert full["withheld"] == [] and full["steps"]["secret"]["withheld"] is False
        assert SENTINEL in full["steps"]["secret"]["runs"][0]["input"]["text"]


def test_viewer_reads_a_workflow_run_without_its_admin_only_step_cli(shared: Cluster) -> None:
    workflow_id, _ = _secret_workflow(shared)
    token = shared.client.admin.create_token(VIEWER)[1]
    for args in (
        ("runs", "show", workflow_id, "--json"),
        ("runs", "show", workflow_id),
        ("workflows", "show", workflow_id, "--json"),
        ("workflows", "list", "--runs", "--json"),
    ):
        shown = cli(shared, token, *args)
        assert shown.returncode == 0, (args, shown.stderr)
        assert SENTINEL not in shown.stdout, args
    assert "withheld" in cli(shared, token, "runs", "show", workflow_id).stdout
    assert SENTINEL in cli(shared, None, "runs", "show", workflow_id, "--json").stdout
    viewer = as_(shared, VIEWER).workflows
    assert viewer.get(workflow_id).withheld == ("secret",)
    assert viewer.steps(workflow_id)["secret"].runs[0].withheld


async def _mcp_reads(s: Session, workflow_id: str) -> None:
    for tool, args in (
        ("get_job_status", {"run_id": workflow_id}),
        ("job_show", {"id": workflow_id}),
        ("job_list", {"what": "workflow_runs"}),
    ):
        result = await s.call_tool(tool, args)
        text = "".join(getattr(c, "text", "") for c in result.content)
        assert not result.is_error, (tool, text)
        assert SENTINEL not in text, tool
    status = await s.call_tool("get_job_status", {"run_id": workflow_id})
    assert status.structured_content is not None
    assert status.structured_content["withheld"] == ["secret"]


def test_viewer_reads_a_workflow_run_without_its_admin_only_step_mcp(
    shared: Cluster, server: Server
) -> None:
    workflow_id, _ = _secret_workflow(shared)

    async def main() -> None:
        env = {**shared.env, "JOBSYS_TOKEN": server.tokens[VIEWER.id]}
        async with stdio_session(env, shared.tmp / "mcp-tenancy.log") as s:
            await _mcp_reads(s, workflow_id)
        async with http_session(f"{server.url}/mcp/", server.tokens[VIEWER.id]) as s:
            await _mcp_reads(s, workflow_id)

    anyio.run(main)


# --- finding 8 a: NUL characters ----------------------------------------------------------------


def test_nul_in_output_fails_the_run_at_once_naming_it(shared: Cluster) -> None:
    run_id = shared.client.submit("tests.nul", {"where": "output"})
    record = shared.wait_all([run_id], timeout=20)[0]  # its timeout is 30 s
    assert record.state is RunState.FAILED, record
    assert record.error is not None and record.error["reason"] == "output_validation"
    assert "NUL character" in record.error["message"] and "text" in record.error["message"]


def test_nul_in_logs_progress_and_errors_is_kept_escaped(shared: Cluster) -> None:
    logged, failed = (shared.client.submit("tests.nul", {"where": w}) for w in ("log", "error"))
    done, broken = shared.wait_all([logged, failed], timeout=20)
    assert done.state is RunState.COMPLETED, done
    assert "line\\x00end" in [x.message for x in shared.client.logs(logged)]
    assert done.progress is not None and done.progress["message"] == "half\\x00way"
    assert broken.state is RunState.FAILED and broken.error is not None
    assert broken.error["reason"] == "exception" and broken.error["message"] == "bad\\x00value"


@pytest.mark.skipif(
    not os.environ.get("JOBSYS_TEST_DATABASE_URL"),
    reason="needs PostgreSQL (JOBSYS_TEST_DATABASE_URL): SQLite stores what PostgreSQL's jsonb "
    "refuses, so there the completion write cannot fail this way",
)
def test_an_output_the_database_refuses_fails_the_run_at_once(shared: Cluster) -> None:
    run_id = shared.client.submit("tests.nul", {"where": "surrogate"})
    record = shared.wait_all([run_id], timeout=20)[0]
    assert record.state is RunState.FAILED, record
    assert record.error is not None and record.error["reason"] == "output_validation"
    assert record.error["message"].startswith("the output could not be stored")


def test_nul_in_input_and_options_is_refused_at_the_edge(shared: Cluster) -> None:
    before = shared.store.count()
    refused = cli(
        shared, None, "submit", "tests.admin_echo", "--input", '{"text": "a\\u0000b"}', process=True
    )
    assert refused.returncode == 2, refused.stderr
    assert "text: contains a NUL character" in refused.stderr
    assert "Traceback" not in refused.stderr
    with pytest.raises(errors.InvalidInput, match=r"metadata\.note: contains a NUL"):
        shared.client.submit(
            "examples.add", {"a": 1, "b": 2}, client.SubmitOptions(metadata={"note": "x\x00"})
        )
    with pytest.raises(errors.InvalidInput, match="NUL"):
        shared.client.submit(
            "examples.add", {"a": 1, "b": 2}, client.SubmitOptions(idempotency_key="k\x00")
        )
    assert shared.store.count() == before


# --- finding 8 b: integers beyond 2**53 stay integers -----------------------------------------

BIG = 2**63 - 1


def test_big_integers_round_trip_python_cli_http(shared: Cluster, server: Server) -> None:
    out = shared.client.execute("examples.add", {"a": BIG, "b": 1}, timeout=30)
    assert out == 2**63 and isinstance(out, int)
    assert shared.client.execute("examples.add", {"a": 2**80, "b": -1}, timeout=30) == 2**80 - 1
    shown = cli(
        shared,
        None,
        "submit",
        "examples.add",
        "--input",
        json.dumps({"a": BIG, "b": 1}),
        "--wait",
        "--timeout",
        "30",
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == str(2**63)
    with server.client(ADMIN) as api:
        answer = api.post(
            "/api/v1/jobs/examples.add/runs", json={"input": {"a": BIG, "b": 1}, "wait": 30}
        )
        assert answer.status_code == 200, answer.text
        assert f'"output":{2**63}' in answer.text.replace(" ", "")
        run = api.get(f"/api/v1/runs/{answer.json()['run_id']}").json()
        assert run["output"] == 2**63 and run["input"]["a"] == BIG


def test_big_integers_round_trip_mcp(shared: Cluster) -> None:
    async def main() -> None:
        async with stdio_session(shared.env, shared.tmp / "mcp-bigint.log") as s:
            result = await s.call_tool(
                "execute_job", {"job": "examples.add", "input": {"a": BIG, "b": 1}, "timeout": 30}
            )
            text = "".join(getattr(c, "text", "") for c in result.content)
            assert not result.is_error, text
            assert str(2**63) in text and "e+18" not in text

    anyio.run(main)


# --- finding 8 c, d: security headers, and no third-party script on the origin -----------------

HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def test_security_headers_on_every_answer(server: Server) -> None:
    with server.client(None) as anonymous:
        answers = [
            anonymous.get("/api/v1/health"),
            anonymous.get("/"),
            anonymous.get("/docs"),
            anonymous.get("/openapi.json"),
            anonymous.get("/static/app.js"),
            anonymous.get("/api/v1/runs"),  # 401
            anonymous.get("/nothing-here"),  # 404
            anonymous.post("/api/v1/jobs/examples.add/runs", content=b"[1"),  # the guard's 400
        ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 401, 404, 400]
    for a in answers:
        for name, value in HEADERS.items():
            assert a.headers.get(name) == value, (a.request.url, name, a.headers)
        csp = a.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, a.request.url


def test_docs_load_no_third_party_script(server: Server) -> None:
    with server.client(None) as anonymous:
        for page in ("/", "/docs"):
            html = anonymous.get(page)
            assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
            sources = re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", html.text)
            assert sources, page
            assert all(s.startswith("/") and not s.startswith("//") for s in sources), sources
            assert "<script>" not in html.text  # no inline script either
            for source in sources:
                script = anonymous.get(source).text
                imports = re.findall(r"\bfrom\s+[\"']([^\"']+)[\"']", script)
                assert all(i.startswith("./") for i in imports), (source, imports)
        assert anonymous.get("/redoc").status_code == 404
        assert "/api/v1/runs" in anonymous.get("/openapi.json").json()["paths"]


# --- finding 8 e: tracebacks to admins only -----------------------------------------------------


def test_tracebacks_are_shown_to_admins_only(shared: Cluster, server: Server) -> None:
    run_id = shared.client.submit("examples.fail", {"message": "planned"})
    assert shared.wait_all([run_id], timeout=30)[0].state is RunState.FAILED
    token = server.tokens[VIEWER.id]
    with server.client(VIEWER) as viewer, server.client(ADMIN) as admin:
        seen = viewer.get(f"/api/v1/runs/{run_id}").json()["error"]
        assert seen["traceback"] is None and seen["type"] == "Fatal" and seen["message"]
        listed = viewer.get("/api/v1/runs", params={"job": "examples.fail", "limit": 1000})
        assert "Traceback" not in listed.text and str(ROOT) not in listed.text
        full = admin.get(f"/api/v1/runs/{run_id}").json()["error"]
        assert "Traceback" in full["traceback"]
        # The run's history too: its errors without their tracebacks for a viewer.
        events = viewer.get(f"/api/v1/runs/{run_id}/events").json()
        assert events["attempts"][-1]["error"]["type"] == "Fatal"
        assert "Traceback" not in json.dumps(events) and str(ROOT) not in json.dumps(events)
        admin_events = admin.get(f"/api/v1/runs/{run_id}/events").json()
        assert "Traceback" in admin_events["attempts"][-1]["error"]["traceback"]
    shown = cli(shared, token, "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["error"]["traceback"] is None
    viewer_client = as_(shared, VIEWER)
    error: dict[str, Any] | None = viewer_client.status(run_id).error
    assert error is not None and error["traceback"] is None
    assert "Traceback" in (shared.client.status(run_id).error or {})["traceback"]


# --- finding 8 f: idempotency keys are per job --------------------------------------------------


def test_idempotency_keys_are_scoped_by_job(shared: Cluster) -> None:
    key = f"key-{uuid.uuid4().hex[:8]}"
    options = client.SubmitOptions(idempotency_key=key)
    first = shared.client.submit("examples.add", {"a": 1, "b": 2}, options)
    again = shared.client.submit("examples.add", {"a": 5, "b": 5}, options)
    other = shared.client.submit("tests.effect", {"seconds": 0}, options)
    assert again == first  # the same job and key: the same run, as before
    assert other != first  # another job with the same key: its own run
    assert shared.store.get(other).job == "tests.effect"
    elsewhere = as_(shared, Principal(id="x", tenant="t9")).submit(
        "examples.add", {"a": 1, "b": 2}, options
    )
    assert elsewhere not in (first, other)
    done = shared.wait_all([first, other, elsewhere], timeout=30)
    assert [r.state for r in done] == [RunState.COMPLETED] * 3
    assert isinstance(shared.store.get(first), runs.RunRecord)
