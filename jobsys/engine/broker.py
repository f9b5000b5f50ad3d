"""The Celery side of jobsys: the app, one task per job, and the worker hooks (and, through
``parking.py``, what a worker does with the message of a job it does not know). Its parts:
the settings (``celery_config.py``), a worker's per-process state (``runtime.py``),
publishing and results (``publishing.py``), and what follows a run's end and the reaper
(``reaper.py``); their names stay importable from here.

``make_celery`` builds a Celery app configured for safety (JSON only, late acks with
reject-on-worker-lost, prefetch 1, the run store as the ledger of delivery, UTC, task events) and
registers every job of the registry as a Celery task under the job's own name. Each task body
is one call into ``execute.run``; the adapter acts on the returned ``Outcome``.
"""

from __future__ import annotations

import gc
import logging
import sys
from typing import Any

from celery import Celery, signals, states
from celery.exceptions import Ignore
from kombu import Queue

from jobsys.base import config, errors
from jobsys.declare import definitions, jobs
from jobsys.engine import hooks, presence
from jobsys.engine.celery_config import celery_config, tls_config
from jobsys.engine.publishing import (
    RunFailedResult,
    broker_priority,
    hold,
    publish,
    publish_front,
    publish_many,
    republish,
    store_result,
)
from jobsys.engine.reaper import (
    Reaper,
    advance_workflow,
    frees_slot,
    release_dependents,
    wake_waiting,
)
from jobsys.engine.runtime import Runtime
from jobsys.store import rows
from jobsys.worker import execute

__all__ = [
    "ENDED",
    "Reaper",
    "RunFailedResult",
    "Runtime",
    "act",
    "advance_workflow",
    "broker_priority",
    "celery_config",
    "deliver",
    "hold",
    "install_worker_hooks",
    "make_celery",
    "publish",
    "publish_front",
    "publish_many",
    "release_dependents",
    "republish",
    "store_result",
    "tls_config",
]

log = logging.getLogger("jobsys.broker")

ENDED = (execute.Kind.COMPLETED, execute.Kind.FAILED, execute.Kind.CANCELLED)
STARTUP_WAIT = 120.0
"""Seconds a starting worker keeps trying to reach the run store before it gives up."""


def make_celery(
    settings: config.Settings, registry: jobs.Registry, runtime: Runtime | None = None
) -> Celery:
    """The Celery app of a jobsys process, with one task per job of ``registry``.

    Workers pass the ``runtime`` their task bodies use; producers need none.
    """
    app = Celery("jobsys", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.jobsys_hard_grace = settings.hard_timeout_grace_seconds
    runtime = runtime or Runtime(settings, registry)
    # Declare every job's queue, so a worker started without -Q consumes all of them.
    app.conf.task_queues = [Queue(q, routing_key=q) for q in sorted(registry.queues())]
    for spec in registry.catalog():  # (runtime jobs share DYNAMIC_TASK)
        _register(app, spec, runtime)
    _register_dynamic(app, runtime)
    return app


def deliver(task: Any, spec: jobs.JobSpec, runtime: Runtime, run_id: str, dispatch: int) -> Any:
    """Execute one message of a run and act on the outcome.

    Messages carry the run id and its message token only: the input and the principal are
    read from the run record when the run is claimed (a message forged into Redis cannot
    change them, and secrets never travel through the broker).
    """
    delivery = execute.Delivery(run_id, dispatch)
    outcome = execute.run(
        delivery,
        spec,
        runtime.store,
        runtime.tracker,
        runtime.limits,
        runtime.policy,
        runtime.sealer,
    )
    hook = hooks.before(spec, runtime, run_id, outcome) if spec.hooks else None
    try:
        return act(task.app, spec, delivery, outcome)
    finally:
        if outcome.kind is execute.Kind.CANCELLED:
            _revoked_event(task)
        if spec.flow is not None and frees_slot(outcome):
            wake_waiting(task.app, runtime, spec, delivery.run_id)
        if outcome.kind in ENDED:
            if outcome.workflow_id:
                advance_workflow(task.app, runtime, outcome.workflow_id)
            if outcome.has_dependents:
                release_dependents(task.app, runtime, delivery.run_id)
        if hook is not None:  # last: nothing of the run waits on it
            hooks.after(spec, delivery.run_id, hook)


def _revoked_event(task: Any) -> None:
    """Tell event watchers (Flower) that the run ended cancelled: Celery sends no event for a
    task that ends with ``Ignore``, and it would show as started for ever."""
    try:
        task.send_event("task-revoked", terminated=True, signum=None, expired=False)
    except Exception:  # only a monitor's view is at stake: the record is right
        log.debug("jobsys: task-revoked event not sent", exc_info=True)


def _register_dynamic(app: Celery, runtime: Runtime) -> None:
    """The task of the jobs registered at runtime: the job comes from the run record, its
    definition from the store (read again whenever it changed), in the run's tenant: the
    tenant of the run decides which definition runs."""

    def body(task: Any, run_id: str, dispatch: int, **_older: Any) -> Any:
        try:
            record = runtime.store.get(run_id)
        except errors.RunNotFound:
            log.warning("jobsys: message for unknown run %s ignored", run_id)
            raise Ignore() from None
        job = record.job
        try:
            spec = runtime.registry.scoped(record.tenant).get(job)
        except errors.UnknownJob:
            message = (
                f"job {job} is no longer registered (removed after this run was submitted); "
                "register it again and retry the run"
            )
            error = rows.run_error("unknown_job", "UnknownJob", message)
            if runtime.store.fail(run_id, None, error):
                exc = RunFailedResult(error["message"])
                store_result(
                    task.app, run_id, states.FAILURE, task.app.backend.prepare_exception(exc)
                )
            raise Ignore() from None
        return deliver(task, spec, runtime, run_id, dispatch)

    # Time limits come with each message (a runtime job's own timeout).
    _task(app, body, definitions.DYNAMIC_TASK)


def _register(app: Celery, spec: jobs.JobSpec, runtime: Runtime) -> None:
    def body(task: Any, run_id: str, dispatch: int, **_older: Any) -> Any:
        return deliver(task, spec, runtime, run_id, dispatch)

    def ignored(task: Any, run_id: str, dispatch: int, **_older: Any) -> Any:
        # An external job's runs are never published: a message forged or left over is
        # dropped, its run left as it is (pending, for an outside actor to take).
        log.warning("jobsys: message for run %s of external job %s ignored", run_id, spec.name)
        return None

    _task(
        app,
        ignored if spec.external else body,
        spec.name,
        soft_time_limit=spec.timeout,
        time_limit=spec.timeout + runtime.settings.hard_timeout_grace_seconds,
        queue=spec.queue,
        # What Celery sends a message of this task at when nothing else says (``celery
        # call``, Flower's "apply"): the job's priority, in kombu's numbers.
        priority=broker_priority(spec.priority),
    )


def _task(app: Celery, body: Any, name: str, **options: Any) -> None:
    """Register a task body with the delivery options every jobsys task has."""
    app.task(
        body,
        name=name,
        bind=True,
        typing=False,
        ignore_result=True,  # act() stores results itself, in one round trip
        acks_late=True,
        reject_on_worker_lost=True,
        **options,
    )


def act(
    app: Celery, spec: jobs.JobSpec, delivery: execute.Delivery, outcome: execute.Outcome
) -> Any:
    """Turn an ``Outcome`` into Celery's terms: a stored result, a retry message, or nothing."""
    kind = outcome.kind
    if kind is execute.Kind.COMPLETED:
        store_result(app, delivery.run_id, states.SUCCESS, outcome.output)
        return outcome.output
    if kind is execute.Kind.RETRY:
        assert outcome.dispatch is not None
        publish(
            app,
            spec,
            delivery.run_id,
            outcome.dispatch,
            countdown=outcome.delay,
            priority=outcome.priority,
        )
        raise Ignore()
    if kind is execute.Kind.WAITING:  # on a limit: its message, with the wait as countdown
        if outcome.dispatch is not None:
            publish(
                app,
                spec,
                delivery.run_id,
                outcome.dispatch,
                countdown=outcome.delay,
                priority=outcome.priority,
            )
        raise Ignore()
    if kind is execute.Kind.HANDED_BACK:
        # The message was taken off the queue when it was received (no acknowledgement
        # emulation): the run's next message is a new one, with the run's new token, at the
        # run's priority and at the front of its list (the run had its turn, as one the reaper
        # requeues). If it cannot be sent, the reconciler sends it (the run is pending, its
        # message old).
        assert outcome.dispatch is not None
        priority = spec.priority if outcome.priority is None else outcome.priority
        try:
            publish_front(app, spec, delivery.run_id, outcome.dispatch, priority)
        except Exception:
            log.exception("jobsys: run %s handed back, but not published", delivery.run_id)
        raise Ignore()
    if kind is execute.Kind.FAILED:
        error = outcome.error or {}
        exc = RunFailedResult(f"{error.get('type')}: {error.get('message')}")
        store_result(app, delivery.run_id, states.FAILURE, app.backend.prepare_exception(exc))
        raise exc
    if kind is execute.Kind.CANCELLED:
        cancelled = RunFailedResult("cancelled")
        store_result(app, delivery.run_id, states.REVOKED, app.backend.prepare_exception(cancelled))
    raise Ignore()


def _hand_back_on_warm_shutdown(runtime: Runtime) -> None:
    """A warm shutdown (SIGTERM) of an inline worker (solo pool: the run executes in this
    process) gives the running job the shutdown grace, then hands its run back. Under
    prefork, Celery's warm shutdown waits for the pool's processes."""

    def shutting_down(how: str = "", **_: Any) -> None:  # in the signal handler
        if runtime.inline and how == "Warm":
            runtime.stop_within(runtime.settings.shutdown_grace_seconds)

    signals.worker_shutting_down.connect(shutting_down, weak=False)


def install_worker_hooks(app: Celery, runtime: Runtime) -> Reaper:
    """Connect the per-process set-up of a worker: fresh connections after fork, the cancel
    signal handler in each executing process, and the reaper in the main process."""
    from jobsys.engine import parking  # workers only: it loads Celery's consumer

    parking.install(app, runtime)
    reaper = Reaper(app, runtime)

    def node_init(sender: Any = None, **_: Any) -> None:
        runtime.node = str(sender) if sender else None

    def pool_init(sender: Any = None, **_: Any) -> None:
        pool = getattr(sender, "pool_cls", "prefork")
        name = pool if isinstance(pool, str) else f"{pool.__module__}.{pool.__qualname__}"
        if "solo" in name:
            runtime.inline = True
        elif "prefork" not in name:
            # Celery logs and swallows exceptions from signal handlers: exit instead.
            print(
                f"jobsys: worker pool {name!r} cannot enforce job time limits; use "
                "`jobsys worker` (inline) or --pool prefork",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(2)

    def child_init(**_: Any) -> None:
        runtime.after_fork()
        runtime.tracker.install_cancel_handler()

    def ready(**_: Any) -> None:
        # Open and migrate the store once, before children use it; a database still starting
        # (or cut off for a moment) is waited for.
        runtime.open_store(wait=STARTUP_WAIT).count()
        reaper.start()
        # The start-up objects (modules, Celery's and SQLAlchemy's tables) live as long as
        # the process: move them out of the collector's sight, so that full collections
        # between jobs walk only what jobs allocate.
        gc.freeze()

    def shutdown(**_: Any) -> None:
        reaper.stop()
        if runtime._tracker is not None:
            runtime._tracker.stop()

    signals.celeryd_init.connect(node_init, weak=False)
    signals.worker_init.connect(pool_init, weak=False)
    signals.worker_process_init.connect(child_init, weak=False)
    signals.worker_ready.connect(ready, weak=False)
    _hand_back_on_warm_shutdown(runtime)
    signals.worker_shutdown.connect(shutdown, weak=False)
    signals.worker_process_shutdown.connect(shutdown, weak=False)
    presence.install(app, runtime)  # after ``ready`` above: the store is open
    return reaper
