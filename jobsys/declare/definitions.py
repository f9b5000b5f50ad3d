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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import types
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Annotated, Any, ClassVar, Literal

import pydantic

from jobsys.base import errors, sealing
from jobsys.declare import jobs, workflow_checks, workflows

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


class AliasDefinition(_Base):
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


class HttpDefinition(_Base):
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
    """``code`` for a job of the catalog, else the kind of its definition."""
    if spec.module != MODULE:
        return "code"
    return "alias" if "alias_of" in spec.labels else "http"


# --- building specs ------------------------------------------------------------------------


class HttpCallInput(pydantic.BaseModel):
    """What one run of an HTTP-call job may send: each job's input model has only the fields
    its definition makes overridable (``body``: a JSON body, for methods that take one;
    ``query``: extra query parameters; ``headers``: the ``caller_headers``)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    fixed_query: ClassVar[frozenset[str]] = frozenset()
    """The query parameters of the definition's URL: a run may not change them."""

    @pydantic.field_validator("query", check_fields=False)
    @classmethod
    def _not_fixed(cls, value: dict[str, str]) -> dict[str, str]:
        taken = sorted(set(value) & cls.fixed_query)
        if taken:
            raise ValueError(
                f"{', '.join(taken)} is set by the job's URL; a run may add parameters only"
            )
        return value


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


CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-auth-token"}
)
CREDENTIAL_WORDS = ("token", "secret", "password", "apikey", "api-key", "api_key", "auth")
FIXED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-type", "te"}
)
"""Headers a run may never set (``caller_headers``): they would change the request's target
or framing."""


def is_credential(header: str) -> bool:
    """Whether a header name carries a credential (it belongs in ``secret_headers``)."""
    low = header.lower()
    return low in CREDENTIAL_HEADERS or any(word in low for word in CREDENTIAL_WORDS)


def check_http(d: HttpDefinition) -> None:
    """Refuse, naming the field, an HTTP definition that would show a credential or let a
    run change a header the definition sets (checked when it is registered)."""
    problems = [
        _problem(
            ["headers", name],
            "carries a credential: give it in secret_headers (sealed, shown masked)",
        )
        for name in d.headers
        if is_credential(name)
    ]
    fixed = {n.lower() for n in (*d.headers, *d.secret_headers)}
    problems += [
        _problem(["secret_headers", name], "is also in headers; give it once")
        for name in d.secret_headers
        if name.lower() in {n.lower() for n in d.headers}
    ]
    for name in d.caller_headers:
        low = name.lower()
        if low in fixed or low in FIXED_HEADERS or is_credential(name):
            problems.append(
                _problem(
                    ["caller_headers", name],
                    "a run may not set it (the definition sets it, or it is a credential or "
                    "changes the request's target or framing)",
                )
            )
    if problems:
        raise errors.InvalidInput(d.name, problems, "definition")


def masked(data: dict[str, Any]) -> dict[str, Any]:
    """A stored definition as readers see it: secret headers as ``**********``, and so are
    credentials in the plain headers of a definition made before ``secret_headers``."""
    out = dict(data)
    if isinstance(out.get("secret_headers"), dict):
        out["secret_headers"] = dict.fromkeys(out["secret_headers"], sealing.REDACTED)
    if isinstance(out.get("headers"), dict):
        out["headers"] = {
            k: sealing.REDACTED if is_credential(str(k)) else v for k, v in out["headers"].items()
        }
    return out


def call_input(d: HttpDefinition) -> type[HttpCallInput]:
    """The input model of the job: only what the definition lets a run set."""
    fields: dict[str, Any] = {}
    if "body" in d.overridable:
        fields["body"] = (Any, None)
    if "query" in d.overridable:
        fields["query"] = (dict[str, str], {})
    if d.caller_headers:
        fields["headers"] = (dict[Literal[tuple(d.caller_headers)], str], {})  # type: ignore[misc]
    model = pydantic.create_model(
        f"HttpCall_{d.name.replace('.', '_').replace('-', '_')}",
        __base__=HttpCallInput,
        __module__=MODULE,
        **fields,
    )
    model.fixed_query = frozenset(urllib.parse.parse_qs(urllib.parse.urlsplit(d.url).query))
    return model


Secrets = Callable[[], dict[str, str]]
"""Opens a definition's sealed secret headers (on the worker, for each call)."""


def no_secrets() -> dict[str, str]:
    return {}


def build_http(
    d: HttpDefinition, allowed: Sequence[str], secrets: Secrets = no_secrets
) -> jobs.JobSpec:
    check_url(d.name, d.url, allowed)

    def call(input: HttpCallInput) -> HttpCallOutput:
        return _http_call(d, allowed, secrets, input)

    return jobs.make_spec(
        name=d.name,
        fn=call,
        input_model=call_input(d),
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
"""The largest answer an HTTP job reads (1 MiB): past it the run fails, without reading
the rest."""


def _http_call(
    d: HttpDefinition, allowed: Sequence[str], secrets: Secrets, input: HttpCallInput
) -> HttpCallOutput:
    import httpx  # only workers running HTTP jobs pay for it

    check_url(d.name, d.url, allowed)  # the allow-list may have shrunk since registration
    hidden = secrets()
    # (and credentials a definition made before secret_headers keeps in its plain headers)
    legacy = [v for k, v in d.headers.items() if is_credential(k)]
    redact = sealing.Redactor([*hidden.values(), *legacy])
    body = getattr(input, "body", None)
    send_body = d.method in ("POST", "PUT", "PATCH") and body is not None
    # The definition's headers last: a run never replaces them (caller_headers excludes them).
    # Uncompressed answers: the limit then counts what is received, not what it inflates to.
    headers = {"Accept-Encoding": "identity", **getattr(input, "headers", {}), **d.headers}
    headers.update(hidden)
    # A run's query parameters are added to the URL's (``params=`` would replace them).
    url = httpx.URL(d.url).copy_merge_params(getattr(input, "query", None) or {})
    with (
        httpx.Client(timeout=d.timeout, follow_redirects=False) as http,
        http.stream(
            d.method,
            url,
            headers=headers,
            json=body if send_body else None,
        ) as response,
    ):
        content = _read_limited(d, response)
    try:
        answer: Any = redact.json(json.loads(content)) if content else None
    except ValueError:
        answer = redact.text(content.decode("utf-8", "replace"))
    if 400 <= response.status_code < 500:
        raise errors.Fatal(
            f"{d.method} {d.url} answered {response.status_code}: {str(answer)[:500]}"
        )
    if response.status_code >= 500:
        raise RuntimeError(f"{d.method} {d.url} answered {response.status_code}")
    return HttpCallOutput(
        status=response.status_code, headers=redact.json(dict(response.headers)), body=answer
    )


def _read_limited(d: HttpDefinition, response: Any) -> bytes:
    """The body of a streamed response, read chunk by chunk up to ``MAX_RESPONSE_BYTES``: a
    larger answer fails the run as soon as it is known to be larger (its announced length,
    or the first chunk past the limit), and the rest is never read."""
    announced = response.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > MAX_RESPONSE_BYTES:
        raise errors.Fatal(_too_large(d, f"it announced {int(announced)} bytes"))
    content = bytearray()
    for chunk in response.iter_bytes():
        content += chunk
        if len(content) > MAX_RESPONSE_BYTES:
            raise errors.Fatal(_too_large(d, "stopped reading there"))
    return bytes(content)


def _too_large(d: HttpDefinition, detail: str) -> str:
    return (
        f"{d.method} {d.url} answered more than the limit of an HTTP job's response "
        f"(MAX_RESPONSE_BYTES, {MAX_RESPONSE_BYTES} bytes = 1 MiB; {detail}); the rest was not "
        "read. Make the endpoint answer less (a summary, a page, or a link to the data)"
    )


def build_workflow(d: WorkflowDefinition, registry: jobs.Registry) -> workflows.Workflow:
    data = {**d.workflow, "name": d.name}
    data.setdefault("description", d.description)
    wf = workflows.from_data(data)
    workflow_checks.check(wf, registry)
    return wf
