"""``jobsys subscriptions create|list|show|test|delete|deliveries``: webhook subscriptions to
run events (over ``Client.subscriptions``, as the HTTP API and the MCP tools)."""

from __future__ import annotations

import click
from rich.table import Table

from jobsys.cli.base import emit_json, handle_errors, main, make_client, out
from jobsys.store.subscriptions import EVENTS, Subscription


@main.group("subscriptions")
def subscriptions_group() -> None:
    """Webhook subscriptions: run events POSTed, signed, to a URL."""


@subscriptions_group.command("create")
@click.option("--url", required=True, help="Where the notifications are POSTed.")
@click.option(
    "--event",
    "events",
    multiple=True,
    required=True,
    help=f"An event to send (repeat for more): {', '.join(EVENTS)}.",
)
@click.option("--job", help="The runs of this job.")
@click.option("--schedule", help="The runs of this schedule (its id).")
@click.option("--workflow", help="The step runs of this workflow.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def subscriptions_create(
    url: str,
    events: tuple[str, ...],
    job: str | None,
    schedule: str | None,
    workflow: str | None,
    as_json: bool,
) -> None:
    """Subscribe URL to events of the runs of a job, a schedule or a workflow, or, with none
    of them, of every run of the tenant (an admin's). The signing secret is printed this once."""
    created = make_client().subscriptions.create(
        url, list(events), job=job, schedule=schedule, workflow=workflow
    )
    if as_json:
        emit_json(created.to_json())
        return
    _describe(created.subscription)
    out.print(f"secret  {created.secret}", markup=False, highlight=False)
    out.print(
        '(shown this once: receivers check each Jobsys-Signature with it, README "Notifications")',
        markup=False,
    )


@subscriptions_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def subscriptions_list(as_json: bool) -> None:
    """The subscriptions of your tenant you may see."""
    found = make_client().subscriptions.list()
    if as_json:
        emit_json([s.to_json() for s in found])
        return
    table = Table("id", "runs of", "events", "url", "by")
    for s in found:
        table.add_row(s.id, _of(s), ",".join(s.events), s.url, s.created_by)
    out.print(table)


@subscriptions_group.command("show")
@click.argument("subscription_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def subscriptions_show(subscription_id: str, as_json: bool) -> None:
    """One subscription (its secret is never shown)."""
    sub = make_client().subscriptions.get(subscription_id)
    if as_json:
        emit_json(sub.to_json())
        return
    _describe(sub)


@subscriptions_group.command("test")
@click.argument("subscription_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def subscriptions_test(subscription_id: str, as_json: bool) -> None:
    """Queue a `test` delivery to the subscription's URL; `deliveries` shows how it went."""
    delivery = make_client().subscriptions.test(subscription_id)
    if as_json:
        emit_json(delivery.to_json())
        return
    out.print(f"queued test delivery {delivery.id}", markup=False, highlight=False)


@subscriptions_group.command("delete")
@click.argument("subscription_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def subscriptions_delete(subscription_id: str, as_json: bool) -> None:
    """Delete a subscription (its creator or an admin); deliveries not sent are dropped."""
    sub = make_client().subscriptions.delete(subscription_id)
    if as_json:
        emit_json(sub.to_json())
        return
    out.print(f"deleted subscription {sub.id}", markup=False, highlight=False)


@subscriptions_group.command("deliveries")
@click.argument("subscription_id")
@click.option("--state", type=click.Choice(["pending", "delivered", "failed"]))
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def subscriptions_deliveries(
    subscription_id: str, state: str | None, limit: int, as_json: bool
) -> None:
    """The subscription's deliveries, newest first: state, attempts, last answer or error."""
    found = make_client().subscriptions.deliveries(subscription_id, state, limit)
    if as_json:
        emit_json([d.to_json() for d in found])
        return
    table = Table("delivery", "event", "run", "state", "attempts", "last", "next attempt")
    for d in found:
        data = d.to_json()
        last = d.last_error or (str(d.last_status) if d.last_status else "")
        table.add_row(
            d.id,
            d.event,
            d.run_id or "",
            d.state,
            str(d.attempts),
            last,
            data["next_attempt_at"] or "",
        )
    out.print(table)


def _of(s: Subscription) -> str:
    return "the tenant" if s.scope == "tenant" else f"{s.scope} {s.target}"


def _describe(s: Subscription) -> None:
    for key, value in (
        ("id", s.id),
        ("runs of", _of(s)),
        ("events", ", ".join(s.events)),
        ("url", s.url),
        ("tenant", s.tenant),
        ("by", s.created_by),
    ):
        out.print(f"{key:<8}{value}", markup=False, highlight=False)
