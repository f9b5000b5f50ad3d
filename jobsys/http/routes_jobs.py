"""Jobs (catalog and runtime-registered), workflows as declared, and runtime definitions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import JSONResponse

from jobsys.base import keywords
from jobsys.declare import definitions, jobs, workflows
from jobsys.http.auth import ClientDep
from jobsys.http.errors import ApiError
from jobsys.service import views
from jobsys.service.client import Client

router = APIRouter(prefix="/api/v1")

NamePath = Annotated[str, Path(min_length=1, max_length=200, description="A job's name.")]


MAY = ("execute", "create", "update", "delete")
"""The actions a job's JSON says the caller may do (``may``: a hint, the checks still decide)."""


def job_json(spec: jobs.JobSpec, c: Client | None = None) -> dict[str, Any]:
    data = {**views.spec_json(spec), "kind": definitions.kind_of(spec)}
    if c is not None:
        data["may"] = {a: c.policy.may(c.principal, a, spec) for a in MAY}
    return data


def edges(wf: workflows.Workflow) -> list[list[str]]:
    return [[dep, s.name] for s in wf.steps for dep in s.depends_on]


def workflow_json(wf: workflows.Workflow, registry: jobs.Registry) -> dict[str, Any]:
    data = wf.to_data()
    return {
        "name": wf.name,
        "description": wf.description,
        "kind": "workflow" if registry.is_dynamic(wf.name) else "code",
        "timeout": data["timeout"],
        "failure": data["failure"],
        "steps": data["steps"],
        "edges": edges(wf),
        "input_schema": wf.input_model.model_json_schema(),
    }


def _labels(given: list[str]) -> dict[str, str]:
    wanted = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApiError(
                422,
                "InvalidRequest",
                f"label {item[:60]!r} must be key=value",
                [{"loc": ["query", "label"], "msg": "must be key=value", "type": "value_error"}],
            )
        wanted[key] = value
    return wanted


def _keep(spec: jobs.JobSpec, tag: str | None, labels: dict[str, str], words: set[str]) -> bool:
    if tag and tag not in spec.tags:
        return False
    if any(spec.labels.get(k) != v for k, v in labels.items()):
        return False
    if words:
        text = f"{spec.name} {spec.description} {' '.join(spec.tags)}"
        text += " " + " ".join(f"{k} {v}" for k, v in spec.labels.items())
        return words <= set(keywords.words(text))
    return True


@router.get("/jobs", tags=["jobs"], summary="Jobs (tag, label and keyword filters) and workflows")
def list_jobs(
    c: ClientDep,
    tag: Annotated[str | None, Query(max_length=200)] = None,
    label: Annotated[
        list[str] | None, Query(max_length=20, description="key=value, repeatable")
    ] = None,
    q: Annotated[str | None, Query(max_length=500)] = None,
    include_hidden: Annotated[bool, Query(alias="all", description="Hidden jobs too.")] = False,
) -> dict[str, Any]:
    labels = _labels(label or [])
    words = set(keywords.words(q or ""))
    found = [job_json(s, c) for s in c.job_specs(include_hidden) if _keep(s, tag, labels, words)]
    flows = [
        workflow_json(wf, c.registry)
        for _, wf in sorted(c.registry.workflows.items())
        if not words or words <= set(keywords.words(f"{wf.name} {wf.description}"))
    ]
    return {"jobs": found, "workflows": [] if tag or labels else flows}


@router.get("/jobs/{name}", tags=["jobs"], summary="One job, with its input and output schemas")
def show_job(name: NamePath, c: ClientDep) -> dict[str, Any]:
    return job_json(c.job_spec(name), c)


@router.get("/workflows", tags=["workflows"], summary="Declared and registered workflows")
def list_workflows(c: ClientDep) -> dict[str, Any]:
    flows = sorted(c.registry.workflows.items())
    return {"workflows": [workflow_json(wf, c.registry) for _, wf in flows]}


# --- runtime definitions -------------------------------------------------------------------


@router.get("/definitions", tags=["definitions"], summary="Jobs registered at runtime")
def list_definitions(c: ClientDep) -> dict[str, Any]:
    return {"definitions": c.definitions.list()}


@router.post(
    "/definitions",
    tags=["definitions"],
    status_code=201,
    summary="Register a job (alias, http or workflow) at runtime",
)
def register_definition(
    c: ClientDep,
    data: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {
                    "name": "team.add10",
                    "kind": "alias",
                    "target": "examples.add",
                    "defaults": {"b": 10},
                }
            ]
        ),
    ],
) -> JSONResponse:
    record = c.definitions.register(data)
    return JSONResponse(record, status_code=201)


@router.get("/definitions/{name}", tags=["definitions"], summary="One runtime definition")
def show_definition(name: NamePath, c: ClientDep) -> dict[str, Any]:
    return c.definitions.get(name)


@router.delete("/definitions/{name}", tags=["definitions"], summary="Remove a runtime job")
def remove_definition(name: NamePath, c: ClientDep) -> dict[str, Any]:
    c.definitions.remove(name)
    return {"name": name, "removed": True}
