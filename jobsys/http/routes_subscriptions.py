"""Webhook subscriptions: create, list, show, test and delete, and each one's deliveries (over
``Client.subscriptions``, as the CLI and the MCP tools)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from jobsys.http.auth import ClientDep
from jobsys.http.models import SubscriptionBody

router = APIRouter(prefix="/api/v1", tags=["subscriptions"])

IdPath = Annotated[str, Path(min_length=1, max_length=64, description="A subscription id.")]


@router.post(
    "/subscriptions",
    status_code=201,
    summary="Subscribe a URL to run events (its signing secret is in this answer only)",
)
def create_subscription(body: SubscriptionBody, c: ClientDep) -> JSONResponse:
    created = c.subscriptions.create(
        body.url, body.events, job=body.job, schedule=body.schedule, workflow=body.workflow
    )
    return JSONResponse(created.to_json(), status_code=201)


@router.get("/subscriptions", summary="The subscriptions of the tenant this token may see")
def list_subscriptions(c: ClientDep) -> dict[str, Any]:
    return {"subscriptions": [s.to_json() for s in c.subscriptions.list()]}


@router.get("/subscriptions/{subscription_id}", summary="One subscription")
def get_subscription(subscription_id: IdPath, c: ClientDep) -> dict[str, Any]:
    return c.subscriptions.get(subscription_id).to_json()


@router.delete("/subscriptions/{subscription_id}", summary="Delete a subscription")
def delete_subscription(subscription_id: IdPath, c: ClientDep) -> dict[str, Any]:
    return c.subscriptions.delete(subscription_id).to_json()


@router.post(
    "/subscriptions/{subscription_id}/test",
    status_code=202,
    summary="Queue a test delivery to the subscription's URL",
)
def test_subscription(subscription_id: IdPath, c: ClientDep) -> JSONResponse:
    return JSONResponse(c.subscriptions.test(subscription_id).to_json(), status_code=202)


@router.get(
    "/subscriptions/{subscription_id}/deliveries",
    summary="The subscription's deliveries, newest first, each with its attempts",
)
def list_deliveries(
    subscription_id: IdPath,
    c: ClientDep,
    state: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    found = c.subscriptions.deliveries(subscription_id, state, limit)
    return {"deliveries": [d.to_json() for d in found]}
