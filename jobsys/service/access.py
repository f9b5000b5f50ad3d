"""``Access``: what a client's principal may see and do: the first part of ``Client``
(permissions, visibility, and how a run is shown to the reader)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pydantic

from jobsys.base import errors
from jobsys.declare import jobs, permissions
from jobsys.store import audit, runs, stores


class Access:
    """The permission checks of one principal over one registry (``Client``'s)."""

    principal: permissions.Principal
    registry: jobs.Registry
    """The catalog and the jobs this principal's tenant registered at runtime: every name
    this client is given resolves here."""
    policy: permissions.Policy
    audit: audit.AuditLog
    store: stores.Store

    def status(self, run_id: str) -> runs.RunRecord:
        """The run's record; another tenant's run is not found, one of a job this principal
        may not ``read`` is denied."""
        record = self.store.get(run_id, self.principal.tenant)
        self.allow("read", record.job, target=run_id)
        return self.shown(record, readable=True)

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


def _unknown(*_: Any) -> None:
    raise errors.UnknownJob("(a job this process does not load)", [])
