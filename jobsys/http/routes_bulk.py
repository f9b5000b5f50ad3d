"""Bulk actions on the runs a filter matches: ``POST /api/v1/runs/bulk/{cancel,retry,delete}``
with ``{"where": {...}, "dry_run": bool}`` (``service/bulk.py``). Registered before the routes
of single runs, whose ``/runs/{run_id}/cancel`` would otherwise take ``bulk`` for a run id."""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Body

from jobsys.http.auth import ClientDep
from jobsys.service import bulk
from jobsys.service.client import Client

router = APIRouter(prefix="/api/v1", tags=["runs"])

WhereValue = str | int | bool | list[str]


class BulkBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    where: dict[str, WhereValue] = pydantic.Field(
        description="Conditions, all of which must hold: "
        + "; ".join(f"`{k}`: {v}" for k, v in bulk.WHERE_KEYS.items())
        + '. At least one, or {"all": true}.',
        max_length=20,
    )
    dry_run: bool = pydantic.Field(False, description="Count the runs; change nothing.")


def _act(c: Client, action: bulk.Action, body: BulkBody) -> dict[str, Any]:
    return c.bulk.act(action, body.where, body.dry_run).to_json()


@router.post(
    "/runs/bulk/cancel",
    summary="Cancel the runs a filter matches (a waiting run never starts, a running one "
    "is stopped); dry_run counts them",
)
def bulk_cancel(c: ClientDep, body: Annotated[BulkBody, Body()]) -> dict[str, Any]:
    return _act(c, "cancel", body)


@router.post(
    "/runs/bulk/retry",
    summary="Retry the failed and cancelled runs a filter matches; dry_run counts them",
)
def bulk_retry(c: ClientDep, body: Annotated[BulkBody, Body()]) -> dict[str, Any]:
    return _act(c, "retry", body)


@router.post(
    "/runs/bulk/delete",
    summary="Delete the ended runs a filter matches, with their logs; dry_run counts them",
)
def bulk_delete(c: ClientDep, body: Annotated[BulkBody, Body()]) -> dict[str, Any]:
    return _act(c, "delete", body)
