"""``Client.schedules``: create, change, pause, resume, trigger and delete schedules.

Schedules belong to the tenant of the principal that creates them, and their runs act as that
principal. Input is validated against the job's schema when the schedule is created or
changed, so a fire never carries input the job would refuse.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Any

import pydantic

from jobsys.base import errors
from jobsys.declare import cadence, jobs, previews, workflows
from jobsys.scheduling import firing
from jobsys.store import runs, schedules

if TYPE_CHECKING:
    from jobsys.service.client import Client


class ScheduleClient:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._store = client.store.schedules

    @property
    def _tenant(self) -> str:
        return self._client.principal.tenant

    def create(
        self,
        job: str,
        definition: cadence.ScheduleSpec,
        name: str | None = None,
        description: str | None = None,
        paused: bool = False,
    ) -> schedules.ScheduleRecord:
        """A new active schedule of ``job`` (see ``jobsys.every``, ``cron``, ``once``,
        ``ongoing`` for definitions); ``paused``: made inactive, to resume later."""
        checked, sealed = self._checked(job, definition)
        registry = self._client.registry
        if self._is_workflow(job):
            for step in registry.workflow(job).steps:  # its fires run them as this principal
                self._client.allow("execute", step.job, target=job)
        else:
            self._allow_job(registry.get(job), checked.input)
        return self._store.create(
            job,
            checked,
            self._client.principal,
            name=name,
            sealed=sealed,
            description=description,
            paused=paused,
        )

    def check(self, spec: jobs.JobSpec, definition: cadence.ScheduleSpec) -> None:
        """Raise what ``create`` would raise for a schedule of ``spec``, a job not registered
        yet: a job definition that brings a schedule is stored only with it."""
        checked, _ = self._checked_job(spec, definition)
        self._allow_job(spec, checked.input)

    def _allow_job(self, spec: jobs.JobSpec, input: Any) -> None:
        self._client.allow("create", spec, input)
        self._client.allow("execute", spec, input)  # fires run as this principal

    def update(
        self, schedule_id: str, description: str | None = None, **changes: Any
    ) -> schedules.ScheduleRecord:
        """A new version with ``changes`` to the definition: any argument of
        ``jobsys.declare.cadence.schedule`` (``every``, ``cron``, ``timezone``, ``input``,
        ``max_runs``, ``overlap`` ...), and a new ``description`` if given. Changing the cadence
        starts it afresh from now."""
        current = self.get(schedule_id)
        self._client.allow("update", current.job, target=schedule_id)
        base = _flatten(current.definition)
        under = ("input",) if self._is_workflow(current.job) else ()
        base["input"] = self._client.revealed(current.input, current.sealed, under)
        if changes.get("kind", base["kind"]) != base["kind"]:  # a new kind of cadence
            for field in ("at", "every", "cron", "timezone"):
                base.pop(field, None)
        merged = {**base, **changes}
        definition = cadence.schedule(**merged)
        checked, sealed = self._checked(current.job, definition)
        return self._store.update(
            schedule_id,
            checked,
            self._client.principal,
            self._tenant,
            sealed=sealed,
            description=description,
        )

    def get(self, schedule_id: str) -> schedules.ScheduleRecord:
        """Another tenant's schedule is not found; one of a job this principal may not
        ``read`` is denied."""
        record = self._store.get(schedule_id, self._tenant)
        self._client.allow("read", record.job, target=schedule_id)
        return record

    def list(
        self,
        state: str | None = None,
        job: str | None = None,
        limit: int = 100,
        name: str | None = None,
        next_after: dt.datetime | None = None,
        next_before: dt.datetime | None = None,
        archived: bool | None = False,
    ) -> list[schedules.ScheduleRecord]:
        """This tenant's schedules of the jobs this principal may list, newest first;
        ``name``: whose name holds it; ``next_after``/``next_before``: whose next fire is in
        that range; ``archived``: archived ones only (``True``), or both (``None``)."""
        chosen = errors.choice(schedules.ScheduleState, state, "schedules.list")
        return self._store.select(
            self._tenant,
            chosen,
            job,
            limit,
            self._client.visible_jobs(),
            name=name,
            next_after=next_after,
            next_before=next_before,
            archived=archived,
        )

    def nearest(self, text: str, limit: int = 20) -> builtins.list[tuple[str, float]]:
        """The ids of this tenant's schedules of the jobs this principal may list whose name
        and description are most like ``text`` in meaning, best first, with their scores
        (needs an embedder: ``SemanticSearchOff`` otherwise)."""
        c = self._client
        return c.store.semantic.nearest_schedules(
            self._tenant,
            c.visible_jobs(),
            c.query_vector(text),
            c.settings.semantic_min_score,
            limit,
        )

    def versions(self, schedule_id: str) -> builtins.list[dict[str, Any]]:
        self.get(schedule_id)  # tenant check
        return self._store.versions(schedule_id)

    def pause(self, schedule_id: str) -> schedules.ScheduleRecord:
        self._client.allow("update", self.get(schedule_id).job, target=schedule_id)
        return self._store.pause(schedule_id, self._tenant)

    def resume(self, schedule_id: str) -> schedules.ScheduleRecord:
        self._client.allow("update", self.get(schedule_id).job, target=schedule_id)
        return self._store.resume(schedule_id, self._tenant)

    def delete(self, schedule_id: str) -> schedules.ScheduleRecord:
        """It never fires again (state ``cancelled``); its runs keep their history."""
        job = self.get(schedule_id).job
        self._client.allow("delete", job, target=schedule_id)
        record = self._store.cancel(schedule_id, self._tenant)
        who = self._client.principal
        self._client.audit.record(who, "delete schedule", schedule_id, "allowed", f"job {job}")
        return record

    def trigger(self, schedule_id: str, version: int | None = None) -> str:
        """Fire once now (trigger ``manual``) without disturbing the cadence; the run id.
        ``version``: fire that version of the schedule (its input and metadata)."""
        current = self.get(schedule_id)
        given = current
        if version is not None and version != current.version:
            given = firing.versioned(self._store, current, version)
        self._client.allow("execute", current.job, given.input, target=schedule_id)
        fired = firing.Firing(self._store).trigger(
            schedule_id, self._client.registry, self._tenant, version=version
        )
        if fired.spec is not None and fired.run is not None:
            self._client.publish_row(fired.spec, fired.run)
        else:
            self._client.workflows.start(fired.id)
        return fired.id

    def preview(
        self, schedule_id: str, count: int = 10, timezone: str | None = None
    ) -> builtins.list[previews.Fire]:
        """The next ``count`` fires of a schedule, from its next one, as beat will make them
        (without jitter), with notes where a daylight-saving change moves one; none once it is
        over or cancelled; at most the runs ``max_runs`` leaves."""
        record = self.get(schedule_id)
        if record.nominal_at is None or record.state in (
            schedules.ScheduleState.COMPLETED,
            schedules.ScheduleState.CANCELLED,
        ):
            return []
        d = record.definition
        if d.options.max_runs is not None:
            count = min(count, max(0, d.options.max_runs - record.run_count))
        return previews.preview(d.cadence, count, runs.utcnow(), timezone, first=record.nominal_at)

    def clear(self, dry_run: bool = False) -> builtins.list[schedules.ScheduleRecord]:
        """Admins only: cancel every schedule of this admin's own tenant made at runtime (not
        those declared in code); ``dry_run``: only say which. The schedules cleared."""
        who = self._client.principal
        if not self._client.policy.is_admin(who):
            self._client.audit.record(who, "clear schedules", "*", "denied", "needs an admin role")
            raise errors.PermissionDenied(
                who.id, "clear", "the schedules of its tenant", "needs an admin role"
            )
        found = self._store.clear(self._tenant, dry_run=dry_run)
        if not dry_run:
            detail = f"{len(found)} schedules of tenant {self._tenant}"
            self._client.audit.record(who, "clear schedules", "*", "allowed", detail)
        return found

    def _is_workflow(self, target: str) -> bool:
        registry = self._client.registry
        return target not in registry and target in registry.workflows

    def _checked(
        self, job: str, definition: cadence.ScheduleSpec
    ) -> tuple[cadence.ScheduleSpec, str | None]:
        """The definition with its input validated (secrets redacted), and the secrets. A
        schedule's target is a job or a workflow of the catalog."""
        registry = self._client.registry
        problems = runs.nul_errors({"input": definition.input, "metadata": definition.metadata})
        if problems:
            raise errors.InvalidInput(job, problems, "schedule")
        if self._is_workflow(job):
            wf = registry.workflow(job)
            try:
                model = wf.input_model.model_validate(definition.input)
            except pydantic.ValidationError as exc:
                raise errors.InvalidInput(job, errors.field_errors(exc)) from None
            # Sealed as a workflow run seals them: its fires copy them as they are.
            payload, hidden = workflows.split(wf, model, registry)
            return dataclasses.replace(definition, input=payload), self._client.sealer.seal(hidden)
        return self._checked_job(registry.get(job), definition)

    def _checked_job(
        self, spec: jobs.JobSpec, definition: cadence.ScheduleSpec
    ) -> tuple[cadence.ScheduleSpec, str | None]:
        problems = runs.nul_errors({"input": definition.input, "metadata": definition.metadata})
        if problems:
            raise errors.InvalidInput(spec.name, problems, "schedule")
        payload, sealed = self._client.validate_input(spec, definition.input)
        return dataclasses.replace(definition, input=payload), sealed


def _flatten(d: cadence.ScheduleSpec) -> dict[str, Any]:
    """A definition as the keyword arguments of ``cadence.schedule``."""
    c = d.cadence.to_json()
    return {
        **c,
        "input": d.input,
        "metadata": d.metadata,
        **d.options.to_json(),
    }
