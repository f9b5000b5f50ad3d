"""The MCP tools of webhook subscriptions: ``subscription_create``, ``subscription_list``,
``subscription_test``, ``subscription_delete`` and ``subscription_deliveries`` (over
``Client.subscriptions``, as the CLI and the HTTP API)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import pydantic

from jobsys.mcp.args import Args, Id, Name
from jobsys.service.client import Client
from jobsys.store.subscriptions import EVENTS

Event = Literal["completed", "failed", "cancelled", "retrying", "progress"]


class CreateArgs(Args):
    url: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=2000)] = pydantic.Field(
        description="Where the notifications are POSTed (its host allowed)."
    )
    events: list[Event] = pydantic.Field(
        min_length=1, max_length=len(EVENTS), description="The run events to send."
    )
    job: Name | None = pydantic.Field(None, description="The runs of this job.")
    schedule: Id | None = pydantic.Field(None, description="The runs of this schedule (sch_...).")
    workflow: Name | None = pydantic.Field(None, description="The step runs of this workflow.")


class SubscriptionArgs(Args):
    id: Id = pydantic.Field(description="A subscription id (sub_..., see subscription_list).")


class DeliveriesArgs(SubscriptionArgs):
    state: Literal["pending", "delivered", "failed"] | None = None
    limit: Annotated[int, pydantic.Field(ge=1, le=500)] = 50


def subscription_create(c: Client, a: CreateArgs) -> dict[str, Any]:
    return c.subscriptions.create(
        a.url, list(a.events), job=a.job, schedule=a.schedule, workflow=a.workflow
    ).to_json()


def subscription_list(c: Client, _: Args) -> dict[str, Any]:
    return {"subscriptions": [s.to_json() for s in c.subscriptions.list()]}


def subscription_test(c: Client, a: SubscriptionArgs) -> dict[str, Any]:
    return c.subscriptions.test(a.id).to_json()


def subscription_delete(c: Client, a: SubscriptionArgs) -> dict[str, Any]:
    return {"deleted": c.subscriptions.delete(a.id).to_json()}


def subscription_deliveries(c: Client, a: DeliveriesArgs) -> dict[str, Any]:
    found = c.subscriptions.deliveries(a.id, a.state, a.limit)
    return {"deliveries": [d.to_json() for d in found]}


Handler = Callable[[Client, Any], dict[str, Any]]
TOOLS: dict[str, tuple[str, type[Args] | None, Handler, bool]] = {
    "subscription_create": (
        "Subscribe a URL to run events (completed, failed, cancelled, retrying, progress) of "
        "one `job`, `schedule` or `workflow`, or of every run of the tenant (none: admins "
        "only). Answers the subscription and its signing `secret`, shown this once. The URL's "
        "host must be on JOBSYS_WEBHOOK_HOSTS.",
        CreateArgs,
        subscription_create,
        False,
    ),
    "subscription_list": (
        "List the webhook subscriptions of the tenant you may see (secrets are never shown).",
        None,
        subscription_list,
        True,
    ),
    "subscription_test": (
        "Queue a `test` delivery to a subscription's URL; subscription_deliveries shows how "
        "it went.",
        SubscriptionArgs,
        subscription_test,
        False,
    ),
    "subscription_delete": (
        "Delete a subscription (its creator or an admin); deliveries not sent are dropped.",
        SubscriptionArgs,
        subscription_delete,
        False,
    ),
    "subscription_deliveries": (
        "A subscription's deliveries, newest first: event, run, state (pending, delivered, "
        "failed), attempts and the log of each (status or error).",
        DeliveriesArgs,
        subscription_deliveries,
        True,
    ),
}
