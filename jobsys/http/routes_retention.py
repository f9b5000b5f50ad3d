"""Retention and archiving (``service/retention.py``): ``POST /api/v1/runs/prune`` with
``{"older_than": "30d", "job": ..., "dry_run": bool}``, and ``POST
/api/v1/runs/{id}/archive|unarchive``, ``/api/v1/schedules/{id}/archive|unarchive``.
Registered before the routes of single runs (``/runs/{run_id}`` would take ``prune``)."""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Body, Path

from jobsys.base import timeparse
from jobsys.http.auth import ClientDep

router = APIRouter(prefix="/api/v1", tags=["runs"])

IdPath = Annotated[str, Path(min_length=1, max_length=64, description="A run or schedule id.")]


class PruneBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    older_than: timeparse.DurationSeconds | None = pydantic.Field(
        None,
        description="Every ended run older than this (`30d`, `12h`, or seconds) instead of the "
        "policies' ages; each job's newest JOBSYS_KEEP_LAST ended runs still stay.",
    )
    job: str | None = pydantic.Field(None, max_length=200, description="Only this job's runs.")
    dry_run: bool = pydantic.Field(False, description="Count the runs; delete nothing.")

    @pydantic.field_validator("older_than")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise ValueError("must be a positive duration like 30d")
        return value


@router.post(
    "/runs/prune",
    summary="Delete ended runs past their retention now, with their logs and history (admin); "
    "dry_run counts them",
)
def prune_runs(c: ClientDep, body: Annotated[PruneBody, Body()]) -> dict[str, Any]:
    return c.retention.prune(body.older_than, body.job, body.dry_run).to_json()


@router.post("/runs/{run_id}/archive", summary="Archive a run: out of default lists, kept")
def archive_run(run_id: IdPath, c: ClientDep) -> dict[str, Any]:
    c.retention.archive([run_id])
    return c.status(run_id).to_json()


@router.post("/runs/{run_id}/unarchive", summary="Bring an archived run back into lists")
def unarchive_run(run_id: IdPath, c: ClientDep) -> dict[str, Any]:
    c.retention.unarchive([run_id])
    return c.status(run_id).to_json()


@router.post(
    "/schedules/{schedule_id}/archive",
    summary="Archive a schedule: paused, out of default lists, kept",
)
def archive_schedule(schedule_id: IdPath, c: ClientDep) -> dict[str, Any]:
    c.retention.archive_schedules([schedule_id])
    return c.schedules.get(schedule_id).to_json()


@router.post(
    "/schedules/{schedule_id}/unarchive",
    summary="Bring an archived schedule back into lists (still paused: resume it)",
)
def unarchive_schedule(schedule_id: IdPath, c: ClientDep) -> dict[str, Any]:
    c.retention.unarchive_schedules([schedule_id])
    return c.schedules.get(schedule_id).to_json()
