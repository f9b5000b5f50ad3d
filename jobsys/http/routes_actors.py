"""Runs driven from outside (``service/actor_client.py``): an actor takes a run of an external
job with its API token, then reports on it with the run token the take answered
(``Authorization: Bearer jsr_...``): heartbeat, progress, log lines, notes, the result (checked
against the job's output model: 422 naming the field, the run still running) or a failure."""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials

from jobsys.base import errors
from jobsys.declare import permissions
from jobsys.http.auth import ClientDep, bearer, header_token, service
from jobsys.http.models import Body as StrictBody
from jobsys.service import actor_client
from jobsys.store import actors

router = APIRouter(prefix="/api/v1", tags=["actors"])

RunIdPath = Annotated[str, Path(min_length=1, max_length=64, description="A run id.")]
Text = Annotated[str, pydantic.Field(max_length=actor_client.MAX_TEXT)]


class ProgressBody(StrictBody):
    pct: Annotated[float | None, pydantic.Field(ge=0, le=100, allow_inf_nan=False)] = None
    message: Text | None = None


class LogBody(StrictBody):
    message: Text


class NoteBody(StrictBody):
    text: Text


class CompleteBody(StrictBody):
    output: Any


class FailBody(StrictBody):
    error: Text
    retry: bool = False


def run_token(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> tuple[actor_client.ActorClient, str]:
    """The run token of the request, and an actor client acting as the actor it was given
    to; ``Unauthenticated`` (401) without one (an API token is not a run token)."""
    token = header_token(request)
    if not token or not token.startswith(actors.PREFIX):
        raise errors.Unauthenticated(
            "a run token is required: send `Authorization: Bearer <run_token>`, the one the "
            "take of the run answered (jsr_...)"
        )
    svc = service(request)
    _, actor = actors.ActorStore(svc.store.engine).holder(token)
    principal = permissions.Principal.model_validate(actor)
    request.state.principal = principal
    return svc.client(principal).actors, token


RunToken = Annotated[tuple[actor_client.ActorClient, str], Depends(run_token)]


@router.post("/jobs/{name}/take", summary="Take the next run of an external job that waits")
def take_job(
    name: Annotated[str, Path(min_length=1, max_length=200)], c: ClientDep
) -> dict[str, Any]:
    return c.actors.take_job(name).to_json()


@router.post("/runs/{run_id}/take", tags=["runs"], summary="Take a run of an external job")
def take_run(run_id: RunIdPath, c: ClientDep) -> dict[str, Any]:
    return c.actors.take_run(run_id).to_json()


@router.post("/runs/{run_id}/heartbeat", summary="Renew the lease (run token)")
def heartbeat(run_id: RunIdPath, held: RunToken) -> dict[str, Any]:
    a, token = held
    return a.report(run_id, token)


@router.post("/runs/{run_id}/progress", summary="Report progress (run token)")
def progress(run_id: RunIdPath, body: ProgressBody, held: RunToken) -> dict[str, Any]:
    a, token = held
    return a.report(run_id, token, pct=body.pct, message=body.message)


@router.post("/runs/{run_id}/log", summary="Add a log line (run token)")
def log(run_id: RunIdPath, body: LogBody, held: RunToken) -> dict[str, Any]:
    a, token = held
    return a.report(run_id, token, log=body.message)


@router.post("/runs/{run_id}/notes", summary="Add a note for the next attempt (run token)")
def notes(run_id: RunIdPath, body: NoteBody, held: RunToken) -> dict[str, Any]:
    a, token = held
    return a.report(run_id, token, note=body.text)


@router.post("/runs/{run_id}/complete", summary="Complete with the output (run token)")
def complete(
    run_id: RunIdPath, body: Annotated[CompleteBody, Body()], held: RunToken
) -> dict[str, Any]:
    a, token = held
    return a.complete(run_id, token, body.output).to_json()


@router.post("/runs/{run_id}/fail", summary="Fail, or ask for another attempt (run token)")
def fail(run_id: RunIdPath, body: FailBody, held: RunToken) -> dict[str, Any]:
    a, token = held
    return a.fail(run_id, token, body.error, body.retry).to_json()
