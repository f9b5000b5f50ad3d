"""Jobs (catalog and runtime-registered), workflows as declared, and runtime definitions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import JSONResponse

from jobsys.http.auth import ClientDep
from jobsys.service import views

router = APIRouter(prefix="/api/v1")

NamePath = Annotated[str, Path(min_length=1, max_length=200, description="A job's name.")]


@router.get("/jobs", tags=["jobs"], summary="Jobs (tag, label and keyword filters) and workflows")
def list_jobs(
    c: ClientDep,
    tag: Annotated[str | None, Query(max_length=200)] = None,
    label: Annotated[
        list[str] | None,
        Query(max_length=20, description="key=value, or key for any value; repeatable"),
    ] = None,
    q: Annotated[str | None, Query(max_length=500)] = None,
    include_hidden: Annotated[bool, Query(alias="all", description="Hidden jobs too.")] = False,
) -> dict[str, Any]:
    where = views.JobFilter.parse(tag, label or (), q)
    return views.listing_json(c, views.list_jobs(c, where, include_hidden))


@router.get("/jobs/{name}", tags=["jobs"], summary="One job, with its input and output schemas")
def show_job(name: NamePath, c: ClientDep) -> dict[str, Any]:
    return views.describe_job(c, name)


@router.get("/workflows", tags=["workflows"], summary="Declared and registered workflows")
def list_workflows(c: ClientDep) -> dict[str, Any]:
    flows = sorted(c.registry.workflows.items())
    return {"workflows": [views.workflow_json(wf, c.registry) for _, wf in flows]}


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
