"""``Client.retention``: prune ended runs now by the retention policies (``jobsys runs
prune``), and archive or unarchive runs and schedules.

Pruning takes an admin role; an admin prunes its own tenant's runs, a superadmin (and the
local admin) every tenant's. It applies the same rules as each worker's pruner
(``store/retention.py``: ``policy_rules``), or, with ``older_than``, every ended run older
than that (a job's newest ``keep_last`` ended runs still stay); ``job``: that job's runs only.
A dry run counts what would go. Every prune (not a dry run), allowed or denied, is audited.

Archiving a run or a schedule takes its job's ``update`` rule (as a cancel or a pause does):
an archived run or schedule is left out of the default lists (``archived=True`` lists them),
is kept, and is never pruned; archiving a schedule pauses it (it fires no more until it is
unarchived and resumed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from jobsys.base import errors
from jobsys.store import retention, runs

if TYPE_CHECKING:
    from jobsys.service.client import Client


class RetentionClient:
    def __init__(self, client: Client) -> None:
        self._c = client

    def prune(
        self, older_than: float | None = None, job: str | None = None, dry_run: bool = False
    ) -> retention.PruneResult:
        """Delete (or, a dry run, count) the ended runs the policies let go (see the
        module)."""
        c = self._c
        who = c.principal
        target = job or "runs"
        if not c.policy.is_admin(who):
            c.audit.record(who, "prune", target, "denied", "needs an admin role")
            raise errors.PermissionDenied(who.id, "prune", "runs (an admin role is needed)")
        problem = retention.older_than_problem(older_than)
        if problem is not None:
            raise errors.InvalidInput(
                "runs.prune",
                [{"loc": ["older_than"], "type": "value_error", "msg": problem}],
                "filter",
            )
        now = runs.utcnow()
        rules = retention.policy_rules(c.settings, c.registry, now, older_than, job)
        tenant = None if c.policy.is_superadmin(who) else who.tenant
        cutoffs = retention.workflow_cutoffs(c.settings, now, older_than) if job is None else {}
        result = c.store.retention.prune(
            rules,
            batch=c.settings.prune_batch,
            tenant=tenant,
            dry_run=dry_run,
            workflow_cutoffs=cutoffs,
        )
        if not dry_run:
            detail = {"older_than": older_than, "job": job, **result.to_json()}
            c.audit.record(who, "prune", target, "allowed", json.dumps(detail))
        return result

    def archive(self, run_ids: Iterable[str]) -> list[str]:
        """Archive runs; returns those archived now (one archived already is left out)."""
        return self._runs(list(run_ids), True)

    def unarchive(self, run_ids: Iterable[str]) -> list[str]:
        """Bring archived runs back into the default lists."""
        return self._runs(list(run_ids), False)

    def archive_schedules(self, schedule_ids: Iterable[str]) -> list[str]:
        """Archive schedules (and pause them)."""
        return self._schedules(list(schedule_ids), True)

    def unarchive_schedules(self, schedule_ids: Iterable[str]) -> list[str]:
        """Bring archived schedules back into the default lists (still paused: resume them
        to fire again)."""
        return self._schedules(list(schedule_ids), False)

    def _runs(self, run_ids: list[str], archived: bool) -> list[str]:
        c = self._c
        for run_id in run_ids:  # another tenant's run is not found; a denied one raises
            c.allow("update", c.status(run_id).job, target=run_id)
        done = c.store.retention.archive_runs(run_ids, c.principal.tenant, archived, runs.utcnow())
        action = "archive" if archived else "unarchive"
        for run_id in done:
            c.audit.record(c.principal, action, run_id, "allowed", "")
        return done

    def _schedules(self, ids: list[str], archived: bool) -> list[str]:
        c = self._c
        for schedule_id in ids:
            c.allow("update", c.schedules.get(schedule_id).job, target=schedule_id)
        done = c.store.retention.archive_schedules(ids, c.principal.tenant, archived, runs.utcnow())
        action = "archive schedule" if archived else "unarchive schedule"
        for schedule_id in done:
            c.audit.record(c.principal, action, schedule_id, "allowed", "")
        return done
