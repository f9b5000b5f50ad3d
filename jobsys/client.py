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
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout

from jobsys import broker, config, errors, execute, jobs, permissions, runs
from jobsys.schedule_client import ScheduleClient

MAX_COUNTDOWN_SECONDS = 3600.0
"""A delayed message waits in a worker's memory until it is due; later starts are schedules."""


@dataclasses.dataclass(frozen=True)
class SubmitOptions:
    """How to submit, kept apart from the job's input."""

    idempotency_key: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] | None = None
    countdown: float | None = None
    """Seconds to wait before the run may start (at most ``MAX_COUNTDOWN_SECONDS``)."""
    priority: int | None = None
    parent_id: str | None = None


class Client:
    """Submit and follow runs. One per process; thread-safe."""

    def __init__(
        self,
        settings: config.Settings,
        registry: jobs.Registry | None = None,
        principal: permissions.Principal = permissions.LOCAL,
        store: runs.RunStore | None = None,
        app: Celery | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else jobs.load_registry(settings.catalog)
        self.principal = principal
        self.store = store or runs.RunStore.open(settings.database_url)
        self._app = app

    @functools.cached_property
    def schedules(self) -> ScheduleClient:
        """Create and steer schedules (see ``jobsys.every``, ``cron``, ``once``, ``ongoing``)."""
        return ScheduleClient(self)

    @property
    def app(self) -> Celery:
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
        spec = self.registry.get(job)
        payload = self.validate_input(spec, input)
        row = self._row(spec, payload, options, principal or self.principal)
        app = self.app  # a configuration error must surface before anything is recorded
        if not self.store.insert([row]):  # the idempotency key is taken: that run is the answer
            assert options.idempotency_key is not None
            existing = self.store.find_key(row["tenant"], options.idempotency_key)
            assert existing is not None
            return existing.id
        self._publish(app, spec, row, options.countdown)
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
        spec = self.registry.get(job)
        who = principal or self.principal
        rows = []
        for index, value in enumerate(inputs):
            try:
                rows.append(self._row(spec, self.validate_input(spec, value), options, who))
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
        self, spec: jobs.JobSpec, payload: Any, options: SubmitOptions, who: permissions.Principal
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
            "meta": dict(options.metadata or {}),
            "tags": sorted(set(spec.tags) | set(options.tags)),
            "principal": who.model_dump(mode="json"),
            "principal_id": who.id,
            "tenant": who.tenant,
            "idempotency_key": options.idempotency_key,
            "parent_id": options.parent_id,
        }

    def validate_input(
        self, spec: jobs.JobSpec, input: Mapping[str, Any] | pydantic.BaseModel
    ) -> Any:
        try:
            if isinstance(input, pydantic.BaseModel):
                input = input.model_dump(mode="json")
            model = spec.input_model.model_validate(input)
        except pydantic.ValidationError as exc:
            raise errors.InvalidInput(spec.name, execute.field_errors(exc)) from None
        return model.model_dump(mode="json")

    def _check_options(self, spec: jobs.JobSpec, options: SubmitOptions) -> None:
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

    def publish_row(self, spec: jobs.JobSpec, row: dict[str, Any]) -> None:
        """Publish a run recorded elsewhere (a triggered schedule)."""
        self._publish(self.app, spec, row, None)

    def _publish(
        self, app: Celery, spec: jobs.JobSpec, row: dict[str, Any], countdown: float | None
    ) -> None:
        try:
            broker.publish(
                app,
                spec,
                row["id"],
                1,
                row["input"],
                row["principal"],
                countdown=countdown,
                priority=row["priority"],
            )
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
        return self.store.get(run_id, self.principal.tenant)

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
                raise errors.WaitTimeout(run_id, timeout)
            if signalled:
                time.sleep(min(0.2, remaining))
                continue
            try:
                pending.get(
                    timeout=min(poll, remaining), propagate=False, disable_sync_subtasks=False
                )
            except CeleryTimeout:
                continue
            signalled = True

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
    ) -> list[runs.RunRecord]:
        """Runs of this principal's tenant, newest first. ``search`` keeps the runs whose
        error or logs hold all its keywords, or whose job's name, description or tags do."""
        try:
            run_state = runs.RunState(state) if state else None
        except ValueError:
            choices = ", ".join(s.value for s in runs.RunState)
            raise errors.InvalidInput(
                "runs.list",
                [{"loc": ["state"], "type": "enum", "msg": f"must be one of {choices}"}],
                "filter",
            ) from None
        return self.store.select(
            runs.RunFilter(
                job=job,
                state=run_state,
                since=since,
                until=until,
                tag=tag,
                principal_id=principal_id,
                tenant=self.principal.tenant,
                text=search,
                text_jobs=self.registry.matching(search) if search else (),
                limit=limit,
            )
        )

    # --- steering --------------------------------------------------------------------------

    def cancel(self, run_id: str) -> runs.RunRecord:
        """A waiting run never starts; a running one is stopped and ends cancelled."""
        record = self.store.request_cancel(run_id, self.principal.tenant)
        if record.state is runs.RunState.CANCELLED:
            broker.store_result(self.app, run_id, "REVOKED", None)
        return record

    def retry(self, run_id: str) -> str:
        """Submit a failed or cancelled run again, as a new run whose parent is the old one."""
        record = self.status(run_id)
        if record.state not in (runs.RunState.FAILED, runs.RunState.CANCELLED):
            raise errors.InvalidTransition(run_id, record.state.value, "retry")
        return self.submit(
            record.job,
            record.input,
            SubmitOptions(tags=tuple(record.tags), metadata=record.meta, parent_id=record.id),
        )

    def close(self) -> None:
        """Release the connections of this client (database pool, broker, result backend)."""
        if self._app is not None:
            self._app.close()
        self.store.close()


def _publish_error(exc: Exception) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": f"could not publish: {exc}",
        "reason": "enqueue_error",
        "traceback": None,
    }
