"""Schedules: create, list, show, change, pause, resume, trigger, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from jobsys.base import errors
from jobsys.declare import cadence, previews
from jobsys.http.auth import ClientDep
from jobsys.http.errors import ApiError
from jobsys.http.models import ScheduleCreateBody, SchedulePreviewBody, ScheduleUpdateBody
from jobsys.http.routes_runs import parse_instant
from jobsys.store import runs

router = APIRouter(prefix="/api/v1", tags=["schedules"])

IdPath = Annotated[str, Path(min_length=1, max_length=64, description="A schedule id.")]


def _definition(changes: dict[str, Any]) -> cadence.ScheduleSpec:
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
    name: Annotated[
        str | None, Query(max_length=200, description="Whose name holds this (any case).")
    ] = None,
    next_after: Annotated[
        str | None,
        Query(max_length=64, description="Next fire at or after: ISO time, or 30m/2h from now."),
    ] = None,
    next_before: Annotated[
        str | None,
        Query(max_length=64, description="Next fire before: ISO time, or 30m/2h/1d from now."),
    ] = None,
    archived: Annotated[
        bool, Query(description="Only archived schedules (default lists leave them out).")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    found = c.schedules.list(
        state=state or None,
        job=job or None,
        limit=limit,
        name=name or None,
        next_after=parse_instant(next_after, "next_after", ahead=True),
        next_before=parse_instant(next_before, "next_before", ahead=True),
        archived=archived,
    )
    return {"schedules": [s.to_json() for s in found]}


@router.post("/schedules", status_code=201, summary="Create a schedule of a job or workflow")
def create_schedule(body: ScheduleCreateBody, c: ClientDep) -> JSONResponse:
    changes = body.changes()
    for field in ("job", "name", "description", "paused"):
        changes.pop(field, None)
    definition = _definition(changes)
    record = c.schedules.create(
        body.job, definition, name=body.name, description=body.description, paused=body.paused
    )
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
def trigger_schedule(
    schedule_id: IdPath,
    c: ClientDep,
    version: Annotated[
        int | None,
        Query(ge=1, le=2**31, description="Fire this version (its input and metadata)."),
    ] = None,
) -> dict[str, Any]:
    made = c.schedules.trigger(schedule_id, version=version)
    key = "workflow_run_id" if made.startswith("wf_") else "run_id"
    return {"schedule_id": schedule_id, key: made, "run_id": made, "version": version}


def _fires(fires: list[previews.Fire], timezone: str) -> dict[str, Any]:
    return {"timezone": timezone, "fires": [f.to_json() for f in fires]}


@router.post(
    "/schedules/preview",
    summary="The next fires of a cadence not saved, with daylight-saving notes",
)
def preview_cadence(body: SchedulePreviewBody, c: ClientDep) -> dict[str, Any]:
    when = body.cadence()
    shown = body.timezone or (when.timezone if when.kind is cadence.CadenceKind.CRON else "UTC")
    return _fires(previews.preview(when, body.count, runs.utcnow(), shown), shown)


@router.get(
    "/schedules/{schedule_id}/preview",
    summary="A schedule's next fires, with daylight-saving notes",
)
def preview_schedule(
    schedule_id: IdPath,
    c: ClientDep,
    count: Annotated[int, Query(ge=1, le=previews.MAX_PREVIEW)] = 10,
    timezone: Annotated[
        str | None, Query(max_length=100, description="Show wall-clock times in this zone.")
    ] = None,
) -> dict[str, Any]:
    record = c.schedules.get(schedule_id)
    shown = timezone or str(record.cadence.get("timezone") or "UTC")
    fires = c.schedules.preview(schedule_id, count, shown)
    return {"schedule_id": schedule_id, **_fires(fires, shown)}
