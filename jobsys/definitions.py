"""Jobs registered at runtime: declarative definitions kept in the store, never code.

Three kinds, each built from data into the same ``JobSpec`` (or ``Workflow``) a catalog job
has, so submitting, permissions, retries, run records and every interface treat them alike:

- ``alias``: a job of the catalog under a new name, with bound input defaults, metadata and
  an optional schedule; it keeps the target's schema, body, limits and access rules;
- ``http``: one HTTP request to a URL whose host is on the allow-list
  (``JOBSYS_HTTP_JOB_HOSTS``), checked when the job is registered and again on every call;
- ``workflow``: a workflow of registered jobs, in ``Workflow.to_data``'s shape.

``DefinitionStore`` keeps them (``jobsys_job_definitions``; a removal leaves a tombstone and
bumps the version, so every change moves the store's revision). A ``Registry`` with a
``Source`` attached looks them up when a name is not in its catalog and re-reads them when the
revision changes, so a worker started before a registration runs the new job without a restart.
Their runs are published under one Celery task, ``DYNAMIC_TASK``, that every worker has.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import types
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pydantic
import sqlalchemy as sa

from jobsys import config, errors, execute, jobs, runs, schema, sealing

if TYPE_CHECKING:
    from jobsys import workflows

log = logging.getLogger("jobsys.definitions")

DYNAMIC_TASK = "jobsys.dynamic"
"""The Celery task that runs every runtime-registered job (the run record names the job)."""

MODULE = "jobsys.definitions"
"""The ``module`` of a spec built from a definition."""

Name = Annotated[str, pydantic.StringConstraints(pattern=jobs.NAME_RE.pattern, max_length=200)]
Tag = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=100)]


class _Base(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: Name
    description: str = pydantic.Field("", max_length=2000)
    tags: tuple[Tag, ...] = pydantic.Field((), max_length=50)
    labels: dict[Tag, Annotated[str, pydantic.StringConstraints(max_length=200)]] = {}


class AliasDefinition(_Base):
    kind: Literal["alias"]
    target: Name
    """A job of the catalog."""
    defaults: dict[str, Any] = {}
    """Input fields bound to a value (a run may still give its own)."""
    metadata: dict[str, Any] = {}
    """Metadata every run starts with."""
    schedule: dict[str, Any] | None = None
    """Arguments of ``jobsys.cadence.schedule`` (``kind``, ``every``, ``cron``, ``timezone`` ...):
    a schedule of the alias created with it and deleted with it."""


class HttpDefinition(_Base):
    kind: Literal["http"]
    url: Annotated[str, pydantic.StringConstraints(max_length=2000)]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[Tag, Annotated[str, pydantic.StringConstraints(max_length=2000)]] = {}
    timeout: float = pydantic.Field(30.0, gt=0, le=3600)
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


READ_ONLY = frozenset({"version", "created_by", "created_at", "updated_at"})


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
        fields = execute.field_errors(exc)
        for f in fields:  # drop the union member pydantic puts first ("alias", "http" ...)
            if f["loc"] and f["loc"][0] in ("alias", "http", "workflow"):
                f["loc"] = f["loc"][1:]
        raise errors.InvalidInput(str(name)[:200], fields, "definition") from None
    return parsed


def kind_of(spec: jobs.JobSpec) -> str:
    """``code`` for a job of the catalog, else the kind of its definition."""
    if spec.module != MODULE:
        return "code"
    return "alias" if "alias_of" in spec.labels else "http"


# --- building specs ------------------------------------------------------------------------


class HttpCallInput(pydantic.BaseModel):
    """What one run of an HTTP-call job sends."""

    model_config = pydantic.ConfigDict(extra="forbid")

    body: Any = None
    """A JSON body (for methods that take one)."""
    query: dict[str, str] = {}
    headers: dict[str, str] = {}


class HttpCallOutput(pydantic.BaseModel):
    status: int
    headers: dict[str, str]
    body: Any


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
            problems.append(_problem(["defaults", key], f"{model.__name__} has no field {key!r}"))
            continue
        if key in secret:
            problems.append(
                _problem(["defaults", key], "is secret: give it with each run, never bind it")
            )
            continue
        try:
            pydantic.TypeAdapter(info.annotation or Any).validate_python(value)
        except pydantic.ValidationError as exc:
            problems.append(_problem(["defaults", key], exc.errors()[0]["msg"]))
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


def _problem(loc: list[Any], msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": "value_error"}


def check_url(name: str, url: str, allowed: Sequence[str]) -> urllib.parse.SplitResult:
    """The URL, if its scheme is http(s) and its host (or host:port) is on the allow-list."""
    try:
        parts = urllib.parse.urlsplit(url)
        explicit = parts.port
    except ValueError as exc:  # a bad port, an unclosed [ipv6
        problem = _problem(["url"], f"not a URL ({exc})")
        raise errors.InvalidInput(name, [problem], "definition") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = _problem(["url"], "must be an http:// or https:// URL")
        raise errors.InvalidInput(name, [problem], "definition")
    port = explicit or (443 if parts.scheme == "https" else 80)
    host = parts.hostname.lower()
    if host not in allowed and f"{host}:{port}" not in allowed:
        hint = ", ".join(allowed) if allowed else "none"
        raise errors.InvalidInput(
            name,
            [
                _problem(
                    ["url"],
                    f"host {host}:{port} is not on the allow-list ({hint}); an operator adds "
                    "it to JOBSYS_HTTP_JOB_HOSTS",
                )
            ],
            "definition",
        )
    return parts


def build_http(d: HttpDefinition, allowed: Sequence[str]) -> jobs.JobSpec:
    check_url(d.name, d.url, allowed)

    def call(input: HttpCallInput) -> HttpCallOutput:
        return _http_call(d, allowed, input)

    return jobs.make_spec(
        name=d.name,
        fn=call,
        input_model=HttpCallInput,
        output_model=HttpCallOutput,
        description=d.description or f"{d.method} {d.url}",
        tags=tuple(d.tags),
        labels=types.MappingProxyType({**d.labels, "http_url": d.url}),
        timeout=d.timeout + 5.0,
        retry=jobs.RetryPolicy(max_attempts=d.max_attempts),
        queue=d.queue,
        module=MODULE,
        task=DYNAMIC_TASK,
    )


MAX_RESPONSE_BYTES = 1 << 20


def _http_call(d: HttpDefinition, allowed: Sequence[str], input: HttpCallInput) -> HttpCallOutput:
    import httpx  # only workers running HTTP jobs pay for it

    check_url(d.name, d.url, allowed)  # the allow-list may have shrunk since registration
    send_body = d.method in ("POST", "PUT", "PATCH") and input.body is not None
    with httpx.Client(timeout=d.timeout, follow_redirects=False) as http:
        response = http.request(
            d.method,
            d.url,
            params=input.query or None,
            headers={**d.headers, **input.headers},
            json=input.body if send_body else None,
        )
    content = response.content[:MAX_RESPONSE_BYTES]
    try:
        body: Any = response.json() if len(response.content) <= MAX_RESPONSE_BYTES else None
    except ValueError:
        body = content.decode("utf-8", "replace")
    if body is None and content:
        body = content.decode("utf-8", "replace")
    if 400 <= response.status_code < 500:
        raise errors.Fatal(f"{d.method} {d.url} answered {response.status_code}: {str(body)[:500]}")
    if response.status_code >= 500:
        raise RuntimeError(f"{d.method} {d.url} answered {response.status_code}")
    return HttpCallOutput(status=response.status_code, headers=dict(response.headers), body=body)


def build_workflow(d: WorkflowDefinition, registry: jobs.Registry) -> workflows.Workflow:
    from jobsys import workflow_checks, workflows

    data = {**d.workflow, "name": d.name}
    data.setdefault("description", d.description)
    wf = workflows.from_data(data)
    workflow_checks.check(wf, registry)
    return wf


# --- the store -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DefinitionRecord:
    name: str
    kind: str
    data: dict[str, Any]
    version: int
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            **self.data,
            "version": self.version,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


class DefinitionStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.table = schema.job_definitions

    def put(self, data: dict[str, Any], by: str) -> DefinitionRecord:
        """Add the definition, or replace the one of that name (its version goes up)."""
        t, now = self.table, runs.utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t.c.version).where(t.c.name == data["name"])).first()
            values = {"kind": data["kind"], "data": data, "updated_at": now, "removed_at": None}
            if row is None:
                conn.execute(
                    t.insert().values(
                        name=data["name"], version=1, created_by=by, created_at=now, **values
                    )
                )
            else:
                conn.execute(
                    t.update()
                    .where(t.c.name == data["name"])
                    .values(version=row.version + 1, created_by=by, created_at=now, **values)
                )
        return self.get(data["name"])

    def get(self, name: str) -> DefinitionRecord:
        t = self.table
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t).where(t.c.name == name, t.c.removed_at.is_(None))
            ).first()
        if row is None:
            raise errors.UnknownJob(name, [])
        return _record(row)

    def remove(self, name: str) -> bool:
        t = self.table
        with self.engine.begin() as conn:
            done = conn.execute(
                t.update()
                .where(t.c.name == name, t.c.removed_at.is_(None))
                .values(removed_at=runs.utcnow(), updated_at=runs.utcnow(), version=t.c.version + 1)
            ).rowcount
        return bool(done)

    def all(self) -> list[DefinitionRecord]:
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.removed_at.is_(None)).order_by(t.c.name))
            return [_record(r) for r in rows]

    def revision(self) -> tuple[int, int]:
        """Changes whenever a definition is added, replaced or removed."""
        t = self.table
        with self.engine.connect() as conn:
            count, total = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(t.c.version), 0))
            ).one()
        return int(count), int(total)


def _record(row: sa.Row[Any]) -> DefinitionRecord:
    return DefinitionRecord(
        row.name,
        row.kind,
        dict(row.data),
        row.version,
        row.created_by,
        row.created_at,
        row.updated_at,
    )


def source(settings: config.Settings, engine: sa.Engine) -> Source:
    """The definitions a process with these settings reads (see ``Registry.attach``)."""
    return Source(DefinitionStore(engine), settings.http_job_hosts)


@dataclasses.dataclass
class Source:
    """What a ``Registry`` reads runtime definitions from."""

    store: DefinitionStore
    http_hosts: tuple[str, ...] = ()

    def build(
        self, records: Sequence[DefinitionRecord], registry: jobs.Registry
    ) -> tuple[dict[str, jobs.JobSpec], list[WorkflowDefinition]]:
        """The specs of the job definitions, and the workflow definitions left to build once
        those specs are known. A definition that no longer builds (its target left the
        catalog, its host the allow-list) is skipped, and logged."""
        specs: dict[str, jobs.JobSpec] = {}
        later: list[WorkflowDefinition] = []
        for record in records:
            try:
                d = parse(record.data)
                if isinstance(d, AliasDefinition):
                    specs[d.name] = build_alias(d, registry)
                elif isinstance(d, HttpDefinition):
                    specs[d.name] = build_http(d, self.http_hosts)
                else:
                    later.append(d)
            except errors.JobsysError as exc:
                log.warning("jobsys: job definition %s skipped: %s", record.name, exc)
        return specs, later
