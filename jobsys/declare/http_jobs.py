"""Jobs registered at runtime that make one HTTP call (``kind: http``, see
``jobsys.declare.definitions``): the checks of their definition (the host allow-list, where
credentials go, which headers a run may set), the job a definition is built into, and the call
itself, made on the worker with the response size bounded and secrets redacted."""

from __future__ import annotations

import json
import types
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import pydantic

from jobsys.base import errors, sealing
from jobsys.declare import definitions, jobs


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


def check_url(name: str, url: str, allowed: Sequence[str]) -> urllib.parse.SplitResult:
    """The URL, if its scheme is http(s) and its host (or host:port) is on the allow-list."""
    try:
        parts = urllib.parse.urlsplit(url)
        explicit = parts.port
    except ValueError as exc:  # a bad port, an unclosed [ipv6
        problem = definitions.problem(["url"], f"not a URL ({exc})")
        raise errors.InvalidInput(name, [problem], "definition") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = definitions.problem(["url"], "must be an http:// or https:// URL")
        raise errors.InvalidInput(name, [problem], "definition")
    port = explicit or (443 if parts.scheme == "https" else 80)
    host = parts.hostname.lower()
    if host not in allowed and f"{host}:{port}" not in allowed:
        hint = ", ".join(allowed) if allowed else "none"
        raise errors.InvalidInput(
            name,
            [
                definitions.problem(
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


def check_http(d: definitions.HttpDefinition) -> None:
    """Refuse, naming the field, an HTTP definition that would show a credential or let a
    run change a header the definition sets (checked when it is registered)."""
    problems = [
        definitions.problem(
            ["headers", name],
            "carries a credential: give it in secret_headers (sealed, shown masked)",
        )
        for name in d.headers
        if is_credential(name)
    ]
    fixed = {n.lower() for n in (*d.headers, *d.secret_headers)}
    problems += [
        definitions.problem(["secret_headers", name], "is also in headers; give it once")
        for name in d.secret_headers
        if name.lower() in {n.lower() for n in d.headers}
    ]
    for name in d.caller_headers:
        low = name.lower()
        if low in fixed or low in FIXED_HEADERS or is_credential(name):
            problems.append(
                definitions.problem(
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


def call_input(d: definitions.HttpDefinition) -> type[HttpCallInput]:
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
        __module__=definitions.MODULE,
        **fields,
    )
    model.fixed_query = frozenset(urllib.parse.parse_qs(urllib.parse.urlsplit(d.url).query))
    return model


Secrets = Callable[[], dict[str, str]]
"""Opens a definition's sealed secret headers (on the worker, for each call)."""


def no_secrets() -> dict[str, str]:
    return {}


def build_http(
    d: definitions.HttpDefinition, allowed: Sequence[str], secrets: Secrets = no_secrets
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
        module=definitions.MODULE,
        task=definitions.DYNAMIC_TASK,
        flow=d.flow_limits(d.name, call_input(d), None),
    )


MAX_RESPONSE_BYTES = 1 << 20
"""The largest answer an HTTP job reads (1 MiB): past it the run fails, without reading
the rest."""


def _http_call(
    d: definitions.HttpDefinition, allowed: Sequence[str], secrets: Secrets, input: HttpCallInput
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


def _read_limited(d: definitions.HttpDefinition, response: Any) -> bytes:
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


def _too_large(d: definitions.HttpDefinition, detail: str) -> str:
    return (
        f"{d.method} {d.url} answered more than the limit of an HTTP job's response "
        f"(MAX_RESPONSE_BYTES, {MAX_RESPONSE_BYTES} bytes = 1 MiB; {detail}); the rest was not "
        "read. Make the endpoint answer less (a summary, a page, or a link to the data)"
    )
