"""``Client.pauses``: pause and resume a queue, a job, or everything, and list the queues.

Paused work stays recorded and pending, nothing is dropped, and running runs finish: a pause
only keeps runs from starting (``store/pauses.py``). Resuming publishes the runs it held, in
priority order (``engine/pausing.py``).

Who may: pausing a queue or everything takes an admin role; pausing a job takes its
``pause`` rule (admins only unless the job or the policy says otherwise). An admin's pause
holds its own tenant's runs; a superadmin's (and the local admin's) holds every tenant's. An
admin resumes its tenant's pauses only; a superadmin resumes every tenant's. Every pause and
resume, allowed or denied, is written to the audit log.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from jobsys.base import errors
from jobsys.store import pauses

if TYPE_CHECKING:
    from jobsys.service.client import Client

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$")
"""What a queue's or a job's name to pause looks like."""


@dataclasses.dataclass(frozen=True)
class QueueView:
    """A queue: whether (and by which pauses) it is held, and its runs waiting."""

    name: str
    paused: bool
    pauses: list[pauses.Pause]
    """The pauses that hold it: its own, and a pause of everything."""
    waiting: int
    """Runs waiting in it (pending or retrying), of this principal's tenant."""
    parked: int
    """Of those, runs a pause holds (started none since)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "paused": self.paused,
            "pauses": [p.to_json() for p in self.pauses],
            "waiting": self.waiting,
            "paused_runs": self.parked,
        }


@dataclasses.dataclass(frozen=True)
class Resumed:
    """What a resume did: the pauses it deleted, the runs it published, and the pauses that
    still hold the same work (another tenant's admin cannot lift a superadmin's)."""

    resumed: list[pauses.Pause]
    published: int
    still_paused: list[pauses.Pause]

    def to_json(self) -> dict[str, Any]:
        return {
            "resumed": [p.to_json() for p in self.resumed],
            "published": self.published,
            "still_paused": [p.to_json() for p in self.still_paused],
        }


class PauseClient:
    def __init__(self, client: Client) -> None:
        self._client = client

    # --- reading ---------------------------------------------------------------------------

    def list_pauses(self) -> list[pauses.Pause]:
        """The pauses that hold this principal's tenant's runs (every pause for a
        superadmin)."""
        return self._store.find(self._seen_tenant)

    def queues(self) -> list[QueueView]:
        """Each queue the jobs use, with any queue paused or holding waiting runs: paused or
        not, by whom, and its runs waiting."""
        found = self.list_pauses()
        counts = self._store.waiting_by_queue(self._seen_tenant)
        names = set(self._client.registry.queues(self._seen_tenant)) | set(counts)
        names |= {p.name for p in found if p.scope == "queue"}
        views = []
        for name in sorted(names):
            holding = [p for p in found if p.scope == "all" or (p.scope, p.name) == ("queue", name)]
            waiting, parked = counts.get(name, (0, 0))
            views.append(QueueView(name, bool(holding), holding, waiting, parked))
        return views

    def job(self, name: str) -> list[pauses.Pause]:
        """The pauses that hold job ``name``'s runs (its own, its queue's, everything's)."""
        spec = self._client.job_spec(name)
        return [
            p
            for p in self.list_pauses()
            if p.scope == "all" or (p.scope, p.name) in (("queue", spec.queue), ("job", spec.name))
        ]

    def count_parked(self) -> int:
        """Runs a pause holds now (``jobsys_runs_paused``), of this principal's tenant."""
        return self._store.count_parked(self._seen_tenant)

    # --- steering --------------------------------------------------------------------------

    def pause_queue(self, name: str) -> pauses.Pause:
        """Pause a queue: none of its runs starts until it is resumed (running ones finish).
        A queue no job uses, no run waits in and no pause holds is refused (a typo would
        pause nothing while the queue meant keeps starting runs)."""
        name = _name(name, "queue")
        self._require_admin("pause", _target("queue", name))
        known = self._client.registry.queues(self._seen_tenant) | set(
            self._store.waiting_by_queue(self._seen_tenant)
        )
        known |= {p.name for p in self.list_pauses() if p.scope == "queue"}
        if name not in known:
            problem = (
                f"no job uses queue {name!r} and no run waits in it (a typo?); "
                "`jobsys queues list` shows the queues"
            )
            problems = [{"loc": ["queue"], "msg": problem, "type": "value_error"}]
            raise errors.InvalidInput("queues.pause", problems, "name")
        return self._pause("queue", name, checked=True)

    def resume_queue(self, name: str) -> Resumed:
        """Resume a queue: the runs it held are published, highest priority first."""
        return self._resume("queue", _name(name, "queue"))

    def pause_all(self) -> pauses.Pause:
        """Pause everything (every queue) of this admin's tenant (of every tenant for a
        superadmin)."""
        return self._pause("all", "")

    def resume_all(self) -> Resumed:
        """Resume everything paused with ``pause_all``."""
        return self._resume("all", "")

    def pause_job(self, name: str) -> pauses.Pause:
        """Pause one job: none of its runs starts until it is resumed."""
        spec = self._client.registry.get(_name(name, "job"))
        self._client.allow("pause", spec, target=f"job {spec.name}")
        return self._pause("job", spec.name, checked=True)

    def resume_job(self, name: str) -> Resumed:
        """Resume one job: the runs it held are published, highest priority first."""
        spec = self._client.registry.get(_name(name, "job"))
        self._client.allow("pause", spec, target=f"job {spec.name}")
        return self._resume("job", spec.name, checked=True)

    # --- the parts -------------------------------------------------------------------------

    @property
    def _store(self) -> pauses.PauseStore:
        return self._client.store.pauses

    @property
    def _superadmin(self) -> bool:
        return self._client.policy.is_superadmin(self._client.principal)

    @property
    def _seen_tenant(self) -> str | None:
        return None if self._superadmin else self._client.principal.tenant

    @property
    def _own_tenant(self) -> str:
        """The tenant of the pauses this principal makes."""
        return pauses.EVERY_TENANT if self._superadmin else self._client.principal.tenant

    def _require_admin(self, action: str, target: str) -> None:
        who = self._client.principal
        if not self._client.policy.is_admin(who):
            self._client.audit.record(who, action, target, "denied", "needs an admin role")
            raise errors.PermissionDenied(
                who.id, action, target, "pausing a queue or everything takes an admin role"
            )

    def _pause(self, scope: str, name: str, checked: bool = False) -> pauses.Pause:
        target = _target(scope, name)
        if not checked:
            self._require_admin("pause", target)
        who = self._client.principal
        pause, new = self._store.pause(scope, name, self._own_tenant, who.id)
        detail = f"tenant {pause.tenant}" + ("" if new else " (already paused)")
        self._client.audit.record(who, "pause", target, "allowed", detail)
        return pause

    def _resume(self, scope: str, name: str, checked: bool = False) -> Resumed:
        target = _target(scope, name)
        if not checked:
            self._require_admin("resume", target)
        who = self._client.principal
        from jobsys.engine import pausing  # (see ``Submitting.app``)

        client = self._client
        owner = None if self._superadmin else who.tenant
        gone, published = pausing.resume(
            client.app, client.registry, client.store, (scope, name, owner), self._seen_tenant
        )
        detail = ", ".join(f"tenant {p.tenant}" for p in gone) or "(was not paused)"
        self._client.audit.record(who, "resume", target, "allowed", detail)
        held = ((scope, name), ("all", ""))
        still = [p for p in self.list_pauses() if (p.scope, p.name) in held]
        return Resumed(gone, published, still)


def _name(name: str, field: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        problem = (
            "must be 1 to 200 letters, digits or . _ : @ -, starting with a letter or digit "
            f"(got {name!r})"
        )
        problems = [{"loc": [field], "msg": problem, "type": "value_error"}]
        raise errors.InvalidInput(f"{field}s.pause", problems, "name")
    return name


def _target(scope: str, name: str) -> str:
    return "everything" if scope == "all" else f"{scope} {name}"
