"""Workflow runs: start one (of a declared or registered workflow, or of one given as data),
list, show with each step's state and runs and the DAG's edges, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query

from jobsys.base import errors
from jobsys.declare import workflows
from jobsys.http.auth import ClientDep
from jobsys.http.models import AdHocWorkflowBody, WorkflowSubmitBody
from jobsys.service import views
from jobsys.store import workflow_runs

router = APIRouter(prefix="/api/v1", tags=["workflows"])

IdPath = Annotated[str, Path(min_length=1, max_length=64, description="A workflow run id.")]


def _started(workflow_id: str) -> dict[str, Any]:
    return {"workflow_run_id": workflow_id, "url": f"/api/v1/workflow-runs/{workflow_id}"}


@router.post(
    "/workflows/{name}/runs", status_code=202, summary="Start a run of a declared workflow"
)
def submit_workflow(
    name: Annotated[str, Path(min_length=1, max_length=200)],
    c: ClientDep,
    body: Annotated[WorkflowSubmitBody | None, Body()] = None,
) -> dict[str, Any]:
    body = body or WorkflowSubmitBody.model_validate({})
    for_each_inputs(c.registry.workflow(name), body.input)
    return _started(c.workflows.submit(name, body.input, body.priority))


@router.post("/workflow-runs", status_code=202, summary="Start a run of a workflow given as data")
def submit_adhoc(body: AdHocWorkflowBody, c: ClientDep) -> dict[str, Any]:
    data = body.workflow.model_dump(mode="json", exclude_none=True)
    for_each_inputs(workflows.from_data(data), body.input)
    return _started(c.workflows.submit(data, body.input, body.priority))


@router.get("/workflow-runs", summary="Workflow runs, newest first")
def list_workflow_runs(
    c: ClientDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> dict[str, Any]:
    return {"workflow_runs": [r.to_json() for r in c.workflows.list(limit)]}


def detail(
    record: workflow_runs.WorkflowRecord, steps: dict[str, workflow_runs.StepStatus]
) -> dict:
    return {
        **record.to_json(),
        "steps": {
            name: {
                "state": st.state,
                "runs": [r.to_json() for r in st.runs],
                "withheld": st.withheld,
            }
            for name, st in steps.items()
        },
        "edges": views.edges(record.workflow_def),
    }


@router.get("/workflow-runs/{workflow_id}", summary="A workflow run with its steps and edges")
def show_workflow_run(workflow_id: IdPath, c: ClientDep) -> dict[str, Any]:
    record = c.workflows.get(workflow_id)
    return detail(record, c.workflows.steps(workflow_id))


@router.post("/workflow-runs/{workflow_id}/cancel", summary="Cancel it and its pending steps")
def cancel_workflow_run(workflow_id: IdPath, c: ClientDep) -> dict[str, Any]:
    record = c.workflows.cancel(workflow_id)
    return detail(record, c.workflows.steps(workflow_id))


def for_each_inputs(wf: workflows.Workflow, input: dict[str, Any]) -> None:
    """Raise ``InvalidInput`` if a first step iterates (``for_each: $input.x``) over a part of
    the input that is not a list: caught now, before the workflow run is recorded."""
    for step in wf.steps:
        ref = step.for_each
        if step.depends_on or not isinstance(ref, str) or not ref.startswith("$input."):
            continue
        value: Any = input
        path = ref.split(".")[1:]
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None and not isinstance(value, list):
            problem = {
                "loc": path,
                "msg": f"must be a list: step {step.name!r} runs once per item ({ref})",
                "type": "list_type",
            }
            raise errors.InvalidInput(wf.name, [problem])
