"""What the interfaces show of the service layer's objects: one JSON shape each, shared by the
CLI (``--json``), the HTTP API and the MCP tools, so they agree.

Listing and describing jobs live here too, with their one visibility rule and their one set of
filters: ``jobsys jobs list/show``, ``GET /api/v1/jobs[/{name}]`` and the MCP tools
``list_jobs``/``describe_job`` are thin adapters over ``list_jobs`` and ``describe_job``.

* Visibility: a principal sees the jobs whose ``list`` rule allows it (``Client.job_specs``);
  describing any other job is ``PermissionDenied`` (recorded in the audit log), an unknown
  one ``UnknownJob``. Workflows are listed to every principal (running one still checks each
  step's job).
* Filters, all optional and combined with "and": ``tag`` (the job has it), ``labels`` (each
  ``key=value`` matches that value, each bare ``key`` any value of that label) and ``query``
  (keywords the job's name, description, tags or labels hold as whole words). Workflows have
  no tags or labels: a tag or label filter lists none; ``query`` matches their name and
  description.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from jobsys.base import errors, keywords
from jobsys.declare import definitions, jobs, workflows
from jobsys.declare.spec import DEFAULT_LEASE
from jobsys.service.client import Client

MAY = ("execute", "create", "update", "delete", "pause")
"""The actions a job's view says the caller may do (``may``: a hint, the checks still decide)."""


def spec_json(spec: jobs.JobSpec) -> dict[str, Any]:
    """A job as every interface shows it (without the caller's ``may``)."""
    return {
        "name": spec.name,
        "kind": definitions.kind_of(spec),
        "description": spec.description,
        "version": spec.version,
        "tags": list(spec.tags),
        "labels": dict(spec.labels),
        "queue": spec.queue,
        "priority": spec.priority,
        "timeout": spec.timeout,
        "hidden": spec.hidden,
        "retry": {
            "max_attempts": spec.retry.max_attempts,
            "initial_backoff": spec.retry.initial_backoff,
            "multiplier": spec.retry.multiplier,
            "max_backoff": spec.retry.max_backoff,
            "jitter": spec.retry.jitter,
        },
        # Its flow limits (``max_concurrency``, ``concurrency_key``, ``per_key``, ``rate``,
        # ``rate_key``), those it declares; empty when it has none.
        "limits": spec.flow.describe() if spec.flow is not None else {},
        # An external job's lease: how long the actor that took a run may stay silent.
        **({"lease": spec.lease or DEFAULT_LEASE} if spec.external else {}),
        # Its own retention (``keep_completed`` ...), those it declares; empty: the global
        # settings (``JOBSYS_KEEP_*``) apply.
        "retention": spec.retention.to_json() if spec.retention is not None else {},
        "input_schema": spec.input_schema(),
        "output_schema": spec.output_schema(),
    }


def job_json(spec: jobs.JobSpec, c: Client) -> dict[str, Any]:
    """A job as ``c``'s principal is shown it: ``spec_json`` and what it may do (``may``)."""
    return {**spec_json(spec), "may": {a: c.policy.may(c.principal, a, spec) for a in MAY}}


def edges(wf: workflows.Workflow) -> list[list[str]]:
    """The workflow's DAG as ``[from, to]`` pairs of step names."""
    return [[dep, s.name] for s in wf.steps for dep in s.depends_on]


def workflow_json(wf: workflows.Workflow, registry: jobs.Registry) -> dict[str, Any]:
    """A workflow as declared (``kind``: ``code``, or ``workflow`` if registered at runtime)."""
    data = wf.to_data()
    return {
        "name": wf.name,
        "description": wf.description,
        "kind": "workflow" if registry.is_dynamic(wf.name) else "code",
        "timeout": data["timeout"],
        "failure": data["failure"],
        "steps": data["steps"],
        "edges": edges(wf),
        "input_schema": wf.input_model.model_json_schema(),
    }


# --- listing and describing jobs -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing keeps (see the module's docstring); ``parse`` builds one."""

    tag: str | None = None
    labels: tuple[tuple[str, str | None], ...] = ()
    """``(key, value)``; ``value`` ``None`` for a bare ``key`` (any value)."""
    words: frozenset[str] = frozenset()

    @classmethod
    def parse(
        cls, tag: str | None = None, labels: Iterable[str] = (), query: str | None = None
    ) -> JobFilter:
        """The filter of the interfaces' parameters; ``InvalidInput`` for a label without a
        key (``=value``, or empty)."""
        wanted: list[tuple[str, str | None]] = []
        for i, item in enumerate(labels):
            key, sep, value = item.partition("=")
            if not key:
                problem = "must be key or key=value (the key is missing)"
                raise errors.InvalidInput(
                    "jobs", [{"loc": ["label", i], "msg": problem, "type": "value_error"}], "filter"
                )
            wanted.append((key, value if sep else None))
        return cls(tag or None, tuple(wanted), frozenset(keywords.words(query or "")))

    @property
    def by_metadata(self) -> bool:
        """A tag or label filter: workflows (which have neither) never match."""
        return bool(self.tag or self.labels)

    def keeps(self, spec: jobs.JobSpec) -> bool:
        if self.tag and self.tag not in spec.tags:
            return False
        for key, value in self.labels:
            if key not in spec.labels or (value is not None and spec.labels[key] != value):
                return False
        return not self.words or jobs.holds_words(spec, self.words)

    def keeps_workflow(self, wf: workflows.Workflow) -> bool:
        if self.by_metadata:
            return False
        return not self.words or self.words <= set(keywords.words(f"{wf.name} {wf.description}"))


@dataclasses.dataclass(frozen=True)
class JobListing:
    """The jobs (in the registry's order) and workflows (by name) a principal is listed."""

    jobs: Sequence[jobs.JobSpec]
    workflows: Sequence[workflows.Workflow]


def list_jobs(c: Client, where: JobFilter, include_hidden: bool = False) -> JobListing:
    """The jobs ``c``'s principal may see that ``where`` keeps (hidden ones only with
    ``include_hidden``), and the workflows it keeps."""
    found = [s for s in c.job_specs(include_hidden) if where.keeps(s)]
    flows = [wf for _, wf in sorted(c.registry.workflows.items()) if where.keeps_workflow(wf)]
    return JobListing(found, flows)


def listing_json(c: Client, listing: JobListing) -> dict[str, Any]:
    """``{"jobs": [job_json...], "workflows": [workflow_json...]}``."""
    return {
        "jobs": [job_json(s, c) for s in listing.jobs],
        "workflows": [workflow_json(wf, c.registry) for wf in listing.workflows],
    }


def describe_job(c: Client, name: str) -> dict[str, Any]:
    """One job as ``c``'s principal is shown it (``UnknownJob``; ``PermissionDenied`` unless
    its ``list`` rule allows the principal, recorded in the audit log)."""
    spec = c.job_spec(name)
    # the pauses that hold its runs (its own, its queue's, everything's): ``Client.pauses``
    return {**job_json(spec, c), "paused": [p.to_json() for p in c.pauses.job(spec.name)]}
