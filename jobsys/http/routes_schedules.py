"""Schedules: create, list, show, change, pause, resume, trigger, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from jobsys import cadence, errors
from jobsys.http.auth import ClientDep
from jobsys.http.errors import ApiError
from jobsys.http.models import ScheduleCreateBody, ScheduleUpdateBody

router = APIRouter(prefix="/api/v1", tags=["schedules"])

IdPath = Annotated[str, Path(min_length=1, max_length=64, description="A schedule id.")]


def _definition(changes: dict[str, Any]) -> cadence.Definition:
    kind = changes.pop("kind")
    try:
        return cadence.schedule(kind, **changes)
    except TypeError as exc:  # a field this kind of schedule does not take
        raise errors.InvalidSchedule("kind", str(exc)) from None


@router.get("/schedules", summary="Schedules, newest first")
def list_schedules(
    c: ClientDep,
    state: Annotated[str | None, Query(max_length=20)] = None,
    job: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    found = c.schedules.list(state=state or None, job=job or None, limit=limit)
    return {"schedules": [s.to_json() for s in found]}


@router.post("/schedules", status_code=201, summary="Create a schedule of a job or workflow")
def create_schedule(body: ScheduleCreateBody, c: ClientDep) -> JSONResponse:
    changes = body.changes()
    changes.pop("job", None)
    changes.pop("name", None)
    definition = _definition(changes)
    record = c.schedules.create(body.job, definition, name=body.name)
    return JSONResponse(record.to_json(), status_code=201)


@router.get("/schedules/{schedule_id}", summary="One schedule, with its versions")
def show_schedule(schedule_id: IdPath, c: ClientDep) -> dict[str, Any]:
    record = c.schedules.get(schedule_id)
    versions = [
        {**v, "changed_at": v["changed_at"].isoformat()} if "changed_at" in v else v
        for v in c.schedules.versions(schedule_id)
    ]
    return {**record.to_json(), "versions": versions}


@router.patch("/schedules/{schedule_id}", summary="Change a schedule (a new version)")
def update_schedule(schedule_id: IdPath, body: ScheduleUpdateBody, c: ClientDep) -> dict[str, Any]:
    changes = body.changes()
    if not changes:
        raise ApiError(
            422,
            "InvalidRequest",
            "nothing to change: give at least one field (every, cron, at, input, max_runs ...)",
        )
    try:
        record = c.schedules.update(schedule_id, **changes)
    except TypeError as exc:
        raise errors.InvalidSchedule("kind", str(exc)) from None
    return record.to_json()


@router.delete("/schedules/{schedule_id}", summary="Delete: it never fires again")
def delete_schedule(schedule_id: IdPath, c: ClientDep) -> dict[str, Any]:
    return c.schedules.delete(schedule_id).to_json()


@router.post("/schedules/{schedule_id}/pause", summary="Stop firing until resumed")
def pause_schedule(schedule_id: IdPath, c: ClientDep) -> dict[str, Any]:
    return c.schedules.pause(schedule_id).to_json()


@router.post("/schedules/{schedule_id}/resume", summary="Fire again from now on")
def resume_schedule(schedule_id: IdPath, c: ClientDep) -> dict[str, Any]:
    return c.schedules.resume(schedule_id).to_json()


@router.post(
    "/schedules/{schedule_id}/trigger",
    status_code=202,
    summary="Fire once now, without disturbing the cadence",
)
def trigger_schedule(schedule_id: IdPath, c: ClientDep) -> dict[str, Any]:
    made = c.schedules.trigger(schedule_id)
    key = "workflow_run_id" if made.startswith("wf_") else "run_id"
    return {"schedule_id": schedule_id, key: made, "run_id": made}
