"""The worker side of flow limits (``jobsys.declare.flow``), for the jobs that declare them:
the claim that takes a concurrency slot (``jobsys.store.limits``), the rate check after it
(the ``limits`` package's moving window, on the broker's Redis), a body's ``BackOff``, and
the wake-up of runs waiting for a slot when one frees.

A run over a limit is never held by its worker and never re-published in a loop: it goes back
to ``pending`` (its attempt given back), its ``waiting`` saying why, and its worker moves on
to the next message. Over its concurrency, it waits with no message at all until a slot of
its job or key frees (the end of a run that held one wakes the next; a reaper's pass wakes
them after a worker died). Over its rate, or backing off, it waits until a time: queued with
that countdown when it is within the delay horizon, else kept in the store for a reaper to
queue when due (README "Delays and start times").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from typing import Any

from jobsys.base import config, errors
from jobsys.declare import flow, jobs
from jobsys.store import limits, runs, stores

log = logging.getLogger("jobsys.gates")

RATE_UNREACHABLE_WAIT = 5.0
"""Seconds a run of a rate-limited job waits when the rate cannot be read (Redis down): a
rate that cannot be checked is not granted (fail closed)."""
PREFIX = "jobsys-rate"
MARGIN = 0.25
"""Of an interval (window / amount): how much after its place in line a run comes back, so
that the start it waits for has left the window when it does."""
_LINE = """
local now, first, interval, window = tonumber(ARGV[1]), tonumber(ARGV[2]),
    tonumber(ARGV[3]), tonumber(ARGV[4])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(first, last + interval)
redis.call('SET', KEYS[1], tostring(slot), 'PX', math.ceil((slot - now + window) * 1000))
return tostring(slot)
"""
"""The place in line of a run over its rate (a Lua script: atomic across processes)."""


@dataclasses.dataclass(frozen=True)
class Wait:
    """A run sent back to pending by a limit: its message to publish (``dispatch``, with
    ``delay`` as the countdown), or none (``dispatch`` ``None``: it waits for a slot, or in
    the store until due)."""

    reason: str
    dispatch: int | None = None
    delay: float = 0.0
    priority: int | None = None
    """The run's priority, its message's (``None``: the job's)."""


class Rates:
    """The rate limits of one worker process: a moving window per job (and key) in the
    broker's Redis (``limits.strategies.MovingWindowRateLimiter``: never more starts than the
    rate allows in any window, bursts up to it allowed), and a line of the runs told to wait:
    each is given the first free moment or one interval (window / amount) after the run
    before it, so that a backlog comes back at the rate instead of all at the next free
    moment (where all but one would be told to wait again)."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self._limiter: Any = None
        self._redis: Any = None
        self._script: Any = None

    def _line(self) -> Any:
        if self._script is None:
            self._script = self._redis.register_script(_LINE)
        return self._script

    def _open(self) -> Any:
        if self._limiter is None:
            import redis
            from limits.storage import RedisStorage
            from limits.strategies import MovingWindowRateLimiter

            url = self.settings.resolved_broker_url()
            self._redis = redis.Redis.from_url(url)
            storage = RedisStorage(url, key_prefix=PREFIX, wrap_exceptions=True)
            self._limiter = MovingWindowRateLimiter(storage)
        return self._limiter

    def wait(self, spec: jobs.JobSpec, ident: str) -> float:
        """0 if a run of ``spec`` with rate identity ``ident`` may start now (the start is
        counted); else the seconds it should wait."""
        assert spec.flow is not None
        item = flow.parse_rate(spec.name, spec.flow.rate)
        try:
            limiter = self._open()
            if limiter.hit(item, spec.name, ident):
                return 0.0
            reset = limiter.get_window_stats(item, spec.name, ident).reset_time
            now = time.time()
            window = float(item.get_expiry())
            # A place in line: the first free moment, or one interval (window / amount)
            # after the place given last, whichever is later.
            slot = self._line()(
                keys=[f"{PREFIX}:line:{spec.name}:{ident}"],
                args=[now, max(reset, now + 0.05), window / item.amount, window],
            )
            return float(slot) - now + MARGIN * window / item.amount
        except Exception as exc:  # fail closed: a rate not checked is not granted
            log.warning(
                "jobsys: rate of %s not checked (%s); the run waits %g s",
                spec.name,
                exc,
                RATE_UNREACHABLE_WAIT,
                extra={"action": "rate_unreachable"},
            )
            return RATE_UNREACHABLE_WAIT


def claim(
    spec: jobs.JobSpec,
    run_id: str,
    dispatch: int,
    store: stores.Store,
    lease: float,
    horizon: float,
    rates: Rates | None,
) -> runs.Claim | Wait | None:
    """Claim a run of a job with limits: a slot first (if it limits concurrency), then its
    rate (if it has one). ``None`` for a stale message; a ``Wait`` when it waits."""
    assert spec.flow is not None
    now = runs.utcnow()
    if spec.flow.concurrency:
        got = limits.claim(
            store.engine,
            spec.name,
            spec.flow,
            run_id,
            dispatch,
            now,
            now + dt.timedelta(seconds=lease),
            now + dt.timedelta(seconds=spec.timeout),
            store.worker_name,
            _pid(),
            _scope(spec, store, run_id),
        )
        if got is None:
            return None
        if got == limits.FULL:
            log.info(
                "jobsys: run %s waits for a free slot of %s",
                run_id,
                spec.name,
                extra={"action": "concurrency_limit", "run_id": run_id},
            )
            return Wait("concurrency_limit")
        assert isinstance(got, dict)
        claimed = runs.Claim(run_id, **got)
    else:
        found = store.claim(run_id, dispatch, lease, spec.timeout, now)
        if found is None:
            return None
        claimed = found
    if spec.flow.rate is None or rates is None:
        return claimed
    ident = _rate_ident(spec, claimed)
    delay = rates.wait(spec, ident)
    if delay <= 0:
        return claimed
    until = runs.utcnow() + dt.timedelta(seconds=delay)
    message = f"over its rate of {spec.flow.rate}"
    if spec.flow.rate_key is not None:
        message += f" for {spec.flow.rate_key} {ident!r}"
    waiting = _until("rate_limit", f"{message}: starts at {until:%H:%M:%S.%f} UTC", until)
    wait = _defer(claimed, store, until, waiting, horizon, delay)
    return None if wait is None else dataclasses.replace(wait, priority=claimed.priority)


def back_off(
    ctx_run_id: str,
    attempt: int,
    exc: errors.BackOff,
    store: stores.Store,
    horizon: float,
) -> Wait | None:
    """The body raised ``BackOff``: pending again for its seconds, its attempt given back."""
    until = runs.utcnow() + dt.timedelta(seconds=exc.seconds)
    said = f": {exc.reason}" if exc.reason else ""
    waiting = _until("backoff", f"backing off until {until:%Y-%m-%d %H:%M:%S} UTC{said}", until)
    claimed = runs.Claim(ctx_run_id, attempt, {})
    return _defer(claimed, store, until, waiting, horizon, exc.seconds)


def _defer(
    claimed: runs.Claim,
    store: stores.Store,
    until: dt.datetime,
    waiting: dict[str, Any],
    horizon: float,
    delay: float,
) -> Wait | None:
    reason = str(waiting["reason"])
    done = limits.defer(
        store.engine, claimed.run_id, claimed.attempt, until, waiting, horizon, runs.utcnow()
    )
    if done is None:  # asked to cancel meanwhile: it ends here
        error = {
            "type": "RunCancelled",
            "message": "cancelled while it waited",
            "reason": "cancelled",
        }
        store.cancelled(claimed.run_id, claimed.attempt, error)
        return None
    log.info(
        "jobsys: run %s waits %.2f s (%s)",
        claimed.run_id,
        delay,
        reason,
        extra={"action": reason, "run_id": claimed.run_id},
    )
    return Wait(reason, None if done.held else done.dispatch, delay)


def _until(reason: str, message: str, until: dt.datetime) -> dict[str, Any]:
    now = runs.utcnow()
    return {
        "reason": reason,
        "message": message,
        "until": until.astimezone(dt.UTC).isoformat(),
        "since": now.isoformat(),
    }


def _rate_ident(spec: jobs.JobSpec, claimed: runs.Claim) -> str:
    """The rate's identity of a run: the value of its ``rate_key`` (``*`` without one), under
    its tenant for a job registered at runtime (a tenant's own job); a catalog job's rate is
    shared by every tenant's runs, as the service it calls is."""
    assert spec.flow is not None
    principal = claimed.principal or {}
    tenant = str(principal.get("tenant", "default"))
    key = flow.key_of(spec.flow.rate_key, claimed.input, str(principal.get("id", "")), tenant)
    ident = "*" if key is None else key
    return f"{tenant}/{ident}" if spec.task else ident


def wake_after(store: stores.Store, spec: jobs.JobSpec, run_id: str) -> list[runs.RunRecord]:
    """A run of ``spec`` that held a slot ended (or went back to pending): take the next
    waiting one of its key, and the next of its job, off their wait, for the caller to
    publish (one of them may find the slot taken and wait again: no slot stays unused)."""
    if spec.flow is None or not spec.flow.concurrency:
        return []
    found = limits.key_of_run(store.engine, run_id)
    if found is None:
        return []
    key, tenant = found
    # A catalog job's slots are shared by every tenant's runs; a job registered at runtime
    # is its tenant's own.
    scope = tenant if spec.task else None
    now = runs.utcnow()
    woken: list[runs.RunRecord] = []
    if spec.flow.slots() is not None:
        woken += limits.wake(store.engine, spec.name, spec.flow, key or "", 1, now, scope)
    if spec.flow.max_concurrency is not None:  # (the oldest of every key: none starves)
        woken += limits.wake(store.engine, spec.name, spec.flow, None, 1, now, scope)
    return woken


def wake_free(store: stores.Store, registry: jobs.Registry) -> list[runs.RunRecord]:
    """A reaper's pass: for each job (and key) with runs waiting for a slot, take as many
    off their wait as it has free slots (slots freed by a worker that died, whose runs' ends
    woke no one), for the caller to publish."""
    now = runs.utcnow()
    woken: list[runs.RunRecord] = []
    for job, tenant, key in limits.gated_groups(store.engine):
        try:
            spec = registry.scoped(tenant).get(job)
        except errors.UnknownJob:
            continue
        if spec.flow is None or not spec.flow.concurrency:  # its limit was removed
            woken += limits.wake(store.engine, job, None, key, 1000, now, tenant)
            continue
        scope = tenant if spec.task else None
        count = limits.free_slots(store.engine, job, spec.flow, key, now, scope)
        keyed = key if spec.flow.slots() is not None else None
        woken += limits.wake(store.engine, job, spec.flow, keyed, count, now, tenant)
    return woken


def _scope(spec: jobs.JobSpec, store: stores.Store, run_id: str) -> str | None:
    """The tenant whose runs share the slots of ``spec``: a job registered at runtime is its
    tenant's own (``None``: a catalog job, whose slots every tenant's runs share)."""
    if not spec.task:
        return None
    found = limits.key_of_run(store.engine, run_id)
    return None if found is None else found[1]


def _pid() -> int:
    import os

    return os.getpid()
