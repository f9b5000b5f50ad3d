"""Declaring one job: ``JobSpec``, the ``@job`` decorator, the class style (``Job``) and
``RetryPolicy``. A declaration is checked when it is made (at import), and every problem names
the job and the field. ``jobsys.declare.jobs`` gathers the declared jobs in a ``Registry``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import random
import re
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, get_type_hints

import pydantic

from jobsys.base import bounds, errors, keywords
from jobsys.declare import cadence, flow, permissions, retention
from jobsys.declare.flow import FlowLimits

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*$")
DEFAULT_TIMEOUT = 300.0
DEFAULT_LEASE = 300.0
"""Seconds an outside actor may stay silent on a run it took, unless its job says (``lease``)."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When and how soon a failed attempt is tried again.

    ``max_attempts`` counts every attempt, the first included (1 means never retry). The delay
    before attempt ``n + 1`` is ``initial_backoff * multiplier ** (n - 1)`` seconds, capped at
    ``max_backoff``, then reduced by up to ``jitter`` (a fraction, 0 to 1) at random so that
    many failing runs do not retry in lockstep. ``retry_on`` lists the exception types that
    retry; ``never_retry`` wins over it. Timeouts retry only if ``retry_on_timeout``.
    """

    max_attempts: int = 3
    initial_backoff: float = 1.0
    multiplier: float = 2.0
    max_backoff: float = 60.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    never_retry: tuple[type[BaseException], ...] = ()
    retry_on_timeout: bool = False

    def problems(self) -> list[tuple[str, str]]:
        """Each (field, problem) that makes this policy invalid; empty when it is fine."""
        found = []
        if self.max_attempts < 1:
            found.append(("retry.max_attempts", f"must be at least 1, got {self.max_attempts}"))
        for name in ("initial_backoff", "max_backoff"):
            problem = bounds.seconds(getattr(self, name), bounds.MAX_BACKOFF)
            if problem:
                found.append((f"retry.{name}", problem))
        if not math.isfinite(self.multiplier) or self.multiplier < 1:
            found.append(("retry.multiplier", f"must be >= 1, got {self.multiplier}"))
        if not 0 <= self.jitter <= 1:
            found.append(("retry.jitter", f"must be between 0 and 1, got {self.jitter}"))
        return found

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Whether an attempt (1-based) that raised ``exc`` gets another one."""
        if attempt >= self.max_attempts:
            return False
        if isinstance(exc, errors.Retry):
            return True
        if isinstance(exc, (errors.Fatal | errors.RunCancelled, self.never_retry)):
            return False
        if isinstance(exc, errors.JobTimeout):
            return self.retry_on_timeout
        return isinstance(exc, self.retry_on)

    def next_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt ``attempt`` (1-based) failed, jitter included."""
        exponent = max(attempt - 1, 0)
        try:
            base = self.initial_backoff * self.multiplier**exponent
        except OverflowError:
            base = self.max_backoff
        delay = min(base, self.max_backoff)
        if self.jitter:
            delay *= 1 - self.jitter * (rng or random).random()
        return delay


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A declared job type. Calling the spec runs the job function directly (for tests)."""

    name: str
    fn: Callable[..., Any]
    input_model: type[pydantic.BaseModel]
    output_model: type[pydantic.BaseModel]
    description: str = ""
    version: str = "1"
    timeout: float = DEFAULT_TIMEOUT
    retry: RetryPolicy = RetryPolicy()
    tags: tuple[str, ...] = ()
    labels: types.MappingProxyType[str, str] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    hidden: bool = False
    queue: str = "jobs"
    priority: int = bounds.DEFAULT_PRIORITY
    """0 (lowest) to 9 (highest): its runs' priority unless a submit, a schedule or a
    workflow step gives theirs."""
    access: types.MappingProxyType[str, permissions.Rule] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    """A rule per action (``create``, ``read``, ``update``, ``delete``, ``execute``, ``list``)."""
    wants_context: bool = False
    module: str = ""
    schedule: cadence.ScheduleSpec | None = None
    """A default schedule (a ``cadence.ScheduleSpec``), seeded into the store when beat starts
    (``schedules.seed``)."""
    metadata: types.MappingProxyType[str, Any] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    """Metadata every run of the job starts with (a run's own metadata wins)."""
    flow: FlowLimits | None = None
    """Its concurrency and rate limits (``flow.py``); ``None``: none, and its runs take the
    claim that costs nothing more."""
    retention: retention.Retention | None = None
    """How long its ended runs are kept (``retention.py``); ``None``: the global settings."""
    task: str = ""
    """The Celery task its runs are published to, when not the job's own name (jobs
    registered at runtime share ``definitions.DYNAMIC_TASK``)."""
    external: bool = False
    """Its body is done by an outside actor (an agent, a person, a service) that takes each
    run (``service/actor_client.py``): its runs are never published to a worker."""
    lease: float | None = None
    """An external job's lease, in seconds: an actor that reports nothing for this long loses
    the run (another attempt, or failed as timed out). ``None``: ``DEFAULT_LEASE``."""
    hooks: types.MappingProxyType[str, Callable[[Any], Any]] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    """Functions called in the worker with the run's record when a run of the job ends in
    (or goes to) a state: ``completed``, ``failed``, ``cancelled``, ``retrying``
    (``@job(on_completed=...)``); after the state is committed, their errors logged only."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()

    def output_schema(self) -> dict[str, Any]:
        return self.output_model.model_json_schema()


def job(
    name: str,
    *,
    input: type[pydantic.BaseModel] | None = None,
    output: type[pydantic.BaseModel] | None = None,
    description: str | None = None,
    version: str = "1",
    timeout: float = DEFAULT_TIMEOUT,
    retry: RetryPolicy | None = None,
    tags: Iterable[str] = (),
    labels: dict[str, str] | None = None,
    hidden: bool = False,
    queue: str = "jobs",
    priority: int = bounds.DEFAULT_PRIORITY,
    access: Mapping[str, permissions.Rule] | None = None,
    schedule: cadence.ScheduleSpec | None = None,
    max_concurrency: int | None = None,
    concurrency_key: str | None = None,
    per_key: int | None = None,
    rate: str | None = None,
    rate_key: str | None = None,
    external: bool = False,
    lease: float | None = None,
    keep_completed: str | float | None = None,
    keep_failed: str | float | None = None,
    keep_cancelled: str | float | None = None,
    keep_last: int | None = None,
    on_completed: Callable[[Any], Any] | None = None,
    on_failed: Callable[[Any], Any] | None = None,
    on_cancelled: Callable[[Any], Any] | None = None,
    on_retrying: Callable[[Any], Any] | None = None,
) -> Callable[[Callable[..., Any]], JobSpec]:
    """Declare a job from a function ``fn(input)`` or ``fn(input, ctx)``.

    ``external=True``: an outside actor does its runs (the function is a stub that gives the
    models and is never called by a worker); ``lease``: how long, in seconds, that actor may
    stay silent before it loses the run (default ``DEFAULT_LEASE``).

    The input and output models come from the arguments or, failing that, from the function's
    type hints (first parameter and return type). The decorated name is a ``JobSpec``.
    ``max_concurrency``, ``concurrency_key``, ``per_key``, ``rate``, ``rate_key``: its flow
    limits (``flow.FlowLimits``). ``keep_completed``, ``keep_failed``, ``keep_cancelled``
    (``"7d"``, ``"never"``) and ``keep_last``: its retention (``retention.Retention``).
    ``on_completed``, ``on_failed``, ``on_cancelled``, ``on_retrying``: hooks called in the
    worker with the run's record (a ``RunRecord``) once the run's new state is committed; a
    hook that raises is logged and changes nothing about the run.
    """
    hooks = {
        event: hook
        for event, hook in (
            ("completed", on_completed),
            ("failed", on_failed),
            ("cancelled", on_cancelled),
            ("retrying", on_retrying),
        )
        if hook is not None
    }

    def declare(fn: Callable[..., Any]) -> JobSpec:
        in_model, out_model, wants_ctx = _signature(name, fn, input, output)
        limits = flow.declare(
            name, in_model, max_concurrency, concurrency_key, per_key, rate, rate_key
        )
        kept = retention.declare(name, keep_completed, keep_failed, keep_cancelled, keep_last)
        return make_spec(
            name=name,
            fn=fn,
            input_model=in_model,
            output_model=out_model,
            description=description if description is not None else inspect.getdoc(fn) or "",
            version=version,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            tags=tuple(tags),
            labels=types.MappingProxyType(dict(labels or {})),
            hidden=hidden,
            queue=queue,
            priority=priority,
            access=types.MappingProxyType(dict(access or {})),
            wants_context=wants_ctx,
            module=fn.__module__,
            schedule=schedule,
            flow=limits,
            external=external,
            lease=lease,
            retention=kept,
            hooks=types.MappingProxyType(hooks),
        )

    return declare


class Job:
    """Class-style declaration: subclass, set the class attributes, implement ``run``.

    ``Input`` and ``Output`` are the pydantic models; ``run(self, input, ctx)`` does the work.
    The subclass gets a ``spec`` (a ``JobSpec``) checked when the class is created.
    """

    name: ClassVar[str]
    Input: ClassVar[type[pydantic.BaseModel]]
    Output: ClassVar[type[pydantic.BaseModel]]
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    timeout: ClassVar[float] = DEFAULT_TIMEOUT
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    tags: ClassVar[tuple[str, ...]] = ()
    labels: ClassVar[dict[str, str]] = {}
    hidden: ClassVar[bool] = False
    queue: ClassVar[str] = "jobs"
    priority: ClassVar[int] = bounds.DEFAULT_PRIORITY
    access: ClassVar[Mapping[str, permissions.Rule]] = {}
    schedule: ClassVar[cadence.ScheduleSpec | None] = None
    max_concurrency: ClassVar[int | None] = None
    concurrency_key: ClassVar[str | None] = None
    per_key: ClassVar[int | None] = None
    rate: ClassVar[str | None] = None
    rate_key: ClassVar[str | None] = None
    keep_completed: ClassVar[str | float | None] = None
    keep_failed: ClassVar[str | float | None] = None
    keep_cancelled: ClassVar[str | float | None] = None
    keep_last: ClassVar[int | None] = None
    on_completed: ClassVar[Callable[..., Any] | None] = None
    """Hooks: methods ``on_completed(self, run)`` (likewise ``on_failed``, ``on_cancelled``,
    ``on_retrying``), as ``@job(on_completed=...)``."""
    on_failed: ClassVar[Callable[..., Any] | None] = None
    on_cancelled: ClassVar[Callable[..., Any] | None] = None
    on_retrying: ClassVar[Callable[..., Any] | None] = None
    spec: ClassVar[JobSpec]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = getattr(cls, "name", None) or f"{cls.__module__}.{cls.__qualname__}"
        for attr in ("Input", "Output"):
            if not _is_model(getattr(cls, attr, None)):
                raise errors.JobDeclarationError(
                    name,
                    attr,
                    "must be a pydantic BaseModel subclass (input and output are required)",
                )
        instance = cls()
        limits = flow.declare(
            name,
            cls.Input,
            cls.max_concurrency,
            cls.concurrency_key,
            cls.per_key,
            cls.rate,
            cls.rate_key,
        )
        cls.spec = make_spec(
            name=name,
            fn=instance.run,
            input_model=cls.Input,
            output_model=cls.Output,
            description=cls.description or inspect.getdoc(cls) or "",
            version=cls.version,
            timeout=cls.timeout,
            retry=cls.retry,
            tags=tuple(cls.tags),
            labels=types.MappingProxyType(dict(cls.labels)),
            hidden=cls.hidden,
            queue=cls.queue,
            priority=cls.priority,
            access=types.MappingProxyType(dict(cls.access)),
            wants_context=True,
            module=cls.__module__,
            schedule=cls.schedule,
            flow=limits,
            retention=retention.declare(
                name, cls.keep_completed, cls.keep_failed, cls.keep_cancelled, cls.keep_last
            ),
            hooks=types.MappingProxyType(
                {
                    event: getattr(instance, f"on_{event}")
                    for event in ("completed", "failed", "cancelled", "retrying")
                    if getattr(cls, f"on_{event}", None) is not None
                }
            ),
        )

    def run(self, input: Any, ctx: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.run is not implemented")


def make_spec(**fields: Any) -> JobSpec:
    """Build a ``JobSpec``, refusing every invalid field with the job and field named."""
    spec = JobSpec(**fields)
    problems = _spec_problems(spec)
    if problems:
        field, problem = problems[0]
        raise errors.JobDeclarationError(spec.name, field, problem)
    return spec


def _spec_problems(spec: JobSpec) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if not isinstance(spec.name, str) or not NAME_RE.match(spec.name) or len(spec.name) > 200:
        found.append(("name", "must be dotted identifiers like 'billing.send_invoice'"))
    if not _is_model(spec.input_model):
        found.append(("input", "must be a pydantic BaseModel subclass"))
    if not _is_model(spec.output_model):
        found.append(("output", "must be a pydantic BaseModel subclass"))
    if not isinstance(spec.timeout, int | float) or not math.isfinite(spec.timeout):
        found.append(("timeout", f"must be a number of seconds, got {spec.timeout!r}"))
    elif spec.timeout <= 0:
        found.append(("timeout", f"must be positive, got {spec.timeout}"))
    found.extend(
        (f"on_{event}", f"must be a function of the run's record, got {hook!r}")
        for event, hook in spec.hooks.items()
        if not callable(hook)
    )
    if not isinstance(spec.retry, RetryPolicy):
        found.append(("retry", "must be a jobsys.RetryPolicy"))
    else:
        found.extend(spec.retry.problems())
    if problem := bounds.priority(spec.priority):
        found.append(("priority", problem))
    if not spec.queue or not NAME_RE.match(spec.queue):
        found.append(("queue", f"must be a plain name, got {spec.queue!r}"))
    if spec.schedule is not None:
        found.extend(_schedule_problems(spec))
    found.extend(_external_problems(spec))
    found.extend(permissions.check_access(spec.access))
    return found


def _external_problems(spec: JobSpec) -> list[tuple[str, str]]:
    """What is wrong with an external job's options (``external``, ``lease``)."""
    if spec.lease is not None and not spec.external:
        return [("lease", "is for external jobs only (external=True)")]
    if spec.lease is not None and (
        problem := bounds.seconds(spec.lease, bounds.MAX_BACKOFF, positive=True)
    ):
        return [("lease", problem)]
    if spec.external and spec.flow is not None:
        return [("external", "an external job takes no concurrency or rate limits")]
    return []


def _schedule_problems(spec: JobSpec) -> list[tuple[str, str]]:
    if not isinstance(spec.schedule, cadence.ScheduleSpec):
        return [("schedule", "must be made by jobsys.every, cron, once or ongoing")]
    if _is_model(spec.input_model):
        try:
            spec.input_model.model_validate(spec.schedule.input)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            return [("schedule.input", f"{where}: {first['msg']}" if where else first["msg"])]
    return []


def _is_model(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, pydantic.BaseModel)


def _signature(
    name: str,
    fn: Callable[..., Any],
    input_model: type[pydantic.BaseModel] | None,
    output_model: type[pydantic.BaseModel] | None,
) -> tuple[type[pydantic.BaseModel], type[pydantic.BaseModel], bool]:
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) not in (1, 2):
        raise errors.JobDeclarationError(
            name, "function", "must take (input) or (input, ctx) positional parameters"
        )
    try:
        hints = get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to explicit models
        hints = {}
    input_model = input_model or hints.get(params[0].name)
    output_model = output_model or hints.get("return")
    if not _is_model(input_model):
        raise errors.JobDeclarationError(
            name,
            "input",
            "a pydantic model is required (pass input=Model or annotate the parameter)",
        )
    if not _is_model(output_model):
        raise errors.JobDeclarationError(
            name,
            "output",
            "a pydantic model is required (pass output=Model or annotate the return)",
        )
    assert input_model is not None and output_model is not None
    return input_model, output_model, len(params) == 2


def holds_words(spec: JobSpec, wanted: set[str] | frozenset[str]) -> bool:
    """Whether the job's name, description, tags and labels hold every word of ``wanted``
    (whole words, as ``keywords.words`` splits them: the one keyword match of jobs)."""
    labels = " ".join(f"{k} {v}" for k, v in spec.labels.items())
    text = f"{spec.name} {spec.description} {' '.join(spec.tags)} {labels}"
    return set(wanted) <= set(keywords.words(text))
