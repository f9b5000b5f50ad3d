"""Queues and pauses: ``GET /queues``; pause and resume a queue, everything, or a job (over
``Client.pauses``, as the CLI and the MCP tools)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from jobsys.http.auth import ClientDep

router = APIRouter(prefix="/api/v1", tags=["queues"])

QueuePath = Annotated[str, Path(min_length=1, max_length=200, description="A queue's name.")]
JobPath = Annotated[str, Path(min_length=1, max_length=200, description="A job's name.")]


@router.get("/queues", summary="The queues: paused or not, by whom, and their runs waiting")
def list_queues(c: ClientDep) -> dict[str, Any]:
    return {
        "queues": [q.to_json() for q in c.pauses.queues()],
        "pauses": [p.to_json() for p in c.pauses.list_pauses()],
    }


@router.post("/queues/pause", summary="Pause everything (every queue)")
def pause_all(c: ClientDep) -> dict[str, Any]:
    return c.pauses.pause_all().to_json()


@router.post("/queues/resume", summary="Resume everything: paused runs queued by priority")
def resume_all(c: ClientDep) -> dict[str, Any]:
    return c.pauses.resume_all().to_json()


@router.post("/queues/{name}/pause", summary="Pause a queue: its runs stay pending")
def pause_queue(name: QueuePath, c: ClientDep) -> dict[str, Any]:
    return c.pauses.pause_queue(name).to_json()


@router.post("/queues/{name}/resume", summary="Resume a queue: its runs queued by priority")
def resume_queue(name: QueuePath, c: ClientDep) -> dict[str, Any]:
    return c.pauses.resume_queue(name).to_json()


@router.post("/jobs/{name}/pause", tags=["jobs"], summary="Pause a job: its runs stay pending")
def pause_job(name: JobPath, c: ClientDep) -> dict[str, Any]:
    return c.pauses.pause_job(name).to_json()


@router.post("/jobs/{name}/resume", tags=["jobs"], summary="Resume a job: runs queued by priority")
def resume_job(name: JobPath, c: ClientDep) -> dict[str, Any]:
    return c.pauses.resume_job(name).to_json()
