"""The one front door for producers: submit, execute, status, wait, result, cancel, retry, list.

The CLI (and the HTTP and MCP interfaces) are thin layers over ``Client``. Its parts: what
its principal may see and do (``access.py``), submitting (``submitting.py``: input is
validated before anything is recorded or queued; the run row is committed before its message
is published, so a run lost in transit is still visible and the reconciler publishes it
again), and here following, steering and the clients of workflows, schedules, definitions
and administration.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pydantic

from jobsys.base import config, embedders, errors
from jobsys.declare import catalog, jobs, permissions
from jobsys.service import searching
from jobsys.service.actor_client import ActorClient
from jobsys.service.admin_client import AdminClient
from jobsys.service.bulk import BulkClient
from jobsys.service.definition_client import DefinitionClient
from jobsys.service.pause_client import PauseClient
from jobsys.service.retention import RetentionClient
from jobsys.service.schedule_client import ScheduleClient
from jobsys.service.submitting import MAX_COUNTDOWN_SECONDS, SubmitOptions, Submitting
from jobsys.service.subscription_client import Created, SubscriptionClient
from jobsys.service.workflow_client import WorkflowClient
from jobsys.store import audit, definition_store, run_states, runs, stores, tokens
from jobsys.store import events as run_events

if TYPE_CHECKING:
    from jobsys.engine import celery_api

Scored = list[tuple[runs.RunRecord, float | None]]
"""Runs a search found, best first, each with its score (``None``: a keyword match)."""
JobScores = list[tuple[str, float]]
Vector = list[float]

__all__ = ["MAX_COUNTDOWN_SECONDS", "Cancelled", "Client", "SubmitOptions", "waiting_message"]


@dataclasses.dataclass(frozen=True)
class Cancelled:
    """What ``Client.cancel`` did: the run's record (the truth: cancelled, or running and
    asked to stop), and what could not be done besides it, if anything."""

    record: runs.RunRecord
    warning: str | None = None
    """Set when the broker could not be reached after the record was cancelled: waiters are
    not woken at once, and runs that depended on it and may now start are queued later (by a
    worker's reconciler)."""

    def to_json(self) -> dict[str, Any]:
        data = self.record.to_json()
        if self.warning:
            data["warning"] = self.warning
        return data


@dataclasses.dataclass(frozen=True)
class RunHistory:
    """A run's events, oldest first, and its attempts read off them."""

    run_id: str
    events: list[run_events.RunEvent]
    attempts: list[run_events.Attempt]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "events": [e.to_json() for e in self.events],
            "attempts": [a.to_json() for a in self.attempts],
        }


class Client(Submitting):
    """Submit and follow runs. One per process; thread-safe. Its parts: what its principal
    may see and do (``access.py``), submitting (``submitting.py``), and the clients of
    workflows, schedules, definitions and administration (``*_client.py``)."""

    def __init__(
        self,
        settings: config.Settings,
        registry: jobs.Registry | None = None,
        principal: permissions.Principal = permissions.LOCAL,
        store: stores.Store | None = None,
        app: celery_api.Celery | None = None,
        token_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.token_id = token_id
        """The id of the API token this client acts with (``None``: the local admin, or a
        principal given in code): the runs it takes as an actor are bound to it."""
        shared = registry if registry is not None else catalog.load_registry(settings.catalog)
        self.principal = principal
        self.store = store or stores.Store.open(settings.database_url)
        shared.attach(definition_store.source(settings, self.store.engine))
        self.registry = shared.scoped(principal.tenant)
        """The catalog and the jobs this principal's tenant registered at runtime: every name
        this client is given resolves here."""
        self.policy = permissions.Policy(
            admin_roles=settings.admin_roles, superadmin_roles=settings.superadmin_roles
        )
        self.audit = audit.AuditLog(self.store.engine)
        self._app = app

    @classmethod
    def from_settings(
        cls, settings: config.Settings, registry: jobs.Registry | None = None
    ) -> Client:
        """A client acting as ``settings.token``'s principal (``JOBSYS_TOKEN``), or as the
        local admin when no token is set."""
        store = stores.Store.open(settings.database_url)
        who = permissions.LOCAL
        if settings.token:
            try:
                who = tokens.TokenStore(store.engine).principal(settings.token)
            except errors.Unauthenticated:
                store.close()
                raise
        token_id = tokens.token_id(settings.token) if settings.token else None
        return cls(settings, registry, principal=who, store=store, token_id=token_id)

    @functools.cached_property
    def actors(self) -> ActorClient:
        """Take runs of external jobs and report on them (agents, people, services)."""
        return ActorClient(self)

    @functools.cached_property
    def admin(self) -> AdminClient:
        """API tokens and the audit log (admin roles only)."""
        return AdminClient(self)

    @functools.cached_property
    def bulk(self) -> BulkClient:
        """Cancel, retry or delete the runs matching a filter, or count them (a dry run)."""
        return BulkClient(self)

    @functools.cached_property
    def definitions(self) -> DefinitionClient:
        """Register and remove jobs at runtime (aliases, HTTP calls, workflows)."""
        return DefinitionClient(self)

    @functools.cached_property
    def workflows(self) -> WorkflowClient:
        """Submit, follow and cancel workflow runs."""
        return WorkflowClient(self)

    @functools.cached_property
    def schedules(self) -> ScheduleClient:
        """Create and steer schedules (see ``jobsys.every``, ``cron``, ``once``, ``ongoing``)."""
        return ScheduleClient(self)

    @functools.cached_property
    def pauses(self) -> PauseClient:
        """Pause and resume queues, jobs or everything; the queues, paused or not."""
        return PauseClient(self)

    @functools.cached_property
    def retention(self) -> RetentionClient:
        """Prune ended runs by the retention policies; archive and unarchive runs and
        schedules."""
        return RetentionClient(self)

    @functools.cached_property
    def subscriptions(self) -> SubscriptionClient:
        """Webhook subscriptions to run events, and their delivery log."""
        return SubscriptionClient(self)

    def subscribe(
        self,
        url: str,
        events: Sequence[str] = ("completed", "failed"),
        job: str | None = None,
        schedule: str | None = None,
        workflow: str | None = None,
    ) -> Created:
        """Send ``events`` of the runs of ``job`` (or ``schedule``, ``workflow``, or, none
        given, of the whole tenant) to ``url`` as signed webhooks; ``.secret`` is the signing
        secret, shown this once (``Client.subscriptions`` lists, tests and deletes)."""
        return self.subscriptions.create(url, events, job=job, schedule=schedule, workflow=workflow)

    def execute(
        self,
        job: str,
        input: Mapping[str, Any] | pydantic.BaseModel,
        timeout: float | None = None,
        options: SubmitOptions | None = None,
    ) -> Any:
        """Submit and wait; return the output, or raise ``RunFailed``."""
        run_id = self.submit(job, input, options)
        return self.result(run_id, timeout=timeout if timeout is not None else 3600.0)

    # --- following -------------------------------------------------------------------------

    def wait(self, run_id: str, timeout: float = 3600.0, poll: float = 1.0) -> runs.RunRecord:
        """Block until the run is finished (or raise ``WaitTimeout``); return its record."""
        deadline = time.monotonic() + timeout
        pending = self.app.AsyncResult(run_id)
        try:
            return self._wait(run_id, pending, deadline, timeout, poll)
        finally:
            # Unsubscribe now, while Redis is surely there, not whenever GC runs __del__.
            self.app.backend.remove_pending_result(pending)
            pending.backend = None

    def _wait(
        self, run_id: str, pending: Any, deadline: float, timeout: float, poll: float
    ) -> runs.RunRecord:
        from jobsys.engine.celery_api import ResultTimeout  # (see ``Submitting.app``)

        signalled = False  # Celery's result is in: from now on only the record matters
        while True:
            record = self.status(run_id)
            remaining = deadline - time.monotonic()
            if record.terminal:
                return record
            if remaining <= 0:
                raise errors.WaitTimeout(run_id, timeout, waiting_message(record))
            if signalled:
                time.sleep(min(0.2, remaining))
                continue
            try:
                pending.get(
                    timeout=min(poll, remaining), propagate=False, disable_sync_subtasks=False
                )
            except ResultTimeout:
                continue
            signalled = True

    def announced(self, job: str) -> bool | None:
        """Whether a live worker said lately that it runs ``job`` (it knows the job and reads
        its queue: ``parking.py``); ``None`` when that cannot be told (a job registered at
        runtime, which every worker runs, or a broker that does not answer)."""
        if self.registry.is_dynamic(job):
            return None
        from jobsys.engine import parking  # on first use: it loads Celery's worker consumer

        try:
            with self.app.producer_or_acquire() as producer:
                return parking.announced(producer.channel, job)
        except Exception:
            return None

    def result(self, run_id: str, timeout: float = 0.0) -> Any:
        """The run's output; waits up to ``timeout`` s; raises ``RunFailed`` if it failed."""
        record = self.wait(run_id, timeout) if timeout else self.status(run_id)
        if record.state is runs.RunState.COMPLETED:
            return record.output
        if record.terminal:
            raise errors.RunFailed(run_id, record.state.value, record.error)
        raise errors.InvalidTransition(run_id, record.state.value, "read the result of")

    def logs(self, run_id: str, after_id: int = 0) -> list[runs.LogLine]:
        self.status(run_id)
        return self.store.logs(run_id, after_id)

    def events(self, run_id: str) -> RunHistory:
        """The run's history: every change of state and every attempt (``events.py``), read
        under the rules of ``status``: a run whose job this principal may not read shows its
        changes without their errors, and tracebacks are for admins."""
        record = self.status(run_id)
        history = self.store.events(run_id)
        if record.withheld:  # (progress is withheld too: its milestones go)
            history = [dataclasses.replace(e, error=None) for e in history if e.kind != "progress"]
        elif not self.policy.is_admin(self.principal):
            history = [
                dataclasses.replace(e, error={**e.error, "traceback": None})
                if e.error and e.error.get("traceback")
                else e
                for e in history
            ]
        return RunHistory(run_id, history, run_events.attempts(history))

    def list(
        self,
        job: str | None = None,
        state: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        tag: str | None = None,
        principal_id: str | None = None,
        limit: int = 50,
        search: str | None = None,
        schedule_id: str | None = None,
        workflow_id: str | None = None,
        parent_id: str | None = None,
        exhausted: bool | None = None,
        paused: bool | None = None,
        archived: bool | None = False,
        mode: str | None = None,
    ) -> list[runs.RunRecord]:
        """Runs of this principal's tenant, newest first (``list_scored``: the same, with
        the search's scores)."""
        _, found = self.list_scored(
            job=job,
            state=state,
            since=since,
            until=until,
            tag=tag,
            principal_id=principal_id,
            limit=limit,
            search=search,
            schedule_id=schedule_id,
            workflow_id=workflow_id,
            parent_id=parent_id,
            exhausted=exhausted,
            paused=paused,
            archived=archived,
            mode=mode,
        )
        return [r for r, _ in found]

    def list_scored(
        self,
        job: str | None = None,
        state: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        tag: str | None = None,
        principal_id: str | None = None,
        limit: int = 50,
        search: str | None = None,
        schedule_id: str | None = None,
        workflow_id: str | None = None,
        parent_id: str | None = None,
        exhausted: bool | None = None,
        paused: bool | None = None,
        archived: bool | None = False,
        mode: str | None = None,
    ) -> tuple[str, Scored]:
        """Runs of this principal's tenant, newest first, each with its search score (none
        for keyword matches), and the search mode used. ``search`` keeps the runs whose
        error or logs hold all its keywords, or whose job's name, description or tags do
        (``mode`` keyword), or ranks them by meaning (semantic, or hybrid: both, fused; the
        default when an embedder is set; ``searching.py``);
        ``schedule_id``, ``workflow_id`` and ``parent_id`` the runs a schedule made, the steps
        of a workflow run, the runs made from a run (its retries); ``exhausted`` the runs
        that used all their attempts (``True``) or did not (``False``): with
        ``state="failed"``, the dead-letter view; ``paused`` the waiting runs a pause holds
        (``True``) or all but those (``False``). ``archived``: archived runs only (``True``),
        or both (``None``); by default runs not archived."""
        run_state = errors.choice(runs.RunState, state, "runs.list")
        resolved = searching.resolve(mode, self.embedder) if search else "keyword"
        found = self._found(
            runs.RunFilter(
                job=job,
                state=run_state,
                since=since,
                until=until,
                tag=tag,
                principal_id=principal_id,
                tenant=self.principal.tenant,
                schedule_id=schedule_id,
                workflow_id=workflow_id,
                parent_id=parent_id,
                exhausted=exhausted,
                paused=paused,
                text=search,
                text_jobs=self.registry.matching(search) if search else (),
                text_readable=self.visible_jobs("read") if search else None,
                jobs=self.visible_jobs(),
                archived=archived,
                limit=limit,
            ),
            resolved,
        )
        return resolved, found

    def search(self, text: str, mode: str | None = None, limit: int = 20) -> tuple[str, Scored]:
        """Runs of this principal's tenant that ``text`` finds (``searching.py``), best first,
        with their scores (none for keyword matches, newest first), and the mode used."""
        resolved = searching.resolve(mode, self.embedder)
        where = runs.RunFilter(
            tenant=self.principal.tenant,
            text=text,
            text_jobs=self.registry.matching(text),
            text_readable=self.visible_jobs("read"),
            jobs=self.visible_jobs(),
            limit=limit,
        )
        return resolved, self._found(where, resolved)

    def nearest_jobs(self, text: str, limit: int = 20) -> JobScores:
        """The jobs this principal may see whose name, description and tags are most like
        ``text`` in meaning, best first, with their scores (needs an embedder)."""
        names = [s.name for s in self.job_specs(include_hidden=True)]
        return self.store.semantic.nearest_jobs(
            names, self.query_vector(text), self.settings.semantic_min_score, limit
        )

    @functools.cached_property
    def embedder(self) -> embedders.Embedder | None:
        """What turns a search's text into a vector (``JOBSYS_EMBEDDER``); ``None``: semantic
        search is off."""
        s = self.settings
        return embedders.from_setting(s.embedder, s.embedder_model, s.embedder_key)

    def query_vector(self, text: str) -> Vector:
        """The embedder's vector of a query (the last one is kept, for the next search of
        the same text); ``SemanticSearchOff`` without an embedder."""
        searching.resolve("semantic", self.embedder)
        last = self.__dict__.get("_last_vector")
        if last is None or last[0] != text:
            assert self.embedder is not None  # (``searching.resolve`` said so)
            last = self.__dict__["_last_vector"] = (text, self.embedder.embed([text])[0])
        return list(last[1])

    def _found(self, where: runs.RunFilter, mode: str | None) -> Scored:
        """The runs ``where`` keeps, by ``mode`` when it has text, as this principal is shown
        them, with their scores."""
        resolved = searching.resolve(mode, self.embedder) if where.text else "keyword"
        found: Scored
        if resolved == "keyword":
            found = [(r, None) for r in self.store.select(where)]
        else:
            near = self.store.nearest(
                where,
                self.query_vector(where.text or ""),
                self.settings.semantic_min_score,
            )
            if resolved == "semantic":
                found = [(r, score) for r, score in near]
            else:
                words = self.store.select(where)
                by_id = {r.id: r for r in words} | {r.id: r for r, _ in near}
                fused = searching.fuse([r.id for r in words], [r.id for r, _ in near])
                found = [(by_id[i], score) for i, score in fused[: where.limit]]
        readable = {job: self.may_read(job) for job in {r.job for r, _ in found}}
        return [(self.shown(r, readable[r.job]), score) for r, score in found]

    # --- steering --------------------------------------------------------------------------

    def cancel(self, run_id: str) -> Cancelled:
        """A waiting run never starts; a running one is stopped and ends cancelled.

        The record is what cancels: a worker checks it before starting a run and while it
        runs. Telling the broker (waking waiters, releasing dependent runs) comes after; if
        the broker cannot be reached the run is cancelled all the same, and the answer
        carries a warning saying what is left to happen."""
        self.allow("update", self.status(run_id).job, target=run_id)
        record = self.shown(
            self.store.request_cancel(run_id, self.principal.tenant, self.principal.id)
        )
        self.audit.record(self.principal, "cancel", run_id, "allowed", f"job {record.job}")
        if record.state is not runs.RunState.CANCELLED:
            return Cancelled(record)
        # the runs waiting on it fail, or run
        released = self.store.release_dependents(run_id, self.settings.delay_horizon_seconds)
        from jobsys.engine import broker  # (see ``Submitting.app``)

        try:
            broker.store_result(self.app, run_id, "REVOKED", None, retry=False)
            broker.republish(self.app, self.registry, released, front=False)
        except Exception as exc:  # the record is cancelled: report it, do not fail
            return Cancelled(record, _unannounced(run_id, exc, bool(released)))
        return Cancelled(record)

    def retry(self, run_id: str) -> str:
        """Submit a failed or cancelled run again, as a new run whose parent is the old one
        (same input, tags, metadata and priority)."""
        record = self.status(run_id)
        if record.state not in (runs.RunState.FAILED, runs.RunState.CANCELLED):
            raise errors.InvalidTransition(run_id, record.state.value, "retry")
        new_id = self.submit(
            record.job,
            self.revealed(record.input, record.sealed),
            SubmitOptions(
                tags=tuple(record.tags),
                metadata=record.meta,
                parent_id=record.id,
                priority=record.priority,
            ),
        )
        self.store.record_action(
            run_id, record.attempts, self.principal.id, {"action": "retried", "run_id": new_id}
        )
        return new_id

    def close(self) -> None:
        """Release the connections of this client (database pool, broker, result backend)."""
        if self._app is not None:
            self._app.close()
        self.store.close()


def waiting_message(record: runs.RunRecord) -> str | None:
    """Why a waiting run waits, when known (``RunRecord.waiting``): a worker said (no live
    worker knows its job), its producer did (the broker did not answer), or it is delayed
    (kept in the store until its start time)."""
    if record.waiting and record.state in run_states.WAITING:
        message = record.waiting.get("message")
        return str(message) if message else None
    return None


def _unannounced(run_id: str, exc: Exception, released: bool) -> str:
    text = (
        f"run {run_id} is cancelled (its record says so, and no worker will start it), but "
        f"the broker could not be told ({exc}): a `wait` on it notices within its polling "
        "interval"
    )
    if released:
        text += (
            ", and the runs that depended on it and may now start are queued by a worker's "
            "reconciler once the broker is back"
        )
    return text
