"""``Client.subscriptions``: webhook subscriptions to run events (create, list, show, test,
delete) and their delivery log.

A subscription belongs to the tenant of the principal that makes it and sees that tenant's
runs only. Who may: a subscription to a job needs the job's ``read`` rule (a notification
tells what happened to its runs); to a schedule, reading the schedule; to a workflow, reading
each of its steps' jobs; to the whole tenant, an admin role. The same rule decides who sees a
subscription (listed, shown, tested, its deliveries read); deleting one takes its creator or
an admin of the tenant. The URL's host must be on ``JOBSYS_WEBHOOK_HOSTS`` (checked here and
again before each delivery). The signing secret is made here and returned once; it is kept
sealed with the installation's key and never shown again. Every create and delete, and every
refusal, is written to the audit log.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jobsys.base import errors, webhooks
from jobsys.declare import http_jobs
from jobsys.store import subscriptions
from jobsys.store.subscriptions import EVENTS, Delivery, Subscription

if TYPE_CHECKING:
    from jobsys.service.client import Client

__all__ = ["EVENTS", "Created", "SubscriptionClient"]


@dataclasses.dataclass(frozen=True)
class Created:
    """A new subscription and its signing secret (shown this once)."""

    subscription: Subscription
    secret: str

    def to_json(self) -> dict[str, Any]:
        return {**self.subscription.to_json(), "secret": self.secret}


class SubscriptionClient:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._store = client.store.subscriptions

    @property
    def _tenant(self) -> str:
        return self._client.principal.tenant

    def create(
        self,
        url: str,
        events: Sequence[str],
        job: str | None = None,
        schedule: str | None = None,
        workflow: str | None = None,
    ) -> Created:
        """Subscribe ``url`` to ``events`` of the runs of one job, schedule or workflow, or
        of the whole tenant (none of them given: an admin's)."""
        chosen = [(k, v) for k, v in (("job", job), ("schedule", schedule), ("workflow", workflow))]
        given = [(k, v) for k, v in chosen if v]
        if len(given) > 1:
            raise _bad("scope", "give one of job, schedule or workflow (or none: the tenant)")
        scope, target = given[0] if given else ("tenant", None)
        checked = _events(events)
        try:
            http_jobs.check_url("subscription", url, self._client.settings.webhook_hosts)
        except errors.InvalidInput as exc:
            message = exc.errors[0]["msg"].replace("JOBSYS_HTTP_JOB_HOSTS", "JOBSYS_WEBHOOK_HOSTS")
            raise _bad("url", message) from None
        self._may_see(scope, target, "create subscription")
        secret = webhooks.new_secret()
        sealed = self._client.sealer.seal({"secret": secret})
        assert sealed is not None
        who = self._client.principal
        sub = self._store.create(self._tenant, scope, target, url, checked, sealed, who.id)
        self._client.audit.record(
            who, "create subscription", sub.id, "allowed", f"{scope} {target or ''} -> {url}"
        )
        return Created(sub, secret)

    def list(self) -> builtins.list[Subscription]:
        """The subscriptions of this principal's tenant that it may see."""
        return [s for s in self._store.list(self._tenant) if self._sees(s)]

    def get(self, subscription_id: str) -> Subscription:
        """Another tenant's subscription is not found; one this principal may not see is
        denied."""
        sub = self._store.get(subscription_id, self._tenant)
        self._may_see(sub.scope, sub.target, "read subscription", sub.id)
        return sub

    def delete(self, subscription_id: str) -> Subscription:
        """Delete a subscription (its creator or an admin); its deliveries not sent are
        dropped."""
        sub = self.get(subscription_id)
        who = self._client.principal
        if sub.created_by != who.id and not self._client.policy.is_admin(who):
            self._client.audit.record(who, "delete subscription", sub.id, "denied", "not owner")
            raise errors.PermissionDenied(
                who.id,
                "delete",
                f"subscription {sub.id!r}",
                f"it was made by {sub.created_by!r}; only they or an admin of the tenant may",
            )
        self._store.delete(sub.id, self._tenant)
        self._client.audit.record(who, "delete subscription", sub.id, "allowed")
        return sub

    def test(self, subscription_id: str) -> Delivery:
        """Queue a ``test`` delivery to the subscription's URL (sent by a worker's notifier
        like any other; its outcome shows in ``deliveries``)."""
        return self._store.add_test(self.get(subscription_id))

    def deliveries(
        self, subscription_id: str, state: str | None = None, limit: int = 100
    ) -> builtins.list[Delivery]:
        """The subscription's deliveries, newest first, each with the log of its attempts."""
        if state and state not in (subscriptions.PENDING, subscriptions.DELIVERED, "failed"):
            raise _bad("state", "must be one of pending, delivered, failed")
        return self._store.deliveries(self.get(subscription_id).id, state, limit)

    # --- who may -----------------------------------------------------------------------------

    def _sees(self, sub: Subscription) -> bool:
        try:
            self._may_see(sub.scope, sub.target, None)
        except (errors.PermissionDenied, errors.UnknownJob, errors.ScheduleNotFound):
            return False
        return True

    def _may_see(self, scope: str, target: str | None, action: str | None, sid: str = "") -> None:
        """Raise unless this principal may see the runs of ``scope`` ``target`` (recording a
        refusal in the audit log when ``action`` names what was asked)."""
        c = self._client
        who = c.principal
        if scope == "tenant":
            if not c.policy.is_admin(who):
                if action:
                    c.audit.record(who, action, sid or "*", "denied", "needs an admin role")
                raise errors.PermissionDenied(
                    who.id, "subscribe to", "every run of the tenant", "needs an admin role"
                )
            return
        assert target is not None
        for job in self._jobs_of(scope, target):
            if action:
                c.allow("read", job, target=sid or target)  # a refusal is audited
            elif not c.policy.allows(who, "read", c._spec(job)):
                raise errors.PermissionDenied(who.id, "read", job)

    def _jobs_of(self, scope: str, target: str) -> builtins.list[str]:
        """The jobs whose runs a subscription to ``scope`` ``target`` notifies of."""
        registry = self._client.registry
        if scope == "job":
            return [registry.get(target).name]  # UnknownJob, naming the close ones
        if scope == "schedule":
            return [self._client.store.schedules.get(target, self._tenant).job]
        return [step.job for step in registry.workflow(target).steps]


def _events(events: Sequence[str]) -> builtins.list[str]:
    if not events:
        raise _bad("events", f"give at least one event: {', '.join(EVENTS)}")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise _bad("events", f"unknown event {unknown[0]!r}; one of {', '.join(EVENTS)}")
    return builtins.list(dict.fromkeys(events))


def _bad(field: str, message: str) -> errors.InvalidInput:
    exc = errors.InvalidInput(
        "(subscription)", [{"loc": [field], "type": "value_error", "msg": message}], "subscription"
    )
    exc.args = (f"invalid subscription: {field}: {message}",)
    return exc
