"""The one error tree of jobsys.

Every error raised by jobsys subclasses :class:`JobsysError`, and its message says what went
wrong and how to fix it. Errors that a job body raises are the job's own; jobsys records them
and decides, with the job's retry policy, whether to try again.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from jobsys.base import bounds

if TYPE_CHECKING:
    import pydantic


class JobsysError(Exception):
    """Base of every jobsys error."""


class ConfigError(JobsysError):
    """A setting is missing or inconsistent; the message names the variable to change."""


class JobDeclarationError(JobsysError):
    """A job declaration is wrong; the message names the job and the field to fix."""

    def __init__(self, job: str, field: str, problem: str) -> None:
        self.job, self.field, self.problem = job, field, problem
        super().__init__(f"job {job!r}: {field}: {problem}")


class UnknownJob(JobsysError):
    """No job of that name is registered; check the name or JOBSYS_CATALOG."""

    def __init__(self, name: str, close: list[str]) -> None:
        self.name, self.close = name, close
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"unknown job {name!r}{hint} (`jobsys jobs list` shows the jobs)")


class InvalidInput(JobsysError):
    """Input or output failed its schema; ``errors`` holds one entry per bad field."""

    def __init__(self, job: str, errors: list[dict[str, Any]], what: str = "input") -> None:
        self.job, self.errors, self.what = job, errors, what
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in errors]
        super().__init__(f"invalid {what} for job {job!r}: " + "; ".join(parts))


class InvalidFilter(InvalidInput):
    """A filter that cannot be used (an unknown key, a bad value, or none at all where one is
    required); ``errors`` names each bad key under ``loc``."""

    def __init__(self, what: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(what, errors, "filter")
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in errors]
        self.args = (f"invalid filter for {what}: " + "; ".join(parts),)


def choice(enum_type: Any, value: str | None, where: str) -> Any:
    """``enum_type(value)``, or ``None`` for no value; ``InvalidInput`` naming the choices."""
    if not value:
        return None
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum_type)
        raise InvalidInput(
            where,
            [{"loc": ["state"], "type": "enum", "msg": f"must be one of {choices}"}],
            "filter",
        ) from None


class RunNotFound(JobsysError):
    """No run has that id (or it belongs to another tenant)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id!r} not found (`jobsys runs list` shows recent runs)")


class WorkflowDeclarationError(JobsysError):
    """A workflow that cannot run: names the workflow, the step and the field."""

    def __init__(self, workflow: str, step: str, field: str, problem: str) -> None:
        self.workflow, self.step, self.field, self.problem = workflow, step, field, problem
        super().__init__(f"workflow {workflow!r}, step {step!r}, {field}: {problem}")


class WorkflowNotFound(JobsysError):
    """No workflow run has that id (or it belongs to another tenant)."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow run {workflow_id!r} not found (`jobsys workflows list`)")


class ScheduleNotFound(JobsysError):
    """No schedule has that id (or it belongs to another tenant)."""

    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        super().__init__(f"schedule {schedule_id!r} not found (`jobsys schedules list` shows them)")


class SubscriptionNotFound(JobsysError):
    """No webhook subscription has that id (or it belongs to another tenant)."""

    def __init__(self, subscription_id: str) -> None:
        self.subscription_id = subscription_id
        super().__init__(
            f"subscription {subscription_id!r} not found (`jobsys subscriptions list` shows them)"
        )


class TokenNotFound(JobsysError):
    """No API token has that id (or it belongs to a tenant the caller does not administer)."""

    def __init__(self, token_id: str) -> None:
        self.token_id = token_id
        super().__init__(f"token {token_id!r} not found (`jobsys tokens list` shows them)")


class PermissionDenied(JobsysError):
    """The principal may not do this to this job (``jobsys.declare.permissions``)."""

    def __init__(self, principal: str, action: str, job: str, reason: str | None = None) -> None:
        self.principal, self.action, self.job = principal, action, job
        if reason is not None:  # an administrative action: ``job`` names its target
            super().__init__(f"permission denied: {principal!r} may not {action} {job}: {reason}")
            return
        super().__init__(
            f"permission denied: {principal!r} may not {action} job {job!r} "
            "(ask for a token with the role or scope its rule names)"
        )


class NotOwner(PermissionDenied):
    """A job registered at runtime may be replaced or removed by its owner (the principal
    that registered it first) or an admin of its tenant only."""

    def __init__(self, principal: str, action: str, job: str, owner: str) -> None:
        self.principal, self.action, self.job, self.owner = principal, action, job, owner
        JobsysError.__init__(
            self,
            f"permission denied: job {job!r} was registered by {owner!r}; only they or an "
            f"admin of the tenant may {action} it (register yours under another name)",
        )


class Unauthenticated(JobsysError):
    """The token is unknown, revoked or expired."""


class NotScheduled(JobsysError):
    """A schedule action from the context of a run that no schedule made."""


class InvalidSchedule(JobsysError):
    """A schedule definition that cannot fire; names the field and the fix."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"invalid schedule: {field}: {problem}")


class InvalidTransition(JobsysError):
    """The run (or schedule) is not in a state that allows the requested action."""

    def __init__(self, run_id: str, state: str, action: str, kind: str = "run") -> None:
        self.run_id, self.state, self.action = run_id, state, action
        super().__init__(f"cannot {action} {kind} {run_id!r}: it is {state}")


class NotExternal(JobsysError):
    """Taking a run of a job that workers run: only external jobs' runs are taken."""

    def __init__(self, job: str) -> None:
        self.job = job
        super().__init__(
            f"job {job!r} is run by workers, not taken by an outside actor: only the runs of "
            "external jobs (@job(..., external=True)) can be taken"
        )


class NothingToTake(JobsysError):
    """No run of an external job waits for an actor now."""

    def __init__(self, job: str) -> None:
        self.job = job
        super().__init__(
            f"no run of job {job!r} waits for an actor now: submit one, or try again later"
        )


class WaitTimeout(JobsysError):
    """``wait`` gave up before the run finished; the run goes on, wait again or cancel it."""

    def __init__(self, run_id: str, seconds: float, waiting: str | None = None) -> None:
        self.run_id = run_id
        self.waiting = waiting
        """Why the run waits, when known (``RunRecord.waiting``)."""
        message = f"run {run_id!r} still not finished after {seconds:g} s"
        super().__init__(f"{message}: {waiting}" if waiting else message)


class BrokerUnavailable(JobsysError):
    """The broker could not be reached; start `jobsys up` or set JOBSYS_BROKER_URL."""


class SemanticSearchOff(JobsysError):
    """Semantic or hybrid search was asked for, but no embedder is set; set JOBSYS_EMBEDDER
    (``openai:URL`` or ``python:module:callable``) on the server and the workers, or search
    with mode=keyword."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        super().__init__(
            f"{mode} search needs an embedder: set JOBSYS_EMBEDDER=openai:https://host/v1/"
            "embeddings (or python:module:callable) on the server and the workers, or search "
            "with mode=keyword"
        )


class EmbedderUnavailable(JobsysError):
    """The embedder (JOBSYS_EMBEDDER) failed or answered something that is not vectors; the
    message says what it answered. Check its URL, JOBSYS_EMBEDDER_MODEL and _KEY, or search
    with mode=keyword meanwhile."""


class SchemaTooNew(JobsysError):
    """The database schema is newer than this jobsys; upgrade jobsys on this machine."""


# --- Raised inside job bodies -------------------------------------------------------------


class JobError(JobsysError):
    """Base of the errors a job body may raise to steer jobsys."""


class Retry(JobError):
    """Ask for another attempt, optionally after ``delay`` seconds instead of the backoff."""

    def __init__(self, message: str = "retry requested", delay: float | None = None) -> None:
        if delay is not None:
            problem = bounds.seconds(delay, bounds.MAX_BACKOFF)
            if problem:  # refused where it is written: the attempt fails saying so
                raise ValueError(f"Retry(delay=...) {problem}")
        self.delay = delay
        super().__init__(message)


class Fatal(JobError):
    """Fail the run now, whatever the retry policy says."""


class BackOff(JobError):
    """Raised from a job body when the service it calls said to wait (a 429 with
    ``Retry-After``): the run goes back to pending for ``seconds`` without using an attempt
    (its attempt number stays), and says why it waits (``waiting`` reason ``backoff``).
    ``seconds`` from 0 to 366 days; anything else is refused where it is written."""

    def __init__(self, seconds: float, reason: str | None = None) -> None:
        problem = bounds.seconds(seconds, bounds.MAX_COUNTDOWN)
        if problem:  # refused where it is written: the attempt fails saying so
            raise ValueError(f"BackOff(seconds) {problem}")
        self.seconds, self.reason = float(seconds), reason
        super().__init__(reason or f"backing off for {float(seconds):g} s")


class RunCancelled(JobError):
    """The run was cancelled; raised inside the job body by ``ctx.check_cancelled()``."""


class HandBack(BaseException):
    """Raised inside a job body whose worker is stopping and whose shutdown grace is over:
    the run is handed back (pending again) for another worker. A ``BaseException``, so
    that a body's ``except Exception`` does not swallow it."""


class JobTimeout(JobError):
    """The run went past its timeout."""


class ToolError(JobsysError):
    """An MCP tool call the server cannot take (an unknown tool); the message names the
    closest tools."""


class RunFailed(JobsysError):
    """The run ended failed or cancelled; ``record`` holds the error and the logs tell more."""

    def __init__(self, run_id: str, state: str, error: dict[str, Any] | None) -> None:
        self.run_id, self.state, self.error = run_id, state, error or {}
        detail = f"{self.error.get('type')}: {self.error.get('message')}" if error else state
        super().__init__(f"run {run_id} {state}: {detail}")


def field_errors(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    """Field-level errors of a pydantic validation, in the shape jobsys reports them (an
    ``InvalidInput``'s ``errors``)."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


# --- How each interface answers an error ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Answer:
    """How the interfaces answer one kind of error. The CLI exits with ``exit_code`` (0 is
    success; 1 a run failed or a service is down; 2 bad input or an unknown name or id; 3
    not allowed); the HTTP API answers ``http_status``; an MCP tool answers a tool error. The
    HTTP API and MCP give the same body (``body``): the error's class name as ``type``, its
    message, and its ``fields``."""

    exit_code: int
    http_status: int


BAD_INPUT = Answer(2, 422)
NOT_FOUND = Answer(2, 404)
WRONG_STATE = Answer(2, 409)
UNAVAILABLE = Answer(1, 503)

ANSWERS: dict[type[JobsysError], Answer] = {
    JobsysError: Answer(1, 400),
    ConfigError: UNAVAILABLE,
    JobDeclarationError: BAD_INPUT,
    UnknownJob: NOT_FOUND,
    InvalidInput: BAD_INPUT,
    InvalidFilter: BAD_INPUT,
    RunNotFound: NOT_FOUND,
    WorkflowDeclarationError: BAD_INPUT,
    WorkflowNotFound: NOT_FOUND,
    ScheduleNotFound: NOT_FOUND,
    SubscriptionNotFound: NOT_FOUND,
    TokenNotFound: NOT_FOUND,
    PermissionDenied: Answer(3, 403),
    NotOwner: Answer(3, 403),
    Unauthenticated: Answer(3, 401),
    NotScheduled: Answer(1, 422),
    InvalidSchedule: BAD_INPUT,
    InvalidTransition: WRONG_STATE,
    NotExternal: WRONG_STATE,
    NothingToTake: NOT_FOUND,
    WaitTimeout: Answer(1, 409),
    BrokerUnavailable: UNAVAILABLE,
    SchemaTooNew: UNAVAILABLE,
    SemanticSearchOff: BAD_INPUT,
    EmbedderUnavailable: UNAVAILABLE,
    JobError: Answer(1, 400),
    Retry: Answer(1, 400),
    Fatal: Answer(1, 400),
    BackOff: Answer(1, 400),
    RunCancelled: Answer(1, 400),
    JobTimeout: Answer(1, 400),
    ToolError: Answer(2, 404),
    RunFailed: Answer(1, 409),
}
"""The one table of how each jobsys error is answered: the CLI's exit code, the HTTP status
and (with ``body``) the MCP tool error are all read from it. A subclass not in it is answered
as its nearest base class; ``tests/unit/test_errors.py`` checks every class is in it."""


def answer(exc: JobsysError | type[JobsysError]) -> Answer:
    """How the interfaces answer ``exc`` (its class, else its nearest base class, in
    ``ANSWERS``)."""
    kind = exc if isinstance(exc, type) else type(exc)
    for base in kind.__mro__:
        if base in ANSWERS:
            return ANSWERS[base]
    raise AssertionError(f"{kind.__name__} is not a JobsysError")


def fields(exc: JobsysError) -> list[dict[str, Any]]:
    """The field-level problems an error names (``loc``, ``msg``, ``type``), empty if none."""
    if isinstance(exc, InvalidInput):
        return list(exc.errors)
    if isinstance(exc, InvalidSchedule):
        return [{"loc": [exc.field], "msg": exc.problem, "type": "invalid_schedule"}]
    if isinstance(exc, JobDeclarationError):
        return [{"loc": exc.field.split("."), "msg": exc.problem, "type": "invalid_job"}]
    if isinstance(exc, WorkflowDeclarationError):
        return [{"loc": [exc.step, exc.field], "msg": exc.problem, "type": "invalid_workflow"}]
    return []
