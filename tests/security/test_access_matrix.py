"""The adversarial access matrix: every principal against every HTTP route, every MCP tool (over
``/mcp`` and over stdio) and every CLI command that reads or changes data, on its own tenant's
resources and on the other tenant's, each cell's outcome compared with one table written by hand.

Principals: two tenants (``acme``, ``globex``) x three roles: ``admin`` (an admin role),
``operator`` (the role ``tests.operated`` grants execute, create, update and delete on) and
``viewer`` (a token with no roles). Each tenant's admin makes the resources first: runs of
``tests.operated`` and of ``examples.admin_only``, a schedule of each, a workflow run of
``tests.operated_flow`` and of ``tests.admin_flow`` (a step only admins may see), a runtime
definition (an alias of ``tests.operated``) and a token. A cell that changes what it acts on
(cancel, delete, replace, revoke ...) gets a fresh resource of its own, so one wrongly allowed
cell cannot change the outcome of another.

Outcomes: ``allowed`` (HTTP 2xx; MCP result ok; CLI exit 0), ``forbidden`` (HTTP 403; MCP
error ``PermissionDenied`` or its ``NotOwner``; CLI exit 3, "permission denied"), ``not_found``
(HTTP 404; MCP error ``...NotFound``/``UnknownJob``/unknown tool; CLI exit 2, "not found"/
"unknown job"). In a list, ``allowed`` means the resource is listed and ``not_found`` that it is
not. ``withheld``: a workflow run shown or listed with the steps the principal may not read
withheld (their data left out and named in its ``withheld`` field), as their own runs would be.
Registering a definition under the name of another tenant's is ``not_found`` when the other
tenant's definition is left unchanged (the caller made its own), ``allowed`` when it was replaced.

The CLI cells run the click app in-process (``click.testing.CliRunner``, the commands sharing one
open store, each closing its client): the CLI talks to the store directly, so a process adds
nothing but its start-up time (about 0.7 s each, which the 576 cells cannot afford). One
representative cell per command (globex's operator, on acme's resource where the command takes
one) runs instead as a real ``python -m jobsys ... --token`` process, in the background while the
others run in-process.

Each interface's test collects every mismatch and asserts the list is empty, printing the cell
count. The tables must cover every route of the FastAPI app, every tool of the MCP tool table
and every command of the click group: a new one fails ``test_tables_cover_everything`` until it
is added here (or to the ``OUT_OF_MATRIX`` lists, with the reason).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner
from starlette.routing import BaseRoute, Mount, Route

from jobsys import Principal
from jobsys.cli import main as cli_main
from jobsys.mcp.names import DEPRECATED_TOOLS, tool_name
from jobsys.mcp.tools import TOOLS
from jobsys.service import client
from jobsys.store import runs, stores, tokens
from tests.cluster import ROOT, Cluster
from tests.integration.mcp_support import Session, http_session, stdio_session
from tests.servers import Serve

pytestmark = [pytest.mark.integration, pytest.mark.interface]

ALLOWED, FORBIDDEN, NOT_FOUND, WITHHELD = "allowed", "forbidden", "not_found", "withheld"
TENANTS = ("acme", "globex")
ROLES = ("admin", "operator", "viewer")
ROLE_ROLES = {"admin": ("admin",), "operator": ("operator",), "viewer": ()}

# --- the rules, by hand ----------------------------------------------------------------------

GRANTS: dict[str, dict[str, set[str]]] = {
    "operator": {
        "operated": {"read", "list", "execute", "create", "update", "delete"},
        "admin_only": set(),
    },
    "viewer": {"operated": {"read", "list"}, "admin_only": set()},
}
"""What each non-admin role may do, in its own tenant, to the jobs of the matrix (an admin may
do everything in its tenant, nothing in another)."""

JOB_OF = {
    "job": "operated",
    "admin_job": "admin_only",
    "run": "operated",
    "admin_run": "admin_only",
    "schedule": "operated",
    "admin_schedule": "admin_only",
    "workflow": "operated",
    "admin_workflow": "admin_only",
    "workflow_run": "operated",
    "admin_workflow_run": "admin_only",  # a workflow run is governed by its strictest step
    "definition": "operated",  # an alias keeps the rules of the job it aliases
}
CATALOG = {
    "job": "tests.operated",
    "admin_job": "examples.admin_only",
    "workflow": "tests.operated_flow",
    "admin_workflow": "tests.admin_flow",
}
"""Resources every tenant shares (the catalog); the others belong to a tenant."""

NEEDS = {
    "public": "anyone, even without a token",
    "token": "any valid token",
    "admin": "an admin role (metrics count every tenant; workers serve every tenant)",
    "mint": "an admin of the tenant the token is for",
    "tenant_admin": "an admin of the resource's tenant (another tenant's: not found)",
    "list": "the job's list rule; in a list: listed (allowed) or not (not_found)",
    "see": "the job's list rule, for one job (refused: forbidden)",
    "read": "the job's read rule",
    "execute": "the job's execute rule",
    "create": "the job's create rule",
    "update": "the job's update rule",
    "delete": "the job's delete rule",
    "run_tool": "the job's execute rule; refused: the run__ tool is not offered (not_found)",
    "replace": "the definition's owner or an admin of its tenant",
    "remove": "the definition's owner or an admin of its tenant",
}


def expected(need: str, role: str, resource: str, where: str) -> str:
    """The outcome of one cell. ``where``: ``own`` or ``other`` (the tenant of the resource,
    relative to the principal's), ``catalog`` (shared), ``-`` (no resource)."""
    if need in ("public", "token"):
        return ALLOWED
    if need == "admin":
        return ALLOWED if role == "admin" else FORBIDDEN
    if need == "mint":
        return ALLOWED if role == "admin" and where == "own" else FORBIDDEN
    if need == "tenant_admin":
        if role != "admin":
            return FORBIDDEN
        return ALLOWED if where == "own" else NOT_FOUND
    action = {"see": "list", "run_tool": "execute", "replace": "create", "remove": "delete"}.get(
        need, need
    )
    may = role == "admin" or action in GRANTS[role][JOB_OF[resource]]
    if where == "other":
        # Another tenant's resources do not exist for this principal. Registering its
        # definition's name needs the create rule on the target, and then makes one's own.
        return FORBIDDEN if need == "replace" and not may else NOT_FOUND
    if need in ("replace", "remove"):
        return ALLOWED if role == "admin" else FORBIDDEN  # the tenant's admin made it
    if may:
        return ALLOWED
    if resource in FLOW_RUNS and need in ("read", "list"):
        return WITHHELD  # shown, with the steps it may not read left out
    return NOT_FOUND if need in ("list", "run_tool") else FORBIDDEN


EXAMPLES = {
    # (op, role, resource, where): outcome -- cells of the tables below, spelled out.
    ("GET /api/v1/runs/{run_id}", "viewer", "run", "own"): ALLOWED,
    ("GET /api/v1/runs/{run_id}", "viewer", "run", "other"): NOT_FOUND,
    ("GET /api/v1/runs/{run_id}", "viewer", "admin_run", "own"): FORBIDDEN,
    ("GET /api/v1/runs", "operator", "admin_run", "own"): NOT_FOUND,
    ("POST /api/v1/runs/{run_id}/cancel", "operator", "run", "own"): ALLOWED,
    ("POST /api/v1/runs/{run_id}/cancel", "viewer", "run", "own"): FORBIDDEN,
    ("GET /api/v1/workflow-runs/{workflow_id}", "viewer", "admin_workflow_run", "own"): WITHHELD,
    ("GET /api/v1/workflow-runs", "operator", "admin_workflow_run", "own"): WITHHELD,
    ("GET /api/v1/workflow-runs/{workflow_id}", "viewer", "admin_workflow_run", "other"): NOT_FOUND,
    ("POST /api/v1/workflow-runs/{workflow_id}/cancel", "operator", "admin_workflow_run", "own"): (
        FORBIDDEN
    ),
    ("GET /api/v1/definitions/{name}", "admin", "definition", "other"): NOT_FOUND,
    ("POST /api/v1/definitions", "operator", "definition", "own"): FORBIDDEN,
    ("POST /api/v1/definitions", "operator", "definition", "other"): NOT_FOUND,
    ("POST /api/v1/definitions", "viewer", "definition", "other"): FORBIDDEN,
    ("DELETE /api/v1/definitions/{name}", "admin", "definition", "own"): ALLOWED,
    ("run__<job>", "viewer", "definition", "own"): NOT_FOUND,
    ("GET /metrics", "operator", "-", "-"): FORBIDDEN,
    ("list_workers", "viewer", "-", "-"): FORBIDDEN,
    ("workers list", "admin", "-", "-"): ALLOWED,
    ("tokens create", "admin", "token", "other"): FORBIDDEN,
    ("tokens revoke", "admin", "token", "other"): NOT_FOUND,
    ("tokens list", "viewer", "token", "own"): FORBIDDEN,
    ("audit list", "admin", "audit", "other"): NOT_FOUND,
}
"""Some cells written out, checked against the rules (``test_examples_follow_the_rules``)."""

RUN_READS = {"run": "read", "admin_run": "read"}
RUN_LISTS = {"run": "list", "admin_run": "list"}
SCHEDULES = ("schedule", "admin_schedule")
FLOW_RUNS = ("workflow_run", "admin_workflow_run")
ALL_JOBS = ("job", "admin_job", "definition")


def each(kinds: tuple[str, ...], need: str) -> dict[str, str]:
    return dict.fromkeys(kinds, need)


HTTP_ROUTES: dict[str, dict[str, str]] = {
    "GET /": {"-": "public"},
    "GET /docs": {"-": "public"},
    "GET /openapi.json": {"-": "public"},
    "GET /api/v1/health": {"-": "public"},
    "GET /api/v1/ready": {"-": "public"},
    "GET /api/v1/me": {"-": "token"},
    "GET /api/v1/stats": {"-": "token"},
    "GET /api/v1/stats/series": {"-": "token"},
    "GET /metrics": {"-": "admin"},
    "GET /api/v1/workers": {"-": "admin"},
    "GET /api/v1/jobs": each(ALL_JOBS, "list"),
    "GET /api/v1/jobs/{name}": each(ALL_JOBS, "see"),
    "POST /api/v1/jobs/{name}/runs": each(ALL_JOBS, "execute"),
    "GET /api/v1/workflows": {"-": "token"},
    "POST /api/v1/workflows/{name}/runs": each(("workflow", "admin_workflow"), "execute"),
    "POST /api/v1/workflow-runs": each(("workflow", "admin_workflow"), "execute"),
    "GET /api/v1/workflow-runs": each(FLOW_RUNS, "list"),
    "GET /api/v1/workflow-runs/{workflow_id}": each(FLOW_RUNS, "read"),
    "POST /api/v1/workflow-runs/{workflow_id}/cancel": each(FLOW_RUNS, "update"),
    "GET /api/v1/definitions": {"definition": "list"},
    "POST /api/v1/definitions": {"definition": "replace"},
    "GET /api/v1/definitions/{name}": {"definition": "read"},
    "DELETE /api/v1/definitions/{name}": {"definition": "remove"},
    "GET /api/v1/runs": RUN_LISTS,
    "GET /api/v1/runs/{run_id}": RUN_READS,
    "GET /api/v1/runs/{run_id}/events": RUN_READS,
    "GET /api/v1/runs/{run_id}/logs": RUN_READS,
    "GET /api/v1/runs/{run_id}/logs/stream": RUN_READS,
    "GET /api/v1/runs/{run_id}/result": RUN_READS,
    "POST /api/v1/runs/{run_id}/cancel": each(("run", "admin_run"), "update"),
    "POST /api/v1/runs/{run_id}/archive": each(("run", "admin_run"), "update"),
    "POST /api/v1/runs/{run_id}/unarchive": each(("run", "admin_run"), "update"),
    "POST /api/v1/runs/prune": {"-": "admin"},  # its own tenant's runs only: test_retention
    "POST /api/v1/runs/{run_id}/retry": each(("run", "admin_run"), "execute"),
    "GET /api/v1/schedules": each(SCHEDULES, "list"),
    "POST /api/v1/schedules": each(ALL_JOBS, "create"),
    "GET /api/v1/schedules/{schedule_id}": each(SCHEDULES, "read"),
    "PATCH /api/v1/schedules/{schedule_id}": each(SCHEDULES, "update"),
    "DELETE /api/v1/schedules/{schedule_id}": each(SCHEDULES, "delete"),
    "POST /api/v1/schedules/{schedule_id}/pause": each(SCHEDULES, "update"),
    "POST /api/v1/schedules/{schedule_id}/resume": each(SCHEDULES, "update"),
    "POST /api/v1/schedules/{schedule_id}/archive": each(SCHEDULES, "update"),
    "POST /api/v1/schedules/{schedule_id}/unarchive": each(SCHEDULES, "update"),
    "POST /api/v1/schedules/{schedule_id}/trigger": each(SCHEDULES, "execute"),
    "GET /api/v1/schedules/{schedule_id}/preview": each(SCHEDULES, "read"),
    "POST /api/v1/schedules/preview": {"-": "token"},  # a cadence not saved: reads no records
}
BULK_REASON = (
    "a bulk action acts on the runs a filter matches, skipping (and counting) each the caller "
    "may not act on, never refused as a whole: its permissions and tenancy are checked per "
    "run in test_bulk_access.py"
)
PAUSE_REASON = (
    "a pause made by one cell would hold the runs every other cell acts on: who may pause and "
    "resume what, and the tenancy of pauses, are checked on every interface in "
    "test_pause_access.py"
)
ACTOR_REASON = (
    "runs driven from outside: taking needs `execute` on an external job (no job of the "
    "matrix is one), and the reports take a run token, not an API token: who may take, with "
    "which token, and the tenancy of both, are checked on every interface in "
    "test_actor_access.py"
)
SUBSCRIPTION_REASON = (
    "webhook subscriptions: who may subscribe to which runs (a job's read rule, a schedule, "
    "a workflow's steps, the tenant for admins), deleting by the creator or an admin, and the "
    "tenancy of subscriptions and of what they are told, are checked on every interface in "
    "test_subscription_access.py"
)
HTTP_OUT_OF_MATRIX = {
    **dict.fromkeys(
        (
            "POST /api/v1/jobs/{name}/take",
            *(
                f"POST /api/v1/runs/{{run_id}}/{a}"
                for a in ("take", "heartbeat", "progress", "log", "notes", "complete", "fail")
            ),
        ),
        ACTOR_REASON,
    ),
    "/mcp": "the MCP endpoint: its tools are the MCP matrix below",
    "/mcp/": "the MCP endpoint: its tools are the MCP matrix below",
    "/static": "the dashboard's files, the same for everyone",
    **dict.fromkeys(
        (f"POST /api/v1/runs/bulk/{a}" for a in ("cancel", "retry", "delete")), BULK_REASON
    ),
    **dict.fromkeys(
        (
            "GET /api/v1/queues",
            "POST /api/v1/queues/pause",
            "POST /api/v1/queues/resume",
            "POST /api/v1/queues/{name}/pause",
            "POST /api/v1/queues/{name}/resume",
            "POST /api/v1/jobs/{name}/pause",
            "POST /api/v1/jobs/{name}/resume",
        ),
        PAUSE_REASON,
    ),
    **dict.fromkeys(
        (
            "POST /api/v1/subscriptions",
            "GET /api/v1/subscriptions",
            "GET /api/v1/subscriptions/{subscription_id}",
            "DELETE /api/v1/subscriptions/{subscription_id}",
            "POST /api/v1/subscriptions/{subscription_id}/test",
            "GET /api/v1/subscriptions/{subscription_id}/deliveries",
        ),
        SUBSCRIPTION_REASON,
    ),
}

MCP_TOOLS: dict[str, dict[str, str]] = {
    "list_jobs": each(ALL_JOBS, "list"),
    "describe_job": each(ALL_JOBS, "see"),
    "execute_job": each((*ALL_JOBS, "workflow", "admin_workflow"), "execute"),
    "get_job_status": {**RUN_READS, **each(FLOW_RUNS, "read")},
    "get_job_events": RUN_READS,
    "register_job": {"definition": "replace"},
    "remove_job": {"definition": "remove"},
    "job_create": each(ALL_JOBS, "execute"),
    "job_create schedule": each(ALL_JOBS, "create"),
    "job_list": {**RUN_LISTS, **each(SCHEDULES, "list"), **each(FLOW_RUNS, "list")},
    "job_show": {**RUN_READS, **each(SCHEDULES, "read"), **each(FLOW_RUNS, "read")},
    "job_update": each(SCHEDULES, "update"),
    "job_pause": each(SCHEDULES, "update"),
    "job_resume": each(SCHEDULES, "update"),
    "job_cancel": {
        **each(("run", "admin_run"), "update"),
        **each(SCHEDULES, "delete"),
        **each(FLOW_RUNS, "update"),
    },
    "job_result": {**RUN_READS, **each(FLOW_RUNS, "read")},
    "job_search": {**RUN_LISTS, "definition": "list"},
    "run__<job>": each(ALL_JOBS, "run_tool"),
    "list_workers": {"-": "admin"},
}

CLI_COMMANDS: dict[str, dict[str, str]] = {
    "jobs list": each(ALL_JOBS, "list"),
    "jobs show": each(ALL_JOBS, "see"),
    "jobs register": {"definition": "replace"},
    "jobs remove": {"definition": "remove"},
    "jobs definitions": {"definition": "list"},
    "submit": each(ALL_JOBS, "execute"),
    "runs list": RUN_LISTS,
    "runs show": RUN_READS,
    "runs events": RUN_READS,
    "runs logs": RUN_READS,
    "runs result": RUN_READS,
    "runs cancel": each(("run", "admin_run"), "update"),
    "runs archive": each(("run", "admin_run"), "update"),
    "runs unarchive": each(("run", "admin_run"), "update"),
    "runs prune": {"-": "admin"},  # its own tenant's runs only: test_retention
    "runs retry": each(("run", "admin_run"), "execute"),
    "schedules create": each(ALL_JOBS, "create"),
    "schedules list": each(SCHEDULES, "list"),
    "schedules show": each(SCHEDULES, "read"),
    "schedules update": each(SCHEDULES, "update"),
    "schedules pause": each(SCHEDULES, "update"),
    "schedules resume": each(SCHEDULES, "update"),
    "schedules archive": each(SCHEDULES, "update"),
    "schedules unarchive": each(SCHEDULES, "update"),
    "schedules delete": each(SCHEDULES, "delete"),
    "schedules trigger": each(SCHEDULES, "execute"),
    "schedules preview": each(SCHEDULES, "read"),
    "schedules clear": {"-": "admin"},  # its own tenant's only: test_schedule_cli
    "workflows list": each(FLOW_RUNS, "list"),
    "workflows submit": each(("workflow", "admin_workflow"), "execute"),
    "workflows show": each(FLOW_RUNS, "read"),
    "workflows cancel": each(FLOW_RUNS, "update"),
    "tokens create": {"token": "mint"},
    "tokens list": {"token": "tenant_admin"},
    "tokens revoke": {"token": "tenant_admin"},
    "audit list": {"audit": "tenant_admin"},
    "workers list": {"-": "admin"},
}
CLI_OUT_OF_MATRIX = {
    "up": "starts the local services; reads and changes no records",
    "serve": "starts the HTTP server, whose routes are the HTTP matrix",
    "worker": "a process role: runs what the broker hands it, checked again on the worker",
    "beat": "a process role: fires schedules as their owners",
    "flower": "starts Flower (its own authentication), reads no records through the client",
    "bench": "a benchmark on a cluster of its own",
    "mcp": "serves the MCP tools over stdio: the MCP matrix runs it",
    "secret-key": "prints a new random key; reads nothing",
    "config": "prints this process's settings (secrets masked); reads no records",
    "runs delete": BULK_REASON,
    **dict.fromkeys(("runs take", "runs report", "runs complete", "runs fail"), ACTOR_REASON),
    **dict.fromkeys(
        ("queues list", "queues pause", "queues resume", "jobs pause", "jobs resume"),
        PAUSE_REASON,
    ),
    **dict.fromkeys(
        (f"subscriptions {c}" for c in ("create", "list", "show", "test", "delete", "deliveries")),
        SUBSCRIPTION_REASON,
    ),
}
MCP_OUT_OF_MATRIX = {
    **dict.fromkeys(("job_take", "job_report", "job_complete", "job_fail"), ACTOR_REASON),
    **dict.fromkeys(("runs_bulk_cancel", "runs_bulk_retry", "runs_bulk_delete"), BULK_REASON),
    **dict.fromkeys(("queue_list", "queue_pause", "queue_resume"), PAUSE_REASON),
    **dict.fromkeys(
        (
            "subscription_create",
            "subscription_list",
            "subscription_test",
            "subscription_delete",
            "subscription_deliveries",
        ),
        SUBSCRIPTION_REASON,
    ),
    "runs_prune": "an admin's prune (its tenant's runs only), the same service call as the "
    "matrix's `runs prune` and `POST /api/v1/runs/prune`; tenancy: test_retention",
}

FRESH = {
    # Cells that change what they act on get a resource of their own, in this state.
    "POST /api/v1/runs/{run_id}/cancel": "pending",
    "POST /api/v1/runs/{run_id}/retry": "cancelled",
    "POST /api/v1/runs/{run_id}/archive": "pending",
    "POST /api/v1/runs/{run_id}/unarchive": "pending",
    "POST /api/v1/schedules/{schedule_id}/archive": "new",
    "POST /api/v1/schedules/{schedule_id}/unarchive": "new",
    "PATCH /api/v1/schedules/{schedule_id}": "new",
    "DELETE /api/v1/schedules/{schedule_id}": "new",
    "POST /api/v1/schedules/{schedule_id}/pause": "new",
    "POST /api/v1/schedules/{schedule_id}/resume": "paused",
    "POST /api/v1/schedules/{schedule_id}/trigger": "new",
    "POST /api/v1/workflow-runs/{workflow_id}/cancel": "new",
    "POST /api/v1/definitions": "new",
    "DELETE /api/v1/definitions/{name}": "new",
    "register_job": "new",
    "remove_job": "new",
    "job_update": "new",
    "job_pause": "new",
    "job_resume": "paused",
    "job_cancel": "pending",
    "jobs register": "new",
    "jobs remove": "new",
    "runs cancel": "pending",
    "runs retry": "cancelled",
    "runs archive": "pending",
    "runs unarchive": "pending",
    "schedules archive": "new",
    "schedules unarchive": "new",
    "schedules update": "new",
    "schedules pause": "new",
    "schedules resume": "paused",
    "schedules delete": "new",
    "schedules trigger": "new",
    "workflows cancel": "new",
    "tokens revoke": "new",
}
LISTINGS = {
    "GET /api/v1/jobs",
    "GET /api/v1/workflow-runs",
    "GET /api/v1/definitions",
    "GET /api/v1/runs",
    "GET /api/v1/schedules",
    "list_jobs",
    "job_list",
    "job_search",
    "jobs list",
    "jobs definitions",
    "runs list",
    "schedules list",
    "workflows list",
    "tokens list",
    "audit list",
}
"""Ops answering a list: a cell is allowed if the resource is in it, not_found if not. Each list
is checked for a resource made for it (``newest``), so no list limit can hide it."""


# --- cells -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cell:
    op: str
    tenant: str
    role: str
    resource: str
    where: str
    need: str

    @property
    def expected(self) -> str:
        return expected(self.need, self.role, self.resource, self.where)

    @property
    def target_tenant(self) -> str:
        if self.where == "own":
            return self.tenant
        return next(t for t in TENANTS if t != self.tenant)

    def __str__(self) -> str:
        return f"{self.op:46} {self.tenant}-{self.role:8} {self.resource}@{self.where}"


def cells(table: dict[str, dict[str, str]]) -> list[Cell]:
    out = []
    for op, needs in table.items():
        for resource, need in needs.items():
            wheres = ("-",) if resource == "-" else ("catalog",) if resource in CATALOG else None
            for tenant, role in itertools.product(TENANTS, ROLES):
                for where in wheres or ("own", "other"):
                    out.append(Cell(op, tenant, role, resource, where, need))
    return out


# --- the world: principals, resources, and how a cell's outcome is read ----------------------

INPUTS: dict[str, dict[str, Any]] = {
    "tests.operated": {"seconds": 0},
    "examples.admin_only": {},
    "tests.operated_flow": {},
    "tests.admin_flow": {},
}
FAR = "2100-01-01T00:00:00+00:00"
RUN_JOBS = {"run": "tests.operated", "admin_run": "examples.admin_only"}
FLOW_OF = {"workflow_run": "tests.operated_flow", "admin_workflow_run": "tests.admin_flow"}
ID_KEYS = ("id", "run_id", "name", "schedule_id", "workflow_run_id", "tenant")


def listed(data: Any) -> set[str]:
    """Every id, name and tenant named anywhere in a JSON answer."""
    found: set[str] = set()
    todo = [data]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in ID_KEYS and isinstance(value, str):
                    found.add(value)
                todo.append(value)
        elif isinstance(item, list):
            todo.extend(item)
    return found


class World:
    """The principals' tokens and the resources each tenant's admin made (over HTTP)."""

    def __init__(self, cluster: Cluster, serve: Serve) -> None:
        self.cluster = cluster
        self.url = serve.url
        # No kept-alive connections: the server closes one idle for 5 s, and a request sent on
        # it as it closes fails (the CLI cells leave the client idle that long).
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        self.http = httpx.Client(base_url=serve.url, timeout=90, limits=no_keepalive)
        self._tokens = tokens.TokenStore(cluster.store.engine)
        self.tokens = {
            (tenant, role): self._tokens.create(
                Principal(id=f"{tenant}-{role}", roles=ROLE_ROLES[role], tenant=tenant), "matrix"
            )[1]
            for tenant, role in itertools.product(TENANTS, ROLES)
        }
        self._serial = itertools.count(1)
        self._cache: dict[tuple[str, ...], str] = {}
        for tenant in TENANTS:
            for kind in (*RUN_JOBS, *SCHEDULES, *FLOW_RUNS, "definition", "token", "audit"):
                self.shared(kind, tenant)

    # resources

    def admin(self, tenant: str, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[(tenant, 'admin')]}"}
        response = self.http.request(method, path, json=body, headers=headers)
        assert response.is_success, f"{tenant} admin: {method} {path}: {response.text}"
        return response.json()

    def shared(self, kind: str, tenant: str) -> str:
        key = ("shared", kind, tenant)
        if key not in self._cache:
            self._cache[key] = self.make(kind, tenant, "shared")
        return self._cache[key]

    def value(self, cell: Cell, fresh: str | None) -> str:
        """The name or id a cell acts on."""
        if cell.where == "-":
            return ""
        if cell.resource in CATALOG:
            return CATALOG[cell.resource]
        kind, tenant = cell.resource, cell.target_tenant
        if cell.op in LISTINGS:
            key = ("newest", cell.op, kind, tenant)
            if key not in self._cache:
                self._cache[key] = self.make(kind, tenant, "shared")
            return self._cache[key]
        if fresh is not None:
            return self.make(kind, tenant, fresh)
        return self.shared(kind, tenant)

    def make(self, kind: str, tenant: str, state: str) -> str:
        if kind in RUN_JOBS:
            return self._run(RUN_JOBS[kind], tenant, state)
        if kind in SCHEDULES:
            job = "tests.operated" if kind == "schedule" else "examples.admin_only"
            body = {"job": job, "kind": "interval", "every": 3600, "start_at": FAR}
            made = self.admin(tenant, "POST", "/api/v1/schedules", body | {"input": INPUTS[job]})
            if state == "paused":
                self.admin(tenant, "POST", f"/api/v1/schedules/{made['id']}/pause")
            return str(made["id"])
        if kind in FLOW_RUNS:
            made = self.admin(tenant, "POST", f"/api/v1/workflows/{FLOW_OF[kind]}/runs", {})
            return str(made["workflow_run_id"])
        if kind == "definition":
            name = f"{tenant}.alias{next(self._serial)}"
            self.admin(tenant, "POST", "/api/v1/definitions", alias(name))
            return name
        if kind == "token":
            who = Principal(id=f"{tenant}-bot{next(self._serial)}", tenant=tenant)
            return self._tokens.create(who, f"{tenant}-admin")[0].id
        assert kind == "audit", kind
        self.admin(tenant, "POST", "/api/v1/definitions", alias(f"{tenant}.audited"))
        return tenant  # an audit entry of the tenant (its admin's registration)

    def _run(self, job: str, tenant: str, state: str) -> str:
        body: dict[str, Any] = {"input": INPUTS[job]}
        body |= {"wait": 60} if state == "shared" else {"countdown": 3000}
        made = self.admin(tenant, "POST", f"/api/v1/jobs/{job}/runs", body)
        run_id = str(made["run_id"])
        if state == "shared":
            assert made["state"] == "completed", made
        if state == "cancelled":
            self.admin(tenant, "POST", f"/api/v1/runs/{run_id}/cancel")
        return run_id

    def newest_for(self, all_cells: list[Cell]) -> None:
        """Make the resources the list cells of an interface look for, before its cells run:
        a process sees a definition made by another within a second (``Registry.refresh``),
        and an MCP server over stdio started after this sees them all at once."""
        for key in [k for k in self._cache if k[0] == "newest"]:
            del self._cache[key]
        for cell in all_cells:
            if cell.op in LISTINGS:
                self.value(cell, None)

    def replaced(self, tenant: str, name: str) -> bool:
        """Whether the tenant's definition ``name`` was replaced (is past version 1)."""
        return int(self.admin(tenant, "GET", f"/api/v1/definitions/{name}")["version"]) != 1

    def listing_outcome(self, cell: Cell, value: str, answer: Any) -> str:
        if value not in listed(answer):
            return NOT_FOUND
        return withheld_outcome(cell, value, answer)

    def tidy(self, cell: Cell, value: str) -> None:
        """Remove the definitions a replace or remove cell made or left (each tenant's copy):
        every process rebuilds all definitions when one changes, so they must not pile up."""
        if cell.need not in ("replace", "remove"):
            return
        for tenant in TENANTS:
            headers = {"Authorization": f"Bearer {self.tokens[(tenant, 'admin')]}"}
            self.http.delete(f"/api/v1/definitions/{value}", headers=headers)

    def after_success(self, cell: Cell, value: str, answer: Any) -> str:
        if cell.op in LISTINGS:
            return self.listing_outcome(cell, value, answer)
        if cell.need == "replace" and cell.where == "other":
            return ALLOWED if self.replaced(cell.target_tenant, value) else NOT_FOUND
        return withheld_outcome(cell, value, answer)


def withheld_outcome(cell: Cell, value: str, answer: Any) -> str:
    """``withheld`` if the workflow run ``value`` in the answer names steps withheld from the
    reader, else ``allowed``. A shown workflow run must say which: an answer that names none
    while it shows the run is ``allowed``, which the table refuses for a reader of too little."""
    if cell.resource not in FLOW_RUNS:
        return ALLOWED
    todo = [answer]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            if value in (item.get("id"), item.get("workflow_run_id")) and item.get("withheld"):
                return WITHHELD
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return ALLOWED


def alias(name: str) -> dict[str, Any]:
    return {"name": name, "kind": "alias", "target": "tests.operated", "defaults": {"seconds": 0}}


class Mismatches:
    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.lines: list[str] = []
        self.count = 0
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, label: str) -> None:
        """Count the time since the last cell (or lap) as ``label``'s."""
        now = time.monotonic()
        self.seconds[label] = self.seconds.get(label, 0.0) + now - self._last
        self._last = now

    def check(self, cell: Cell, got: str, detail: str) -> None:
        self.lap(cell.op)
        self.count += 1
        if got != cell.expected:
            flat = " ".join(detail.split())[:160]
            self.lines.append(f"{cell}  expected {cell.expected}, got {got}: {flat}")

    def assert_none(self) -> None:
        slowest = sorted(self.seconds.items(), key=lambda kv: -kv[1])[:5]
        print(f"\n{self.interface}: {self.count} cells, {len(self.lines)} mismatches; slowest")
        print(", ".join(f"{op} {seconds:.1f} s" for op, seconds in slowest))
        assert not self.lines, (
            f"{len(self.lines)} of {self.count} {self.interface} cells differ from the table:\n"
            + "\n".join(self.lines)
        )


@pytest.fixture(scope="module")
def world(shared: Cluster) -> Iterator[World]:
    with Serve(shared) as serve:
        w = World(shared, serve)
        try:
            yield w
        finally:
            w.http.close()


# --- coverage ----------------------------------------------------------------------------------


def app_routes(cluster_settings: Any) -> set[str]:
    """``METHOD path`` of every route of the app (mounts and the MCP endpoint: their path)."""
    from jobsys.http.app import create_app

    app = create_app(cluster_settings)
    try:
        return route_keys(app.routes, "")
    finally:
        app.state.service.close()


def route_keys(routes: list[BaseRoute], prefix: str) -> set[str]:
    found: set[str] = set()
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included routers
        if included is not None:
            more = str(getattr(getattr(route, "include_context", None), "prefix", "") or "")
            found |= route_keys(included.routes, prefix + more)
        elif isinstance(route, Mount) or (isinstance(route, Route) and route.methods is None):
            found.add(prefix + route.path)
        elif isinstance(route, Route):
            found |= {f"{m} {prefix}{route.path}" for m in route.methods or () if m != "HEAD"}
        else:
            raise AssertionError(f"a route of a kind the matrix does not know: {route!r}")
    return found


def cli_commands() -> set[str]:
    found = set()

    def walk(group: click.Group, prefix: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                walk(command, (*prefix, name))
            else:
                found.add(" ".join((*prefix, name)))

    cli_main.load_all()
    walk(cli_main, ())
    return found


def test_tables_cover_everything(shared: Cluster) -> None:
    """A route, tool or command the tables do not name fails here: add it to the matrix."""
    routes = app_routes(shared.settings)
    assert routes - set(HTTP_ROUTES) - set(HTTP_OUT_OF_MATRIX) == set(), "routes not in the matrix"
    assert set(HTTP_ROUTES) - routes == set(), "the matrix names routes the app does not have"
    tools = {t.name for t in TOOLS}
    in_table = {op.split(" ")[0] for op in MCP_TOOLS} - {"run__<job>"}
    assert (tools - set(MCP_OUT_OF_MATRIX)) ^ in_table == set(), "MCP tools and the matrix differ"
    assert set(MCP_OUT_OF_MATRIX) <= tools
    # the deprecated names are the same tools (same handler, same checks), not listed
    assert set(DEPRECATED_TOOLS.values()) <= tools and not set(DEPRECATED_TOOLS) & tools
    commands = cli_commands()
    assert commands - set(CLI_COMMANDS) - set(CLI_OUT_OF_MATRIX) == set(), "commands not covered"
    assert set(CLI_COMMANDS) - commands == set(), "the matrix names commands the CLI lacks"
    for table in (HTTP_ROUTES, MCP_TOOLS, CLI_COMMANDS):
        for needs in table.values():
            assert set(needs.values()) <= set(NEEDS)
            assert set(needs) <= {*JOB_OF, "-", "token", "audit"}


@pytest.mark.backend_independent
def test_examples_follow_the_rules() -> None:
    tables = {**HTTP_ROUTES, **MCP_TOOLS, **CLI_COMMANDS}
    for (op, role, resource, where), outcome in EXAMPLES.items():
        assert expected(tables[op][resource], role, resource, where) == outcome, (op, role)


# --- HTTP --------------------------------------------------------------------------------------

PLACEHOLDERS = ("{name}", "{run_id}", "{schedule_id}", "{workflow_id}")
LIST_QUERY = {
    "GET /api/v1/jobs": {"all": "true"},
    "GET /api/v1/runs": {"limit": "1000"},
    "GET /api/v1/schedules": {"limit": "10000"},
    "GET /api/v1/workflow-runs": {"limit": "1000"},
}


def adhoc(workflow: str) -> dict[str, Any]:
    job = "tests.operated" if workflow == "tests.operated_flow" else "examples.admin_only"
    steps = [{"name": "only", "job": job, "input": INPUTS[job]}]
    return {"workflow": {"name": "matrix.adhoc", "steps": steps}, "input": {}}


def http_body(op: str, value: str) -> Any:
    bodies: dict[str, Callable[[], Any]] = {
        "POST /api/v1/jobs/{name}/runs": lambda: {
            "input": INPUTS.get(value, {}),
            "countdown": 3000,
        },
        "POST /api/v1/workflows/{name}/runs": lambda: {},
        "POST /api/v1/workflow-runs": lambda: adhoc(value),
        "POST /api/v1/definitions": lambda: alias(value),
        "POST /api/v1/schedules": lambda: {
            "job": value,
            "kind": "interval",
            "every": 3600,
            "start_at": FAR,
            "input": INPUTS.get(value, {}),
        },
        "PATCH /api/v1/schedules/{schedule_id}": lambda: {"every": 7200},
        "POST /api/v1/runs/prune": lambda: {"dry_run": True},
        "POST /api/v1/schedules/preview": lambda: {
            "kind": "cron",
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
        },
    }
    return bodies[op]() if op in bodies else None


def http_outcome(w: World, cell: Cell, response: httpx.Response, value: str) -> tuple[str, str]:
    text = response.text[:300]
    if response.is_success:
        answer = response.json() if "json" in response.headers.get("content-type", "") else {}
        return w.after_success(cell, value, answer), f"{response.status_code} {text}"
    kind = ""
    with contextlib.suppress(ValueError, AttributeError):
        kind = str(response.json()["error"]["type"])
    if response.status_code == 403:
        return FORBIDDEN, text
    if response.status_code == 404 and kind != "NotFound":  # NotFound: no such route
        return NOT_FOUND, text
    return f"HTTP {response.status_code}", text


def http_cell(w: World, cell: Cell, value: str) -> tuple[str, str]:
    method, path = cell.op.split(" ", 1)
    for holder in PLACEHOLDERS:
        path = path.replace(holder, value)
    headers = {"Authorization": f"Bearer {w.tokens[(cell.tenant, cell.role)]}"}
    params = LIST_QUERY.get(cell.op)
    body = http_body(cell.op, value)
    if path.endswith("/logs/stream"):
        with w.http.stream(method, path, headers=headers) as response:
            response.read()
    else:
        response = w.http.request(method, path, headers=headers, params=params, json=body)
    return http_outcome(w, cell, response, value)


def test_http_matrix(world: World) -> None:
    found = Mismatches("HTTP")
    all_cells = cells(HTTP_ROUTES)
    world.newest_for(all_cells)
    for cell in all_cells:
        value = world.value(cell, FRESH.get(cell.op))
        found.check(cell, *http_cell(world, cell, value))
        world.tidy(cell, value)
    found.assert_none()


# --- MCP ---------------------------------------------------------------------------------------


def mcp_call(cell: Cell, value: str) -> tuple[str, dict[str, Any]]:
    """The tool and the arguments of a cell."""
    tool = cell.op.split(" ")[0]
    given = dict(INPUTS.get(value, {}))
    if tool == "run__<job>":
        return tool_name(value), given
    what = {"run": "runs", "admin_run": "runs", "schedule": "schedules"}
    what |= {"admin_schedule": "schedules"}
    searched = value if cell.resource == "definition" else RUN_JOBS.get(cell.resource, "")
    arguments: dict[str, Callable[[], dict[str, Any]]] = {
        "list_jobs": lambda: {"include_hidden": True},
        "describe_job": lambda: {"job": value},
        "execute_job": lambda: {"job": value, "input": given, "mode": "background"},
        "get_job_status": lambda: {"run_id": value},
        "get_job_events": lambda: {"run_id": value},
        "register_job": lambda: alias(value),
        "remove_job": lambda: {"name": value},
        "job_create": lambda: (
            {"job": value, "input": given}
            | ({"schedule": {"every": 3600, "start": FAR}} if cell.op.endswith("schedule") else {})
        ),
        "job_list": lambda: {"what": what.get(cell.resource, "workflow_runs"), "limit": 500},
        "job_update": lambda: {"id": value, "every": 7200},
        "job_search": lambda: {"query": searched, "limit": 500},
        "list_workers": lambda: {},
    }
    # job_show, job_pause, job_resume, job_cancel, job_result: the id only
    return tool, arguments.get(tool, lambda: {"id": value})()


def mcp_fresh(cell: Cell) -> str | None:
    if cell.op == "job_cancel":
        return "new" if cell.resource in (*SCHEDULES, *FLOW_RUNS) else "pending"
    return FRESH.get(cell.op)


def mcp_outcome(w: World, cell: Cell, value: str, result: Any) -> tuple[str, str]:
    text = " ".join(getattr(c, "text", "") for c in result.content)[:300]
    data = result.structured_content or {}
    if not result.is_error:
        return w.after_success(cell, value, data), text
    kind = str(data.get("error", {}).get("type", ""))
    if kind in ("PermissionDenied", "NotOwner"):
        return FORBIDDEN, text
    if kind.endswith("NotFound") or kind == "UnknownJob" or "unknown tool" in text:
        return NOT_FOUND, text
    return f"error {kind}", text


async def mcp_cells(w: World, s: Session, mine: list[Cell], found: Mismatches) -> None:
    for cell in mine:
        value = w.value(cell, mcp_fresh(cell))
        tool, arguments = mcp_call(cell, value)
        result = await s.call_tool(tool, arguments)
        found.check(cell, *mcp_outcome(w, cell, value, result))
        w.tidy(cell, value)


def by_principal(all_cells: list[Cell]) -> dict[tuple[str, str], list[Cell]]:
    out: dict[tuple[str, str], list[Cell]] = {}
    for cell in all_cells:
        out.setdefault((cell.tenant, cell.role), []).append(cell)
    return out


def test_mcp_matrix_over_http(world: World) -> None:
    found = Mismatches("MCP over /mcp")
    world.newest_for(cells(MCP_TOOLS))

    async def run() -> None:
        for (tenant, role), mine in by_principal(cells(MCP_TOOLS)).items():
            async with http_session(f"{world.url}/mcp", world.tokens[(tenant, role)]) as s:
                await mcp_cells(world, s, mine, found)

    asyncio.run(run())
    found.assert_none()


def test_mcp_matrix_over_stdio(world: World, tmp_path: Path) -> None:
    found = Mismatches("MCP over stdio")
    world.newest_for(cells(MCP_TOOLS))

    async def run() -> None:
        for (tenant, role), mine in by_principal(cells(MCP_TOOLS)).items():
            env = {**world.cluster.env, "JOBSYS_TOKEN": world.tokens[(tenant, role)]}
            async with stdio_session(env, tmp_path / "mcp.log") as s:
                await mcp_cells(world, s, mine, found)

    asyncio.run(run())
    found.assert_none()


# --- CLI ---------------------------------------------------------------------------------------


def cli_argv(cell: Cell, value: str) -> tuple[list[str], str | None]:
    """The command line of a cell (without --token), and its standard input."""
    op = cell.op
    inputs = json.dumps(INPUTS.get(value, {}))
    lines: dict[str, list[str]] = {
        "jobs list": ["--json", "--all"],
        "jobs show": [value, "--json"],
        "jobs register": ["-"],
        "jobs remove": [value],
        "jobs definitions": ["--json"],
        "submit": [value, "--input", inputs],
        "runs list": ["--json", "--limit", "10000"],
        "runs show": [value, "--json"],
        "runs events": [value, "--json"],
        "runs logs": [value, "--json"],
        "runs result": [value],
        "runs cancel": [value, "--json"],
        "runs retry": [value],
        "runs archive": [value],
        "runs unarchive": [value],
        "runs prune": ["--dry-run", "--json"],
        "schedules create": [value, "--every", "3600", "--start", FAR, "--input", inputs],
        "schedules list": ["--json", "--limit", "10000"],
        "schedules show": [value, "--json"],
        "schedules update": [value, "--every", "7200"],
        "schedules pause": [value],
        "schedules resume": [value],
        "schedules archive": [value],
        "schedules unarchive": [value],
        "schedules delete": [value],
        "schedules trigger": [value],
        "schedules preview": [value, "--json"],
        "schedules clear": ["--dry-run", "--json"],  # dry: the other cells' schedules stay
        "workflows list": ["--runs", "--json"],
        "workflows submit": [value],
        "workflows show": [value, "--json"],
        "workflows cancel": [value],
        "tokens create": ["--principal", "minted", "--tenant", cell.target_tenant, "--json"],
        "tokens list": ["--json"],
        "tokens revoke": [value],
        "audit list": ["--json", "--limit", "10000"],
        "workers list": ["--json"],
    }
    stdin = json.dumps(alias(value)) if op == "jobs register" else None
    return [*op.split(" "), *lines[op]], stdin


def cli_outcome(w: World, cell: Cell, value: str, code: int, out: str, err: str) -> tuple[str, str]:
    detail = f"exit {code}: {(err or out).strip()[:300]}"
    if code == 0:
        answer: Any = {}
        if cell.op in LISTINGS or cell.resource in FLOW_RUNS:
            with contextlib.suppress(ValueError):
                answer = json.loads(out)
        return w.after_success(cell, value, answer), detail
    if code == 3 and "permission denied" in err:
        return FORBIDDEN, detail
    if code == 2 and ("not found" in err or "unknown job" in err):
        return NOT_FOUND, detail
    return f"exit {code}", detail


@contextlib.contextmanager
def shared_store(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[client.Client]]:
    """In-process CLI commands share one open store (a process opens one, checking the schema,
    and closes it by exiting: 576 times that is most of the CLI cells' time); yields the
    clients they made, whose Celery apps the caller closes."""
    store = stores.Store.open(url)
    really_close = store.close
    monkeypatch.setattr(store, "close", lambda: None)
    monkeypatch.setattr(runs.RunStore, "open", classmethod(lambda cls, _url: store))
    made: list[client.Client] = []
    original = client.Client.from_settings.__func__  # type: ignore[attr-defined]

    def tracked(cls: type[client.Client], *args: Any, **kwargs: Any) -> client.Client:
        c = original(cls, *args, **kwargs)
        made.append(c)
        return c

    monkeypatch.setattr(client.Client, "from_settings", classmethod(tracked))
    try:
        yield made
    finally:
        really_close()


def representative(all_cells: list[Cell]) -> dict[str, Cell]:
    """One cell per command for a real process: globex's operator, on acme's resource if the
    command takes one."""
    chosen: dict[str, Cell] = {}
    for cell in all_cells:
        if cell.tenant == "globex" and cell.role == "operator" and cell.where != "own":
            chosen.setdefault(cell.op, cell)
    return chosen


def cli_in_process(w: World, runner: CliRunner, cell: Cell, value: str) -> tuple[str, str]:
    argv, stdin = cli_argv(cell, value)
    argv += ["--token", w.tokens[(cell.tenant, cell.role)]]
    result = runner.invoke(cli_main, argv, input=stdin)
    if result.exception and not isinstance(result.exception, SystemExit):
        return "crash", repr(result.exception)
    return cli_outcome(w, cell, value, result.exit_code, result.stdout, result.stderr)


def cli_process(w: World, env: dict[str, str], cell: Cell, value: str) -> tuple[int, str, str]:
    """A cell as a real ``python -m jobsys`` process: its exit code, stdout and stderr."""
    argv, stdin = cli_argv(cell, value)
    argv += ["--token", w.tokens[(cell.tenant, cell.role)]]
    done = subprocess.run(
        [sys.executable, "-m", "jobsys", *argv],
        env=env,
        cwd=ROOT,
        input=stdin or "",
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


def test_cli_matrix(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    found = Mismatches("CLI")
    all_cells = cells(CLI_COMMANDS)
    world.newest_for(all_cells)
    env = {k: v for k, v in world.cluster.env.items() if k != "JOBSYS_TOKEN"}
    runner = CliRunner(env=env)
    processes = representative(all_cells)
    # The representative cells run as processes in the background (their resources made
    # first, here) while the others run in-process.
    chosen = [(cell, world.value(cell, FRESH.get(cell.op))) for cell in processes.values()]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = [pool.submit(cli_process, world, env, cell, value) for cell, value in chosen]
        with shared_store(world.cluster.settings.database_url, monkeypatch) as made:
            for cell in all_cells:
                if processes.get(cell.op) is not cell:
                    value = world.value(cell, FRESH.get(cell.op))
                    found.check(cell, *cli_in_process(world, runner, cell, value))
                    world.tidy(cell, value)
                    while made:
                        made.pop().close()
        results = [future.result() for future in running]
    found.lap("(waiting for the processes)")
    for (cell, value), result in zip(chosen, results, strict=True):
        found.check(cell, *cli_outcome(world, cell, value, *result))
        world.tidy(cell, value)
    print(f"\nCLI: {len(chosen)} of the cells ran as `python -m jobsys ... --token` processes")
    found.assert_none()
