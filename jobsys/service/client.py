"""The one front door for producers: submit, execute, status, wait, result, cancel, retry, list.

The CLI (and the HTTP and MCP interfaces) are thin layers over ``Client``. Input is validated
here, before anything is recorded or queued; the run row is committed before its message is
published, so a run lost in transit is still visible (and the reaper publishes it again).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import time
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic

from jobsys.base import bounds, config, errors, sealing
from jobsys.declare import catalog, jobs, permissions
from jobsys.engine import broker, celery_api
from jobsys.service.admin_client import AdminClient
from jobsys.service.definition_client import DefinitionClient
from jobsys.service.schedule_client import ScheduleClient
from jobsys.service.workflow_client import WorkflowClient
from jobsys.store import audit, definition_store, runs, stores, tokens

MAX_COUNTDOWN_SECONDS = bounds.MAX_COUNTDOWN
"""A delayed message waits in a worker's memory until it is due; later starts are schedules."""


@dataclasses.dataclass(frozen=True)
class SubmitOptions:
    """How to submit, kept apart from the job's input."""

    idempotency_key: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] | None = None
    countdown: float | None = None
    depends_on: tuple[str, ...] = ()
    """Runs to wait for: this run starts once they have all completed, with their outputs in
    ``ctx.dependencies``; if one fails it ends failed (reason ``dependency``)..."""
    run_anyway: bool = False
    """...unless this is set: then it runs once they have all ended, whatever their state."""
    """Seconds to wait before the run may start (at most ``MAX_COUNTDOWN_SECONDS``)."""
    priority: int | None = None
    parent_id: str | None = None


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


class Client:
    """Submit and follow runs. One per process; thread-safe."""

    def __init__(
        self,
        settings: config.Settings,
        registry: jobs.Registry | None = None,
        principal: permissions.Principal = permissions.LOCAL,
        store: stores.Store | None = None,
        app: celery_api.Celery | None = None,
    ) -> None:
        self.settings = settings
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
        return cls(settings, registry, principal=who, store=store)

    # --- permissions -----------------------------------------------------------------------

    def allow(
        self,
        action: str,
        job: str | jobs.JobSpec,
        input: Any = None,
        target: str = "",
        who: permissions.Principal | None = None,
    ) -> None:
        """Raise ``PermissionDenied`` (and record the denial) unless the principal may."""
        who = who or self.principal
        spec = job if isinstance(job, jobs.JobSpec) else self._spec(job)
        if self.policy.allows(who, action, spec, input):
            return
        self.audit.record(who, action, target or spec.name, "denied", f"job {spec.name}")
        raise errors.PermissionDenied(who.id, action, spec.name)

    def visible_jobs(self, action: str = "list") -> tuple[str, ...] | None:
        """The jobs whose runs this principal may see in lists (``None``: all of them)."""
        if self.policy.is_admin(self.principal):
            return None
        return tuple(s.name for s in self.registry if self.policy.allows(self.principal, action, s))

    def job_specs(self, include_hidden: bool = False) -> list[jobs.JobSpec]:
        """The jobs this principal may see (their ``list`` rule), in the registry's order;
        hidden ones only with ``include_hidden``. The CLI, HTTP and MCP listings all start
        here."""
        visible = self.visible_jobs()
        return [
            s
            for s in self.registry
            if (include_hidden or not s.hidden) and (visible is None or s.name in visible)
        ]

    def job_spec(self, name: str) -> jobs.JobSpec:
        """One job this principal may see (``UnknownJob``, or ``PermissionDenied`` recorded
        in the audit log, otherwise)."""
        spec = self.registry.get(name)
        self.allow("list", spec)
        return spec

    def may_read(self, job: str) -> bool:
        """This principal may read the runs of ``job`` (see them whole)."""
        return self.policy.allows(self.principal, "read", self._spec(job))

    def shown(self, record: runs.RunRecord, readable: bool | None = None) -> runs.RunRecord:
        """The run as this principal is shown it, on every path (a run, a list, a workflow
        run's steps): with its input, output, error and progress withheld unless it may read
        the run's job, and its error's traceback (server paths, code) to admins only."""
        if readable is None:
            readable = self.may_read(record.job)
        if not readable:
            return dataclasses.replace(
                record,
                input={},
                output=None,
                error=None,
                progress=None,
                sealed=None,
                withheld=f"{self.principal.id!r} may not read runs of job {record.job!r}: its "
                "input, output, error, progress and logs are withheld",
            )
        if (
            record.error
            and record.error.get("traceback")
            and not self.policy.is_admin(self.principal)
        ):
            return dataclasses.replace(record, error={**record.error, "traceback": None})
        return record

    def _jobs(self, who: permissions.Principal | None) -> jobs.Registry:
        """The jobs ``who`` (this client's principal if ``None``) may name: its tenant's."""
        return self.registry if who is None else self.registry.scoped(who.tenant)

    def _spec(self, name: str) -> jobs.JobSpec:
        """The job's spec, or for a job this process does not know, one with no rules (the
        policy's defaults apply)."""
        if name in self.registry:
            return self.registry.get(name)
        return jobs.JobSpec(name, _unknown, pydantic.BaseModel, pydantic.BaseModel)

    @functools.cached_property
    def admin(self) -> AdminClient:
        """API tokens and the audit log (admin roles only)."""
        return AdminClient(self)

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

    @property
    def app(self) -> celery_api.Celery:
        if self._app is None:
            self._app = broker.make_celery(self.settings, self.registry)
        return self._app

    # --- submitting ------------------------------------------------------------------------

    def submit(
        self,
        job: str,
        input: Mapping[str, Any] | pydantic.BaseModel,
        options: SubmitOptions | None = None,
        principal: permissions.Principal | None = None,
    ) -> str:
        """Validate, record and publish a run; return its id at once."""
        options = options or SubmitOptions()
        spec = self._jobs(principal).get(job)
        payload, sealed = self.validate_input(spec, input)
        self.allow("execute", spec, payload, who=principal)
        row = self._row(spec, payload, sealed, options, principal or self.principal)
        app = self.app  # a configuration error must surface before anything is recorded
        if options.depends_on:
            return self._submit_blocked(spec, row, options)
        if not self.store.insert([row]):  # the idempotency key is taken: that run is the answer
            assert options.idempotency_key is not None
            existing = self.store.find_key(row["tenant"], spec.name, options.idempotency_key)
            assert existing is not None
            return existing.id
        self._publish(app, spec, row, options.countdown)
        return str(row["id"])

    def _submit_blocked(
        self, spec: jobs.JobSpec, row: dict[str, Any], options: SubmitOptions
    ) -> str:
        for dependency in options.depends_on:
            self.status(dependency)  # exists, in this tenant, readable
        row = {
            **row,
            "state": runs.RunState.BLOCKED.value,
            "published_at": None,
            "meta": {**row["meta"], "depends_on": list(options.depends_on)}
            | ({"run_anyway": True} if options.run_anyway else {}),
        }
        self.store.add_dependencies(row["id"], options.depends_on)
        self.store.insert([row])
        released = self.store.release(row["id"])  # its dependencies may be done already
        if released is not None:
            self._publish(self.app, spec, row, options.countdown)
        return str(row["id"])

    def submit_many(
        self,
        job: str,
        inputs: Iterable[Mapping[str, Any] | pydantic.BaseModel],
        options: SubmitOptions | None = None,
        principal: permissions.Principal | None = None,
    ) -> list[str]:
        """Submit many runs of one job: every input is validated first (nothing is recorded if
        one is invalid), then all rows are inserted in one statement and published."""
        options = options or SubmitOptions()
        if options.idempotency_key is not None:
            raise errors.InvalidInput(
                job,
                [
                    {
                        "loc": ["idempotency_key"],
                        "type": "value_error",
                        "msg": "is per run: use submit() for each run",
                    }
                ],
                "options",
            )
        spec = self._jobs(principal).get(job)
        who = principal or self.principal
        rows = []
        for index, value in enumerate(inputs):
            try:
                payload, sealed = self.validate_input(spec, value)
                self.allow("execute", spec, payload, who=who)
                rows.append(self._row(spec, payload, sealed, options, who))
            except errors.InvalidInput as exc:
                for e in exc.errors:
                    e["loc"] = [index, *e["loc"]]
                raise
        app = self.app
        self.store.insert(rows)
        try:
            broker.publish_many(app, [(spec, row) for row in rows], options.countdown)
        except Exception as exc:
            for row in rows:  # the reconciler would publish them later; say so now instead
                self.store.fail_unpublished(row["id"], _publish_error(exc))
            raise errors.BrokerUnavailable(
                f"{len(rows)} runs could not be queued ({exc}); is the broker up?"
            ) from exc
        return [str(row["id"]) for row in rows]

    def _row(
        self,
        spec: jobs.JobSpec,
        payload: Any,
        sealed: str | None,
        options: SubmitOptions,
        who: permissions.Principal,
    ) -> dict[str, Any]:
        self._check_options(spec, options)
        return {
            "id": runs.new_run_id(),
            "job": spec.name,
            "job_version": spec.version,
            "queue": spec.queue,
            "priority": spec.priority if options.priority is None else options.priority,
            "input": payload,
            "max_attempts": spec.retry.max_attempts,
            "timeout": spec.timeout,
            "meta": {**spec.metadata, **(options.metadata or {})},
            "tags": sorted(set(spec.tags) | set(options.tags)),
            "principal": who.model_dump(mode="json"),
            "principal_id": who.id,
            "tenant": who.tenant,
            "idempotency_key": options.idempotency_key,
            "parent_id": options.parent_id,
            "sealed": sealed,
            # A delayed run is not "lost" to the reconciler before it is due.
            "next_attempt_at": (
                runs.utcnow() + dt.timedelta(seconds=options.countdown)
                if options.countdown
                else None
            ),
        }

    def validate_input(
        self, spec: jobs.JobSpec, input: Mapping[str, Any] | pydantic.BaseModel
    ) -> tuple[dict[str, Any], str | None]:
        """The input as JSON with its secret fields redacted, and those secrets sealed
        (``sealing.py``); raises ``InvalidInput`` naming each bad field."""
        try:
            if isinstance(input, spec.input_model):
                model = input
            else:
                raw = input.model_dump() if isinstance(input, pydantic.BaseModel) else input
                model = spec.input_model.model_validate(raw)
        except pydantic.ValidationError as exc:
            raise errors.InvalidInput(spec.name, errors.field_errors(exc)) from None
        paths = sealing.secret_paths(spec.input_model)
        if not paths:
            data, hidden = model.model_dump(mode="json"), None
        else:
            data, hidden = sealing.split(model, paths)
        problems = runs.nul_errors(data)
        if problems:
            raise errors.InvalidInput(spec.name, problems)
        return data, self.sealer.seal(hidden) if hidden is not None else None

    @functools.cached_property
    def sealer(self) -> sealing.Sealer:
        return sealing.Sealer.for_home(self.settings.secret_key, self.settings.home)

    def revealed(
        self, input: dict[str, Any], sealed: str | None, under: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """A stored input with its secrets back in place (to submit it again). ``under``:
        where the input's secrets are among those sealed (a workflow's: ``("input",)``)."""
        return sealing.merge(input, self.sealer.open(sealed), under) if sealed else input

    def _check_options(self, spec: jobs.JobSpec, options: SubmitOptions) -> None:
        problems = runs.nul_errors(
            {
                "metadata": options.metadata or {},
                "tags": list(options.tags),
                "idempotency_key": options.idempotency_key or "",
            }
        )
        if problems:
            raise errors.InvalidInput(spec.name, problems, "options")
        limit = MAX_COUNTDOWN_SECONDS
        if options.countdown is not None and not 0 <= options.countdown <= limit:
            raise errors.InvalidInput(
                spec.name,
                [
                    {
                        "loc": ["countdown"],
                        "type": "value_error",
                        "msg": f"must be between 0 and {limit:g} s (a schedule starts runs later)",
                    }
                ],
                "options",
            )
        if options.priority is not None and not 0 <= options.priority <= 9:
            raise errors.InvalidInput(
                spec.name,
                [{"loc": ["priority"], "type": "value_error", "msg": "must be between 0 and 9"}],
                "options",
            )

    def publish_row(
        self, spec: jobs.JobSpec, row: dict[str, Any], countdown: float | None = None
    ) -> None:
        """Publish a run recorded elsewhere (a triggered schedule, a workflow step)."""
        self._publish(self.app, spec, row, countdown)

    def _publish(
        self,
        app: celery_api.Celery,
        spec: jobs.JobSpec,
        row: dict[str, Any],
        countdown: float | None,
    ) -> None:
        try:
            broker.publish(app, spec, row["id"], 1, countdown=countdown, priority=row["priority"])
        except Exception as exc:
            self.store.fail_unpublished(row["id"], _publish_error(exc))
            raise errors.BrokerUnavailable(
                f"run {row['id']} could not be queued ({exc}); is the broker up? "
                "(`jobsys up`, or check JOBSYS_BROKER_URL)"
            ) from exc

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

    def status(self, run_id: str) -> runs.RunRecord:
        """The run's record; another tenant's run is not found, one of a job this principal
        may not ``read`` is denied."""
        record = self.store.get(run_id, self.principal.tenant)
        self.allow("read", record.job, target=run_id)
        return self.shown(record, readable=True)

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
            except celery_api.ResultTimeout:
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
    ) -> list[runs.RunRecord]:
        """Runs of this principal's tenant, newest first. ``search`` keeps the runs whose
        error or logs hold all its keywords, or whose job's name, description or tags do;
        ``schedule_id``, ``workflow_id`` and ``parent_id`` the runs a schedule made, the steps
        of a workflow run, the runs made from a run (its retries)."""
        run_state = errors.choice(runs.RunState, state, "runs.list")
        found = self.store.select(
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
                text=search,
                text_jobs=self.registry.matching(search) if search else (),
                jobs=self.visible_jobs(),
                limit=limit,
            )
        )
        readable = {job: self.may_read(job) for job in {r.job for r in found}}
        return [self.shown(r, readable[r.job]) for r in found]

    # --- steering --------------------------------------------------------------------------

    def cancel(self, run_id: str) -> Cancelled:
        """A waiting run never starts; a running one is stopped and ends cancelled.

        The record is what cancels: a worker checks it before starting a run and while it
        runs. Telling the broker (waking waiters, releasing dependent runs) comes after; if
        the broker cannot be reached the run is cancelled all the same, and the answer
        carries a warning saying what is left to happen."""
        self.allow("update", self.status(run_id).job, target=run_id)
        record = self.shown(self.store.request_cancel(run_id, self.principal.tenant))
        self.audit.record(self.principal, "cancel", run_id, "allowed", f"job {record.job}")
        if record.state is not runs.RunState.CANCELLED:
            return Cancelled(record)
        released = [  # runs waiting on it fail, or run anyway
            r for d in self.store.dependents(run_id) if (r := self.store.release(d)) is not None
        ]
        try:
            broker.store_result(self.app, run_id, "REVOKED", None, retry=False)
            for r in released:
                broker.republish(self.app, self.registry, r)
        except Exception as exc:  # the record is cancelled: report it, do not fail
            return Cancelled(record, _unannounced(run_id, exc, bool(released)))
        return Cancelled(record)

    def retry(self, run_id: str) -> str:
        """Submit a failed or cancelled run again, as a new run whose parent is the old one."""
        record = self.status(run_id)
        if record.state not in (runs.RunState.FAILED, runs.RunState.CANCELLED):
            raise errors.InvalidTransition(run_id, record.state.value, "retry")
        return self.submit(
            record.job,
            self.revealed(record.input, record.sealed),
            SubmitOptions(tags=tuple(record.tags), metadata=record.meta, parent_id=record.id),
        )

    def close(self) -> None:
        """Release the connections of this client (database pool, broker, result backend)."""
        if self._app is not None:
            self._app.close()
        self.store.close()


def waiting_message(record: runs.RunRecord) -> str | None:
    """Why a waiting run waits, when a worker said (``RunRecord.waiting``)."""
    if record.waiting and record.state in runs.WAITING:
        message = record.waiting.get("message")
        return str(message) if message else None
    return None


def _unknown(*_: Any) -> None:
    raise errors.UnknownJob("(a job this process does not load)", [])


def _publish_error(exc: Exception) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": f"could not publish: {exc}",
        "reason": "enqueue_error",
        "traceback": None,
    }


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
