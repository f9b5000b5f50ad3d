"""``Client.bulk``: cancel, retry or delete every run that matches a filter, or count them first
(a dry run).

A filter is ``KEY=VALUE`` conditions, all of which must hold (``bulk_filter.py``,
``WHERE_KEYS``); a filter with none is refused unless it says ``all``, so a careless
``--where`` never acts on every run.
Only the runs of the caller's tenant are matched, and only those made before the action
started (a retry never meets its own new runs). Each matched run goes through the rules of
the single action:

- cancel (the job's ``update`` rule): a run not started ends cancelled at once, a running one
  is asked to stop; an ended run is skipped (``state``);
- retry (the job's ``execute`` rule, with the run's input): a failed or cancelled run is
  submitted again as a new run whose parent it is (same input, tags, metadata, priority),
  unless it was retried already (``already_retried``: replaying twice does not run it twice);
- delete (the job's ``delete`` rule): an ended run is removed with its logs, search entries
  and dependency rows; a run not ended (``state``), or a step of a workflow run still running
  (``workflow_running``), is kept.

A run the caller may not act on is skipped (``permission``), not an error for the whole. The
runs are read and written ``store.bulk.BATCH`` at a time, each batch in a transaction of its
own; a dry run reads them the same way and decides the same, changing nothing, so its counts
are what the action would do then. Each action (not a dry run) writes one audit entry with the
filter and the counts.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from jobsys.base import errors
from jobsys.declare import jobs
from jobsys.service.bulk_filter import WHERE_KEYS, parse_where
from jobsys.service.submit_options import SubmitOptions
from jobsys.store import runs
from jobsys.store.bulk import BulkFilter
from jobsys.store.run_states import RunState

if TYPE_CHECKING:
    from jobsys.service.client import Client

__all__ = ["ACTIONS", "WHERE_KEYS", "BulkClient", "BulkResult", "parse_where"]

Action = Literal["cancel", "retry", "delete"]
ACTIONS: tuple[Action, ...] = ("cancel", "retry", "delete")
RULE = {"cancel": "update", "retry": "execute", "delete": "delete"}
"""The job's permission rule each action asks (a single cancel asks ``update`` too)."""
SAMPLE = 10
"""Ids shown of the runs acted on (or that a dry run would act on)."""


@dataclasses.dataclass
class BulkResult:
    """What a bulk action did (or, a dry run, would do)."""

    action: Action
    dry_run: bool
    where: dict[str, Any]
    matched: int = 0
    """Runs of the tenant that match the filter."""
    done: int = 0
    """Runs cancelled (or asked to stop), retried or deleted; a dry run: that would be."""
    skipped: Counter[str] = dataclasses.field(default_factory=Counter)
    """Runs left as they were, by reason: ``state``, ``permission``, ``already_retried``,
    ``unknown_job``, ``invalid_input``, ``workflow_running``."""
    stopping: int = 0
    """Of ``done`` (cancel): running runs asked to stop (they end cancelled when their
    worker stops them)."""
    sample: list[str] = dataclasses.field(default_factory=list)
    """Ids of the first runs acted on (or that would be)."""
    retries: dict[str, str] = dataclasses.field(default_factory=dict)
    """Retry: the first of the new runs, by the id of the run each retries."""
    warning: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "dry_run": self.dry_run,
            "where": self.where,
            "matched": self.matched,
            "done": self.done,
            "skipped": {k: n for k, n in sorted(self.skipped.items()) if n},
            "sample": self.sample,
        }
        if self.action == "cancel":
            out["stopping"] = self.stopping
        if self.action == "retry":
            out["retries"] = self.retries
        if self.warning:
            out["warning"] = self.warning
        return out

    def _did(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        self.done += len(ids)
        self.sample += ids[: max(0, SAMPLE - len(self.sample))]


class BulkClient:
    """Bulk actions of one client's principal (``Client.bulk``)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def cancel(self, where: Mapping[str, Any] | Iterable[str], dry_run: bool = False) -> BulkResult:
        """Cancel the runs that match ``where`` (see the module's documentation)."""
        return self.act("cancel", where, dry_run)

    def retry(self, where: Mapping[str, Any] | Iterable[str], dry_run: bool = False) -> BulkResult:
        """Retry the failed and cancelled runs that match ``where``."""
        return self.act("retry", where, dry_run)

    def delete(self, where: Mapping[str, Any] | Iterable[str], dry_run: bool = False) -> BulkResult:
        """Delete the ended runs that match ``where``."""
        return self.act("delete", where, dry_run)

    def act(
        self,
        action: Action,
        where: Mapping[str, Any] | Iterable[str] | BulkFilter,
        dry_run: bool = False,
    ) -> BulkResult:
        if action not in ACTIONS:
            raise ValueError(f"unknown bulk action {action!r}; one of {', '.join(ACTIONS)}")
        what = f"runs {action}"
        found = where if isinstance(where, BulkFilter) else parse_where(where, what)
        c = self._c
        result = BulkResult(action, dry_run, found.to_json() or {"all": True})
        now = runs.utcnow()
        step = {"cancel": self._cancel, "retry": self._retry, "delete": self._delete}[action]
        for page in c.store.bulk.batches(found, c.principal.tenant, now):
            result.matched += len(page)
            step(page, result, dry_run)
        if not dry_run:
            denied = result.skipped["permission"]
            outcome = "denied" if denied and not result.done else "allowed"
            left_out = ("sample", "retries", "warning")
            detail = {k: v for k, v in result.to_json().items() if k not in left_out}
            c.audit.record(c.principal, f"bulk_{action}", "runs", outcome, json.dumps(detail))
        return result

    # --- per action, one page at a time -----------------------------------------------------

    def _allowed(
        self, action: Action, page: list[runs.RunRecord], result: BulkResult
    ) -> list[runs.RunRecord]:
        """The runs of ``page`` the principal may act on (by their job's rule, without an
        input); the others are counted as skipped."""
        c = self._c
        rule = RULE[action]
        jobs_ = {r.job for r in page}
        may = {job: c.policy.allows(c.principal, rule, c._spec(job)) for job in jobs_}
        result.skipped["permission"] += sum(1 for r in page if not may[r.job])
        return [r for r in page if may[r.job]]

    def _cancel(self, page: list[runs.RunRecord], result: BulkResult, dry_run: bool) -> None:
        live = [r for r in page if not r.terminal]
        result.skipped["state"] += len(page) - len(live)
        allowed = self._allowed("cancel", live, result)
        if dry_run:
            result._did(r.id for r in allowed)
            result.stopping += sum(1 for r in allowed if r.state is RunState.RUNNING)
            return
        cancelled, stopping = self._c.store.bulk.cancel(
            [r.id for r in allowed],
            runs.utcnow(),
            actor=self._c.principal.id,
            attempts={r.id: r.attempts for r in allowed},
        )
        result.skipped["state"] += len(allowed) - len(cancelled) - len(stopping)
        result._did([*cancelled, *stopping])
        result.stopping += len(stopping)
        ended = set(cancelled)
        waited_on = [r.id for r in allowed if r.id in ended and r.has_dependents]
        self._announce_cancelled(cancelled, waited_on, result)

    def _announce_cancelled(
        self, cancelled: list[str], with_dependents: list[str], result: BulkResult
    ) -> None:
        """What a single cancel does after the record: wake waiters, release the runs that
        waited on them. A broker that cannot be reached leaves a warning (the records are
        cancelled all the same; a worker's reconciler queues released runs later)."""
        if not cancelled:
            return
        c = self._c
        released = [
            r
            for run_id in with_dependents
            for r in c.store.release_dependents(run_id, c.settings.delay_horizon_seconds)
        ]
        from jobsys.engine import broker  # (see ``Submitting.app``)

        try:
            for run_id in cancelled:
                broker.store_result(c.app, run_id, "REVOKED", None, retry=False)
            broker.republish(c.app, c.registry, released, front=False)
        except Exception as exc:
            result.warning = (
                f"the runs are cancelled (their records say so, and no worker starts them), but "
                f"the broker could not be told ({exc}): waiters notice within their polling "
                "interval, and released runs are queued by a worker's reconciler"
            )

    def _retry(self, page: list[runs.RunRecord], result: BulkResult, dry_run: bool) -> None:
        c = self._c
        ended = [r for r in page if r.state in (RunState.FAILED, RunState.CANCELLED)]
        result.skipped["state"] += len(page) - len(ended)
        again = c.store.bulk.retried([r.id for r in ended])
        result.skipped["already_retried"] += len(again)
        now = runs.utcnow()
        made: list[tuple[jobs.JobSpec, dict[str, Any], str]] = []
        for r in ended:
            if r.id in again:
                continue
            try:
                spec = c.registry.get(r.job)
                payload, sealed = c.validate_input(spec, c.revealed(r.input, r.sealed))
            except errors.UnknownJob:
                result.skipped["unknown_job"] += 1
                continue
            except errors.InvalidInput:
                result.skipped["invalid_input"] += 1
                continue
            if not c.policy.allows(c.principal, "execute", spec, payload):
                result.skipped["permission"] += 1
                continue
            options = SubmitOptions(
                tags=tuple(r.tags), metadata=r.meta, parent_id=r.id, priority=r.priority
            )
            start = c._start(spec, options, now)
            row = c._row(spec, payload, sealed, options, c.principal, now, start)
            made.append((spec, row, r.id))
        if dry_run:
            result._did(old for _, _, old in made)
            return
        if made:
            c.store.insert([row for _, row, _ in made])
            attempts = {r.id: r.attempts for r in ended}
            c.store.bulk.record_retries(
                {old: (attempts[old], str(row["id"])) for _, row, old in made}, c.principal.id
            )
            self._publish([(spec, row) for spec, row, _ in made])
        result._did(old for _, _, old in made)
        for _, row, old in made[: max(0, SAMPLE - len(result.retries))]:
            result.retries[old] = str(row["id"])

    def _publish(self, items: list[tuple[jobs.JobSpec, dict[str, Any]]]) -> None:
        """Queue new runs (at their priorities) as a submit does: in one pipelined batch, or,
        if the broker does not answer, kept for this client's outbox (recorded, "not yet
        queued", and sent when it is back)."""
        c = self._c
        app = c.app
        from jobsys.engine import broker  # (see ``Submitting.app``)

        try:
            if len(c.outbox):
                raise errors.BrokerUnavailable("runs submitted before wait for the broker")
            broker.publish_many(app, items, None)
        except Exception:
            by_job: dict[str, list[dict[str, Any]]] = {}
            specs = {}
            for spec, row in items:
                by_job.setdefault(spec.name, []).append(row)
                specs[spec.name] = spec
            for name, rows_ in by_job.items():
                c._keep_unqueued(app, specs[name], rows_, None)

    def _delete(self, page: list[runs.RunRecord], result: BulkResult, dry_run: bool) -> None:
        c = self._c
        ended = [r for r in page if r.terminal]
        result.skipped["state"] += len(page) - len(ended)
        steps = c.store.bulk.in_running_workflows([r.id for r in ended if r.workflow_id])
        result.skipped["workflow_running"] += len(steps)
        allowed = self._allowed("delete", [r for r in ended if r.id not in steps], result)
        if dry_run:
            result._did(r.id for r in allowed)
            return
        gone = c.store.bulk.delete([r.id for r in allowed])
        result.skipped["state"] += len(allowed) - len(gone)
        result._did(gone)
