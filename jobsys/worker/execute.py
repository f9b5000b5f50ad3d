"""The worker-side pipeline of one delivery, free of Celery.

claim -> validate input -> run the body under the tracker -> validate output -> classify ->
record. ``run`` returns an ``Outcome``; the Celery adapter in ``broker.py`` acts on it
(publishes the retry, stores the result). Everything here is testable without a broker.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
from typing import Any

import pydantic

from jobsys.base import errors, sealing
from jobsys.declare import jobs, permissions
from jobsys.store import rows, runs, stores
from jobsys.worker import context, deadline, gates

log = logging.getLogger("jobsys.execute")


class Kind(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRY = "retry"
    HANDED_BACK = "handed_back"
    """The worker is stopping: the run is pending again, for the next worker."""
    STALE = "stale"
    """The message was a duplicate, or the run had moved on: nothing was done."""
    WAITING = "waiting"
    """The run waits on a limit (``gates.py``): pending again, its attempt given back; its
    message (``dispatch``, countdown ``delay``) to publish, if it has one."""
    PAUSED = "paused"
    """A pause holds the run: it waits, parked, until resumed (``store.pauses``)."""


@dataclasses.dataclass(frozen=True)
class Delivery:
    """The message on the wire (JSON): which run, and the token of this message. The input
    and the principal come from the run record."""

    run_id: str
    dispatch: int


@dataclasses.dataclass(frozen=True)
class Outcome:
    kind: Kind
    output: Any = None
    error: dict[str, Any] | None = None
    delay: float = 0.0
    dispatch: int | None = None
    """For ``RETRY`` and ``HANDED_BACK``: the token of the message to publish."""
    priority: int | None = None
    """For ``RETRY`` and ``HANDED_BACK``: the run's priority, that message's."""
    workflow_id: str | None = None
    """The workflow run this run is a step of: it moves on once the step's run has ended."""
    has_dependents: bool = False
    """Other runs wait for this one: its end releases them."""
    waited: str | None = None
    """For ``WAITING``: why (``concurrency_limit``, ``rate_limit``, ``backoff``)."""


@dataclasses.dataclass(frozen=True)
class Limits:
    lease: float
    timeout_errors: tuple[type[BaseException], ...] = ()
    """Exception types that mean "over the time limit" (Celery's soft limit)."""
    inline_hard_grace: float | None = None
    """Set when jobs run in the consuming process: jobsys enforces the soft limit itself and
    the hard limit (timeout + this grace) by ending the process."""
    delay_horizon: float = 60.0
    """A run waiting on a limit longer than this waits in the store, not on the broker."""
    rates: gates.Rates | None = None
    """The rate limits of jobs that declare one (``gates.Rates``)."""


def run(
    delivery: Delivery,
    spec: jobs.JobSpec,
    store: stores.Store,
    tracker: context.Tracker,
    limits: Limits,
    policy: permissions.Policy | None = None,
    sealer: sealing.Sealer | None = None,
) -> Outcome:
    """Execute one delivery of a run and record what happened."""
    if spec.flow is None:
        claim = store.claim(delivery.run_id, delivery.dispatch, limits.lease, spec.timeout)
    else:  # a job with limits: a slot, a rate (``gates.py``)
        gated = gates.claim(
            spec,
            delivery.run_id,
            delivery.dispatch,
            store,
            limits.lease,
            limits.delay_horizon,
            limits.rates,
        )
        if isinstance(gated, gates.Wait):
            return Outcome(
                Kind.WAITING,
                delay=gated.delay,
                dispatch=gated.dispatch,
                waited=gated.reason,
                priority=gated.priority,
            )
        claim = gated
    if claim is None:
        # Off the per-job path: only a message whose claim changed nothing gets here.
        pause = store.pauses.park(delivery.run_id, delivery.dispatch)
        if pause is not None:
            log.info(
                "jobsys: run %s parked: %s",
                delivery.run_id,
                pause.describe(),
                extra={"action": "run_paused", "run_id": delivery.run_id},
            )
            return Outcome(Kind.PAUSED)
        log.info(
            "jobsys: ignored stale or duplicate message for run %s",
            delivery.run_id,
            extra={"action": "message_stale", "run_id": delivery.run_id},
        )
        return Outcome(Kind.STALE)
    spec = _own_limits(spec, claim, store)
    outcome = _claimed(claim, spec, store, tracker, limits, policy, sealer)
    return dataclasses.replace(
        outcome,
        workflow_id=claim.workflow_id,
        has_dependents=claim.has_dependents,
        priority=claim.priority,
    )


def _own_limits(spec: jobs.JobSpec, claim: runs.Claim, store: stores.Store) -> jobs.JobSpec:
    """The job with this run's own timeout and retry policy, where they differ from the
    job's (a workflow step's overrides; its backoff in ``meta["retry"]``)."""
    timeout = claim.timeout if claim.timeout is not None else spec.timeout
    attempts = claim.max_attempts if claim.max_attempts is not None else spec.retry.max_attempts
    override = claim.meta.get("retry")
    if timeout == spec.timeout and attempts == spec.retry.max_attempts and not override:
        return spec
    retry = dataclasses.replace(spec.retry, **(override or {}), max_attempts=attempts)
    if timeout != spec.timeout:
        store.set_deadline(
            claim.run_id, claim.attempt, runs.utcnow() + dt.timedelta(seconds=timeout)
        )
    return dataclasses.replace(spec, timeout=timeout, retry=retry)


def _claimed(
    claim: runs.Claim,
    spec: jobs.JobSpec,
    store: stores.Store,
    tracker: context.Tracker,
    limits: Limits,
    policy: permissions.Policy | None,
    sealer: sealing.Sealer | None,
) -> Outcome:
    hidden = sealer.open(claim.sealed) if sealer is not None and claim.sealed else {}
    redact = sealing.Redactor(hidden.values()) if hidden else sealing.NOTHING
    try:
        full = sealing.merge(claim.input, hidden) if hidden else claim.input
        payload = spec.input_model.model_validate(full)
        principal = permissions.Principal.model_validate(claim.principal)
    except pydantic.ValidationError as exc:
        invalid = errors.InvalidInput(spec.name, errors.field_errors(exc))
        error = rows.run_error("input_validation", invalid, traceback=True)
        store.fail(claim.run_id, claim.attempt, error)
        return Outcome(Kind.FAILED, error=error)
    # Checked again here, whatever the producer checked: a run written straight into the
    # store or the broker by someone without the right never runs its body.
    if policy is not None and not policy.allows(principal, "execute", spec, claim.input):
        denied = errors.PermissionDenied(principal.id, "execute", spec.name)
        error = rows.run_error("permission", denied, traceback=True)
        store.fail(claim.run_id, claim.attempt, error)
        return Outcome(Kind.FAILED, error=error)
    ctx = context.JobContext(
        claim.run_id,
        spec.name,
        claim.attempt,
        principal,
        claim.meta,
        claim.schedule_id,
        claim.fire_at,
        claim.trigger,
        dependencies=(
            store.outputs(claim.meta["depends_on"]) if claim.meta.get("depends_on") else {}
        ),
        _schedules=store.schedules if claim.schedule_id else None,
        _redact=redact,
    )
    try:
        result = _call(spec, payload, ctx, tracker, limits)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        if isinstance(exc, errors.HandBack):
            return _hand_back(ctx, store)
        if isinstance(exc, errors.BackOff) and not ctx.cancelled:
            wait = gates.back_off(ctx.run_id, ctx.attempt, exc, store, limits.delay_horizon)
            if wait is None:
                return Outcome(Kind.CANCELLED)
            return Outcome(
                Kind.WAITING, delay=wait.delay, dispatch=wait.dispatch, waited=wait.reason
            )
        return _failure(exc, ctx, spec, store, limits, redact)
    return _success(result, ctx, spec, store, redact)


def _call(
    spec: jobs.JobSpec,
    payload: Any,
    ctx: context.JobContext,
    tracker: context.Tracker,
    limits: Limits,
) -> Any:
    if limits.inline_hard_grace is None:
        with tracker.holding(ctx):
            return spec.fn(payload, ctx) if spec.wants_context else spec.fn(payload)
    hard = spec.timeout + limits.inline_hard_grace
    with tracker.holding(ctx, hard_limit=hard), deadline.soft_limit(spec.timeout):
        return spec.fn(payload, ctx) if spec.wants_context else spec.fn(payload)


def _success(
    result: Any,
    ctx: context.JobContext,
    spec: jobs.JobSpec,
    store: stores.Store,
    redact: sealing.Redactor,
) -> Outcome:
    try:
        model = (
            result
            if isinstance(result, spec.output_model)
            else (spec.output_model.model_validate(result))
        )
        output = redact.json(model.model_dump(mode="json"))
    except pydantic.ValidationError as exc:
        invalid = errors.InvalidInput(spec.name, errors.field_errors(exc), "output")
        error = redact.json(rows.run_error("output_validation", invalid, traceback=True))
        store.fail(ctx.run_id, ctx.attempt, error)
        return Outcome(Kind.FAILED, error=error)
    problems = runs.nul_errors(output)
    if problems:
        return _not_stored(errors.InvalidInput(spec.name, problems, "output"), ctx, store)
    try:
        if not store.complete(ctx.run_id, ctx.attempt, output):
            return Outcome(Kind.STALE)
    except Exception as exc:  # the database refused the output: fail now, saying why
        if store.broken(exc):
            raise
        return _not_stored(exc, ctx, store)
    return Outcome(Kind.COMPLETED, output=output)


def _hand_back(ctx: context.JobContext, store: stores.Store) -> Outcome:
    """The worker stops before the run ended: pending again, with a new message token."""
    record = store.hand_back(
        ctx.run_id, ctx.attempt, "handed back: its worker stopped before it ended; it runs again"
    )
    if record is None:
        return Outcome(Kind.STALE)
    if record.state is runs.RunState.CANCELLED:  # it was asked to cancel: it ends here
        return Outcome(Kind.CANCELLED, error=record.error)
    log.warning(
        "jobsys: run %s handed back (its worker is stopping)",
        ctx.run_id,
        extra={"action": "hand_back", "run_id": ctx.run_id},
    )
    return Outcome(Kind.HANDED_BACK, dispatch=record.dispatch)


def _not_stored(exc: Exception, ctx: context.JobContext, store: stores.Store) -> Outcome:
    """Fail the run at once when its output cannot be stored (rather than leave it running
    until its timeout, the cause lost)."""
    message = f"the output could not be stored: {exc}"
    error = rows.run_error("output_validation", exc, message, traceback=True)
    log.warning(
        "jobsys: run %s: output not stored (%s)",
        ctx.run_id,
        error["message"],
        extra={"action": "output_not_stored", "run_id": ctx.run_id},
    )
    done = store.fail(ctx.run_id, ctx.attempt, error)
    return Outcome(Kind.FAILED if done else Kind.STALE, error=error)


def _failure(
    exc: BaseException,
    ctx: context.JobContext,
    spec: jobs.JobSpec,
    store: stores.Store,
    limits: Limits,
    redact: sealing.Redactor,
) -> Outcome:
    if isinstance(exc, limits.timeout_errors):
        wrapped = errors.JobTimeout(f"run went past its {spec.timeout:g} s timeout")
        wrapped.__traceback__ = exc.__traceback__
        exc = wrapped
    if ctx.cancelled or isinstance(exc, errors.RunCancelled):
        error = redact.json(rows.run_error("cancelled", exc, traceback=True))
        done = store.cancelled(ctx.run_id, ctx.attempt, error)
        return Outcome(Kind.CANCELLED if done else Kind.STALE, error=error)
    reason = "timeout" if isinstance(exc, errors.JobTimeout) else "exception"
    error = redact.json(rows.run_error(reason, exc, traceback=True))
    if spec.retry.should_retry(exc, ctx.attempt):
        delay = (
            exc.delay
            if isinstance(exc, errors.Retry) and exc.delay is not None
            else (spec.retry.next_delay(ctx.attempt))
        )
        token = store.schedule_retry(ctx.run_id, ctx.attempt, error, delay)
        if token is None:
            return Outcome(Kind.STALE)
        log.info(
            "jobsys: run %s attempt %d failed, retrying in %.2f s",
            ctx.run_id,
            ctx.attempt,
            delay,
            extra={"action": "job_error_retry", "run_id": ctx.run_id},
        )
        return Outcome(Kind.RETRY, error=error, delay=delay, dispatch=token)
    done = store.fail(ctx.run_id, ctx.attempt, error)
    return Outcome(Kind.FAILED if done else Kind.STALE, error=error)
