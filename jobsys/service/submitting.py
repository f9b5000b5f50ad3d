"""``Submitting``: validating, recording and publishing new runs: the second part of
``Client``. Input is validated before anything is recorded or queued; the run row
(``rows.new_run``) is committed before its message is published, so a run lost in transit
is still visible (and the reconciler publishes it again). A run due later than the delay
horizon (``submit_options.py``) is only recorded: a worker's reaper publishes it when due."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pydantic

from jobsys.base import config, errors, sealing
from jobsys.declare import jobs, permissions
from jobsys.engine import outbox
from jobsys.service import submit_options
from jobsys.service.access import Access
from jobsys.service.submit_options import MAX_COUNTDOWN_SECONDS, Start, SubmitOptions
from jobsys.store import rows, runs, stores

if TYPE_CHECKING:
    from jobsys.engine import celery_api

__all__ = ["MAX_COUNTDOWN_SECONDS", "NOT_QUEUED", "SubmitOptions", "Submitting"]

NOT_QUEUED = {
    "reason": "not_queued",
    "message": "recorded, not yet queued: the broker did not answer; queued when it is back",
}
"""Why a run kept by the outbox waits (``RunRecord.waiting``)."""


class Submitting(Access):
    """Submit runs: validate, record, publish."""

    settings: config.Settings
    store: stores.Store
    _app: celery_api.Celery | None

    @property
    def app(self) -> celery_api.Celery:
        """The Celery app, made on first use. The engine (Celery, kombu, redis) is imported
        here and where messages are sent, not at start: a CLI command that only reads the
        store starts about 0.3 s sooner without it."""
        if self._app is None:
            from jobsys.engine import broker

            self._app = broker.make_celery(self.settings, self.registry)
        return self._app

    @functools.cached_property
    def outbox(self) -> outbox.Outbox:
        """This client's runs recorded but not yet on the broker (``engine/outbox.py``)."""
        return outbox.Outbox(
            claim=self.store.claim_publish,
            published=self.store.mark_queued,
            unclaim=lambda run_id: self.store.unclaim_publish(run_id, None),
        )

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
        now = runs.utcnow()
        start = self._start(spec, options, now)
        blocked = bool(options.depends_on)
        who = principal or self.principal
        row = self._row(spec, payload, sealed, options, who, now, start, blocked)
        app = self.app  # a configuration error must surface before anything is recorded
        if blocked:
            return self._submit_blocked(spec, row, options, start)
        if not self.store.insert([row]):  # the idempotency key is taken: that run is the answer
            return self._existing(spec, row, options)
        if not start.held:  # (a held run waits in the store: a reaper publishes it when due)
            self._publish(app, spec, row, start.countdown(), options.require_queued)
        return str(row["id"])

    def _existing(self, spec: jobs.JobSpec, row: dict[str, Any], options: SubmitOptions) -> str:
        """The run already recorded under this submit's idempotency key."""
        assert options.idempotency_key is not None
        existing = self.store.find_key(row["tenant"], spec.name, options.idempotency_key)
        assert existing is not None
        return existing.id

    def _start(self, spec: jobs.JobSpec, options: SubmitOptions, now: dt.datetime) -> Start:
        """When the run may start (``submit_options.check``: bad options are refused)."""
        return submit_options.check(spec.name, options, now, self.settings.delay_horizon_seconds)

    def _submit_blocked(
        self, spec: jobs.JobSpec, row: dict[str, Any], options: SubmitOptions, start: Start
    ) -> str:
        for dependency in options.depends_on:
            self.status(dependency)  # exists, in this tenant, readable
        self.store.add_dependencies(row["id"], options.depends_on)
        if not self.store.insert([row]):  # the idempotency key is taken: that run is the answer
            self.store.drop_dependencies(row["id"])
            return self._existing(spec, row, options)
        # Its dependencies may be done already; a run due later than the horizon is then
        # held in the store instead (``release``).
        released = self.store.release(row["id"], self.settings.delay_horizon_seconds)
        if released is not None:
            self._publish(self.app, spec, row, start.countdown())
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
        now = runs.utcnow()
        start = self._start(spec, options, now)
        made: list[dict[str, Any]] = []
        for index, value in enumerate(inputs):
            try:
                payload, sealed = self.validate_input(spec, value)
                self.allow("execute", spec, payload, who=who)
                made.append(self._row(spec, payload, sealed, options, who, now, start))
            except errors.InvalidInput as exc:
                for e in exc.errors:
                    e["loc"] = [index, *e["loc"]]
                raise
        app = self.app
        from jobsys.engine import broker  # (loaded by ``self.app``: see there)

        self.store.insert(made)
        countdown = start.countdown()
        if start.held:  # they wait in the store: a reaper publishes them when due
            return [str(row["id"]) for row in made]
        if options.require_queued:
            try:
                broker.publish_many(app, [(spec, row) for row in made], countdown)
            except Exception as exc:
                self.store.discard_unqueued([row["id"] for row in made])
                raise errors.BrokerUnavailable(
                    f"{len(made)} runs could not be queued ({exc}) and were not kept "
                    "(require_queued); is the broker up?"
                ) from exc
            return [str(row["id"]) for row in made]
        try:
            if len(self.outbox):
                raise errors.BrokerUnavailable("runs submitted before wait for the broker")
            broker.publish_many(app, [(spec, row) for row in made], countdown)
        except Exception:  # kept, and sent in order when the broker is back
            self._keep_unqueued(app, spec, made, countdown)
        return [str(row["id"]) for row in made]

    def _row(
        self,
        spec: jobs.JobSpec,
        payload: Any,
        sealed: str | None,
        options: SubmitOptions,
        who: permissions.Principal,
        now: dt.datetime,
        start: Start,
        blocked: bool = False,
    ) -> dict[str, Any]:
        """The new run's row, made at ``now``, due at ``start``; ``blocked``: it waits for
        ``options.depends_on`` (named in its metadata, with ``run_anyway``)."""
        meta = {**spec.metadata, **(options.metadata or {})}
        if blocked:
            meta["depends_on"] = list(options.depends_on)
            if options.run_anyway:
                meta["run_anyway"] = True
        return rows.new_run(
            spec,
            payload,
            principal=who.model_dump(mode="json"),
            principal_id=who.id,
            tenant=who.tenant,
            now=now,
            meta=meta,
            tags=options.tags,
            sealed=sealed,
            priority=options.priority,
            due=start.due,
            held=start.held,
            blocked=blocked,
            idempotency_key=options.idempotency_key,
            parent_id=options.parent_id,
        )

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
        require_queued: bool = False,
    ) -> None:
        """Send a recorded run's message. When the broker does not answer (or runs submitted
        before wait for it in the outbox), the run stays recorded, pending and "not yet
        queued", and this client's outbox sends it when the broker is back; with
        ``require_queued``, the record is removed and ``BrokerUnavailable`` raised."""
        from jobsys.engine import broker  # (loaded by ``self.app``: see there)

        run_id = str(row["id"])
        send = functools.partial(
            broker.publish, app, spec, run_id, 1, countdown=countdown, priority=row["priority"]
        )
        if require_queued:
            try:
                send()
            except Exception as exc:
                self.store.discard_unqueued([run_id])
                raise errors.BrokerUnavailable(
                    f"run {run_id} could not be queued ({exc}) and was not kept "
                    "(require_queued); is the broker up? (`jobsys up`, or check "
                    "JOBSYS_BROKER_URL)"
                ) from exc
            return
        if not len(self.outbox):
            try:
                send(retry=False)
                return
            except Exception:
                pass
        self._keep_unqueued(app, spec, [row], countdown)

    def _keep_unqueued(
        self,
        app: celery_api.Celery,
        spec: jobs.JobSpec,
        made: list[dict[str, Any]],
        countdown: float | None,
    ) -> None:
        """Recorded runs the broker could not take (or that must not overtake runs waiting
        for it): say so in their records and give them to the outbox, in order."""
        from jobsys.engine import broker  # (loaded by ``self.app``: see there)

        self.store.mark_unqueued([row["id"] for row in made], NOT_QUEUED)
        self.outbox.add(
            [
                outbox.Pending(
                    str(row["id"]),
                    functools.partial(
                        broker.publish,
                        app,
                        spec,
                        str(row["id"]),
                        1,
                        countdown=countdown,
                        priority=row["priority"],
                        retry=False,
                    ),
                )
                for row in made
            ]
        )
