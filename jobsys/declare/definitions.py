"""Jobs registered at runtime: declarative definitions kept in the store, never code.

Three kinds, each built from data into the same ``JobSpec`` (or ``Workflow``) a catalog job
has, so submitting, permissions, retries, run records and every interface treat them alike:

- ``alias``: a job of the catalog under a new name, with bound input defaults, metadata and
  an optional schedule; it keeps the target's schema, body, limits and access rules;
- ``http``: one HTTP request to a URL whose host is on the allow-list
  (``JOBSYS_HTTP_JOB_HOSTS``), checked when the job is registered and again on every call.
  Credentials go in ``secret_headers`` (sealed like secret input, shown as ``**********``);
  a run may set only what the definition lets it (``overridable``: ``body``, ``query``;
  ``caller_headers``: header names), never the URL, the method or the definition's headers;
- ``workflow``: a workflow of registered jobs, in ``Workflow.to_data``'s shape.

A definition belongs to the tenant of the principal that registers it: its name is unique in
that tenant (and may not be a name of the catalog), it resolves only for principals, runs,
schedules and workflow runs of that tenant, and only its owner (the principal that first
registered it) or an admin of the tenant may replace or remove it.

``DefinitionStore`` keeps them (``jobsys_job_definitions``; a removal leaves a tombstone and
bumps the version, so every change moves the store's revision). A ``Registry`` with a
``Source`` attached looks them up when a name is not in its catalog and re-reads them when the
revision changes, so a worker started before a registration runs the new job without a restart.
Their runs are published under one Celery task, ``DYNAMIC_TASK``, that every worker has.
Building and calling an ``http`` job is in ``jobsys.declare.http_jobs``.
"""

from __future__ import annotations

import dataclasses
import logging
import types
from typing import Annotated, Any, Literal

import pydantic

from jobsys.base import errors, sealing
from jobsys.declare import flow, jobs, workflow_checks, workflows

log = logging.getLogger("jobsys.definitions")

DYNAMIC_TASK = "jobsys.dynamic"
"""The Celery task that runs every runtime-registered job (the run record names the job)."""

MODULE = "jobsys.definitions"
"""The ``module`` of a spec built from a definition: a marker that tells it from the catalog's
specs (which carry their module's name), not this module's path."""

Name = Annotated[str, pydantic.StringConstraints(pattern=jobs.NAME_RE.pattern, max_length=200)]
Tag = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=100)]


class _Base(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: Name
    description: str = pydantic.Field("", max_length=2000)
    tags: tuple[Tag, ...] = pydantic.Field((), max_length=50)
    labels: dict[Tag, Annotated[str, pydantic.StringConstraints(max_length=200)]] = {}


class _Limits(pydantic.BaseModel):
    """A definition's flow limits (``flow.declare`` checks them when it is built); an alias
    without any keeps its target's."""

    max_concurrency: int | None = None
    concurrency_key: str | None = None
    per_key: int | None = None
    rate: str | None = None
    rate_key: str | None = None

    def flow_limits(
        self, name: str, model: type[pydantic.BaseModel], inherited: flow.FlowLimits | None
    ) -> flow.FlowLimits | None:
        given = (self.max_concurrency, self.concurrency_key, self.per_key, self.rate)
        if all(v is None for v in (*given, self.rate_key)):
            return inherited
        return flow.declare(name, model, *given, self.rate_key)


class AliasDefinition(_Base, _Limits):
    kind: Literal["alias"]
    target: Name
    """A job of the catalog."""
    defaults: dict[str, Any] = {}
    """Input fields bound to a value (a run may still give its own)."""
    metadata: dict[str, Any] = {}
    """Metadata every run starts with."""
    schedule: dict[str, Any] | None = None
    """Arguments of ``jobsys.declare.cadence.schedule`` (``kind``, ``every``, ``cron``,
    ``timezone`` ...): a schedule of the alias created with it and deleted with it."""


HeaderName = Annotated[
    str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", max_length=100)
]
HeaderValue = Annotated[str, pydantic.StringConstraints(max_length=2000)]

MAX_HTTP_TIMEOUT = 3600.0
"""The longest an HTTP job's call may take, in seconds."""


class HttpDefinition(_Base, _Limits):
    kind: Literal["http"]
    url: Annotated[str, pydantic.StringConstraints(max_length=2000)]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[HeaderName, HeaderValue] = {}
    """Sent with every call and shown to whoever may read the definition: no credentials
    (``Authorization``, cookies, API keys and tokens go in ``secret_headers``)."""
    secret_headers: dict[HeaderName, HeaderValue] = {}
    """Sent with every call; sealed at rest and shown as ``**********``. Registering again
    with ``**********`` as a value keeps the value registered before."""
    overridable: tuple[Literal["body", "query"], ...] = ()
    """What a run's input may set: its JSON ``body``, extra ``query`` parameters (not those
    of the URL). Nothing by default."""
    caller_headers: tuple[HeaderName, ...] = ()
    """Header names a run's input may set (``headers``), never one the definition sets nor a
    credential."""
    timeout: float = pydantic.Field(30.0, gt=0, le=MAX_HTTP_TIMEOUT, allow_inf_nan=False)
    max_attempts: int = pydantic.Field(3, ge=1, le=20)
    queue: Name = "jobs"


class WorkflowDefinition(_Base):
    kind: Literal["workflow"]
    workflow: dict[str, Any]
    """``Workflow.to_data``'s shape; its name is the definition's."""


Definition = Annotated[
    AliasDefinition | HttpDefinition | WorkflowDefinition, pydantic.Field(discriminator="kind")
]
_ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Definition)


READ_ONLY = frozenset({"version", "tenant", "owner", "created_by", "created_at", "updated_at"})


def parse(data: Any) -> AliasDefinition | HttpDefinition | WorkflowDefinition:
    """A definition from JSON data; raises ``InvalidInput`` naming each bad field."""
    name = data.get("name", "?") if isinstance(data, dict) else "?"
    if isinstance(data, dict):  # what get() answers can be registered again as it is
        data = {k: v for k, v in data.items() if k not in READ_ONLY}
    try:
        parsed: AliasDefinition | HttpDefinition | WorkflowDefinition = _ADAPTER.validate_python(
            data
        )
    except pydantic.ValidationError as exc:
        fields = errors.field_errors(exc)
        for f in fields:  # drop the union member pydantic puts first ("alias", "http" ...)
            if f["loc"] and f["loc"][0] in ("alias", "http", "workflow"):
                f["loc"] = f["loc"][1:]
        raise errors.InvalidInput(str(name)[:200], fields, "definition") from None
    return parsed


def kind_of(spec: jobs.JobSpec) -> str:
    """``code`` for a job of the catalog (``external`` for one an outside actor does), else
    the kind of its definition."""
    if spec.module != MODULE:
        return "external" if spec.external else "code"
    return "alias" if "alias_of" in spec.labels else "http"


# --- building specs (an HTTP call's: ``jobsys.declare.http_jobs``) ----------------------------


def build_alias(d: AliasDefinition, registry: jobs.Registry) -> jobs.JobSpec:
    """The alias as a job: the target's body, schema (with the defaults bound), limits and
    access rules under the new name."""
    try:
        target = registry.get(d.target)
    except errors.UnknownJob as exc:
        raise errors.JobDeclarationError(d.name, "target", str(exc)) from None
    if target.module == MODULE:
        raise errors.JobDeclarationError(
            d.name, "target", f"{d.target} is itself registered at runtime: alias a catalog job"
        )
    model = _with_defaults(d, target.input_model)
    return jobs.make_spec(
        **{
            **_fields(target),
            "name": d.name,
            "input_model": model,
            "description": d.description or target.description,
            "tags": tuple(sorted(set(target.tags) | set(d.tags))),
            "labels": types.MappingProxyType(
                {**target.labels, **d.labels, "alias_of": target.name}
            ),
            "metadata": types.MappingProxyType(dict(d.metadata)),
            "hidden": False,
            "module": MODULE,
            "schedule": None,
            "task": DYNAMIC_TASK,
            "flow": d.flow_limits(d.name, model, target.flow),
        }
    )


def _fields(spec: jobs.JobSpec) -> dict[str, Any]:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}


def _with_defaults(d: AliasDefinition, model: type[pydantic.BaseModel]) -> type[pydantic.BaseModel]:
    if not d.defaults:
        return model
    secret = {path[0] for path in sealing.secret_paths(model)}
    problems = []
    fields: dict[str, Any] = {}
    for key, value in d.defaults.items():
        info = model.model_fields.get(key)
        if info is None:
            problems.append(problem(["defaults", key], f"{model.__name__} has no field {key!r}"))
            continue
        if key in secret:
            problems.append(
                problem(["defaults", key], "is secret: give it with each run, never bind it")
            )
            continue
        try:
            pydantic.TypeAdapter(info.annotation or Any).validate_python(value)
        except pydantic.ValidationError as exc:
            problems.append(problem(["defaults", key], exc.errors()[0]["msg"]))
            continue
        fields[key] = (
            info.annotation,
            pydantic.fields.FieldInfo.merge_field_infos(info, default=value),
        )
    if problems:
        raise errors.InvalidInput(d.name, problems, "definition")
    return pydantic.create_model(
        f"{model.__name__}_{d.name.replace('.', '_').replace('-', '_')}",
        __base__=model,
        __module__=MODULE,
        **fields,
    )


def problem(loc: list[Any], msg: str) -> dict[str, Any]:
    """One field's problem, as ``InvalidInput`` lists them."""
    return {"loc": loc, "msg": msg, "type": "value_error"}


def build_workflow(d: WorkflowDefinition, registry: jobs.Registry) -> workflows.Workflow:
    data = {**d.workflow, "name": d.name}
    data.setdefault("description", d.description)
    wf = workflows.from_data(data)
    workflow_checks.check(wf, registry)
    return wf
