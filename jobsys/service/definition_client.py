"""``Client.definitions``: register and remove jobs at runtime, from data only.

A definition belongs to the caller's tenant: names are unique per tenant, resolved per
tenant, and another tenant's definitions are not found. Only its owner (the principal that
first registered it) or an admin of the tenant may replace or remove one. Who may register:
an alias needs ``create`` (and to remove it, ``delete``) on the job it aliases, a workflow
those actions on every job of its steps; an HTTP-call job, which reaches outside the
cluster, needs an admin role. Reads never show a secret header. Every registration and
removal (and every refusal) is in the audit log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobsys.base import errors, sealing
from jobsys.declare import cadence, definitions, http_jobs, jobs, workflows
from jobsys.store import definition_store

if TYPE_CHECKING:
    from jobsys.service.client import Client

Parsed = definitions.AliasDefinition | definitions.HttpDefinition | definitions.WorkflowDefinition


class DefinitionClient:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._store = definition_store.DefinitionStore(client.store.engine)

    @property
    def _tenant(self) -> str:
        return self._client.principal.tenant

    def register(self, data: Any) -> dict[str, Any]:
        """Add a job to this tenant (or replace one registered before under that name, if
        this principal owns it or is an admin); its record."""
        d = definitions.parse(data)
        registry = self._client.registry
        if not registry.is_dynamic(d.name):
            raise errors.JobDeclarationError(
                d.name, "name", "a job or workflow of the catalog has this name; pick another"
            )
        self._allow("create", d)
        current = self._store.find(self._tenant, d.name)
        live = current if current is not None and current.removed_at is None else None
        if live is not None:
            self._owner_only("replace", live)
        # Everything that can refuse it is checked before anything is stored.
        spec = self._build(d)
        schedule = self._schedule_of(d)
        if schedule is not None and spec is not None:
            self._client.schedules.check(spec, schedule)
        stored, sealed = self._sealed(d, live)
        record = self._store.put(self._tenant, stored, self._who, sealed, current)
        registry.refresh(force=True)
        self._replace_schedule(d.name, schedule)
        self._client.audit.record(
            self._client.principal, "register", d.name, "allowed", f"{d.kind} v{record.version}"
        )
        return record.to_json()

    def remove(self, name: str) -> None:
        """Remove a registered job: it can no longer be submitted, its schedule is deleted,
        and its runs still waiting end failed when a worker takes them."""
        record = self._store.get(self._tenant, name)
        self._allow("delete", definitions.parse(record.data))
        self._owner_only("remove", record)
        self._replace_schedule(name, None)
        self._store.remove(self._tenant, name)
        self._client.registry.refresh(force=True)
        self._client.audit.record(self._client.principal, "remove", name, "allowed", record.kind)

    def get(self, name: str) -> dict[str, Any]:
        """One definition of this tenant (secret headers masked); a job this principal may
        not ``list`` is denied, as ``GET /jobs/{name}`` is."""
        record = self._store.get(self._tenant, name)
        if name in self._client.registry:
            self._client.allow("list", name)
        return record.to_json()

    def list(self) -> list[dict[str, Any]]:
        """The definitions of this tenant whose jobs this principal may ``list``."""
        visible = self._client.visible_jobs()
        return [
            r.to_json()
            for r in self._store.all(self._tenant)
            if visible is None or r.name in visible or r.kind == "workflow"
        ]

    @property
    def _who(self) -> str:
        return self._client.principal.id

    def _owner_only(self, action: str, record: definition_store.DefinitionRecord) -> None:
        client = self._client
        who = client.principal
        if who.id == record.owner or client.policy.is_admin(who):
            return
        client.audit.record(who, action, record.name, "denied", f"owned by {record.owner}")
        raise errors.NotOwner(who.id, action, record.name, record.owner)

    def _sealed(
        self, d: Parsed, live: definition_store.DefinitionRecord | None
    ) -> tuple[dict[str, Any], str | None]:
        """The definition as stored (secret header values masked), and those values sealed.
        A value given as ``**********`` keeps the one registered before."""
        data = d.model_dump(mode="json", exclude_none=True)
        if not isinstance(d, definitions.HttpDefinition) or not d.secret_headers:
            return data, None
        sealer = self._client.sealer
        before = sealer.open(live.sealed) if live is not None and live.sealed else {}
        values, problems = {}, []
        for name, value in d.secret_headers.items():
            if value != sealing.REDACTED:
                values[name] = value
            elif name in before:
                values[name] = before[name]
            else:
                problems.append(
                    {
                        "loc": ["secret_headers", name],
                        "msg": "give its value: ********** keeps a value registered before, "
                        "and there is none",
                        "type": "value_error",
                    }
                )
        if problems:
            raise errors.InvalidInput(d.name, problems, "definition")
        data["secret_headers"] = dict.fromkeys(values, sealing.REDACTED)
        return data, sealer.seal(values)

    def _allow(self, action: str, d: Parsed) -> None:
        client = self._client
        if isinstance(d, definitions.AliasDefinition):
            client.allow(action, d.target, target=d.name)
        elif isinstance(d, definitions.WorkflowDefinition):
            for step in d.workflow.get("steps") or ():
                if isinstance(step, dict) and isinstance(step.get("job"), str):
                    client.allow(action, step["job"], target=d.name)
        elif not client.policy.is_admin(client.principal):
            client.audit.record(client.principal, action, d.name, "denied", "http job")
            raise errors.PermissionDenied(client.principal.id, action, d.name)

    def _build(self, d: Parsed) -> jobs.JobSpec | None:
        """Build it as every process will, so that what cannot run is refused now; the job
        (``None`` for a workflow)."""
        registry, settings = self._client.registry, self._client.settings
        if isinstance(d, definitions.AliasDefinition):
            if registry.is_dynamic(d.target) and d.target in registry:
                raise errors.JobDeclarationError(
                    d.name, "target", f"{d.target} is registered at runtime: alias a catalog job"
                )
            return definitions.build_alias(d, registry)
        if isinstance(d, definitions.HttpDefinition):
            http_jobs.check_http(d)
            return http_jobs.build_http(d, settings.http_job_hosts)
        wf = definitions.build_workflow(d, registry)
        workflows.refuse_secret_literals(wf, registry)
        return None

    def _schedule_of(self, d: Parsed) -> cadence.ScheduleSpec | None:
        if not isinstance(d, definitions.AliasDefinition) or d.schedule is None:
            return None
        args = dict(d.schedule)
        kind = args.pop("kind", None) or _kind_of(args)
        try:
            return cadence.schedule(kind, **args)
        except TypeError as exc:
            raise errors.InvalidSchedule("schedule", str(exc)) from None

    def _replace_schedule(self, name: str, schedule: cadence.ScheduleSpec | None) -> None:
        """The schedule a definition brings is named after it; re-registering replaces it."""
        sc = self._client.schedules
        for record in sc.list(job=name):
            if record.name == _schedule_name(name):
                sc.delete(record.id)
        if schedule is not None:
            sc.create(name, schedule, name=_schedule_name(name))


def _schedule_name(job: str) -> str:
    return f"definition:{job}"


def _kind_of(args: dict[str, Any]) -> str:
    for key, kind in (("cron", "cron"), ("every", "interval"), ("at", "once")):
        if args.get(key) is not None:
            return kind
    raise errors.InvalidSchedule("schedule", "give one of every, cron or at (or a kind)")
