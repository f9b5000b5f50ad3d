"""The Celery side of jobsys: the app, one task per job, publishing, worker hooks (and, through
``parking.py``, what a worker does with the message of a job it does not know).

``make_celery`` builds a Celery app configured for safety (JSON only, late acks with
reject-on-worker-lost, prefetch 1, the run store as the ledger of delivery, UTC, task events) and
registers every job of the registry as a Celery task under the job's own name. Each task body
is one call into ``execute.run``; the adapter acts on the returned ``Outcome``.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import ssl
import sys
import threading
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from celery import Celery, signals, states
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from kombu import Queue

from jobsys.base import config, errors, sealing
from jobsys.declare import definitions, jobs, permissions
from jobsys.engine import presence, transport
from jobsys.store import definition_store, runs, stores
from jobsys.worker import context, execute

log = logging.getLogger("jobsys.broker")


class RunFailedResult(Exception):
    """Stored in Celery's result backend for a run that ended failed (the record has details)."""


@dataclasses.dataclass
class Runtime:
    """The per-process state a worker needs, created lazily after the process forks."""

    settings: config.Settings
    registry: jobs.Registry
    node: str | None = None
    """The Celery node name (``worker1@host``), recorded as the worker of each run."""
    inline: bool = False
    """Jobs run in the consuming process (Celery's solo pool under the jobsys supervisor):
    jobsys enforces the time limits itself."""
    _store: stores.Store | None = None
    _tracker: context.Tracker | None = None
    _stop_grace: float | None = None

    @property
    def store(self) -> stores.Store:
        if self._store is None:
            self._store = stores.Store.open(self.settings.database_url)
            if self.node:
                self._store.worker_name = self.node
            self.registry.attach(definition_store.source(self.settings, self._store.engine))
        return self._store

    @property
    def tracker(self) -> context.Tracker:
        if self._tracker is None:
            s = self.settings
            self._tracker = context.Tracker(
                self.store, s.lease_seconds, s.heartbeat_seconds, s.cancel_grace_seconds
            )
            if self._stop_grace is not None:
                self._tracker.stop_within(self._stop_grace)
        return self._tracker

    def stop_within(self, grace: float) -> None:
        """The worker is stopping: a run executing ``grace`` seconds from now is handed
        back. Called in a signal handler: creates nothing (no tracker yet: none runs)."""
        self._stop_grace = grace
        if self._tracker is not None:
            self._tracker.stop_within(grace)

    @functools.cached_property
    def sealer(self) -> sealing.Sealer:
        return sealing.Sealer.for_home(self.settings.secret_key, self.settings.home)

    @functools.cached_property
    def policy(self) -> permissions.Policy:
        return permissions.Policy(
            admin_roles=self.settings.admin_roles,
            superadmin_roles=self.settings.superadmin_roles,
        )

    @functools.cached_property
    def limits(self) -> execute.Limits:
        grace = self.settings.hard_timeout_grace_seconds if self.inline else None
        return execute.Limits(self.settings.lease_seconds, (SoftTimeLimitExceeded,), grace)

    def after_fork(self) -> None:
        if self._store is not None:
            self._store.after_fork()
        self._tracker = None


def celery_config(settings: config.Settings) -> dict[str, Any]:
    """The Celery settings jobsys runs with (see README "How jobsys configures Celery")."""
    return {
        "broker_url": settings.resolved_broker_url(),
        "broker_transport": "jobsys.engine.transport:Transport",
        "result_backend": settings.resolved_result_url(),
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": settings.prefetch,
        # The run store, not the broker, is the ledger of delivery: a claimed run whose worker
        # dies is requeued when its lease expires, and a waiting run whose message was lost
        # (popped by a worker that died before claiming it, or lost by Redis) is published
        # again by the reconciler. kombu's emulated acknowledgements (a hash of unacked
        # messages, restored after a visibility timeout of an hour) would only repeat that,
        # later, at the price of two Redis round trips per job.
        "broker_transport_options": {
            "ack_emulation": False,
            "socket_connect_timeout": 5,
            "socket_keepalive": True,
            "health_check_interval": 25,
            "retry_on_timeout": True,
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_soft_shutdown_timeout": 10.0,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_deduplicate_successful_tasks": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 5,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 3,
        },
        "result_expires": settings.result_expires,
        "result_extended": False,
        "result_backend_always_retry": True,
        "result_backend_max_retries": 10,
        "redis_backend_health_check_interval": 25,
        "redis_socket_keepalive": True,
        "redis_retry_on_timeout": True,
        "redis_socket_connect_timeout": 5,
        # Events cost a broker round trip each; Flower switches them on in the workers
        # (enable_events) while it watches, or JOBSYS_TASK_EVENTS=1 keeps them always on.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "task_track_started": False,
        "timezone": "UTC",
        "enable_utc": True,
        "task_default_queue": "jobs",
        "worker_hijack_root_logger": False,
        **tls_config(settings),
    }


def tls_config(settings: config.Settings) -> dict[str, Any]:
    """TLS for a ``rediss://`` broker or result URL that says nothing of it: verify the
    server's certificate against the system's authorities (kombu would otherwise connect in
    clear through jobsys's transport, and Celery's backend refuses such a URL). A URL with
    ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile`` or ``ssl_keyfile`` in its query is
    taken as it is."""
    found: dict[str, Any] = {}
    if _bare_rediss(settings.resolved_broker_url()):
        found["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if _bare_rediss(settings.resolved_result_url()):
        found["redis_backend_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return found


def _bare_rediss(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "rediss" and not any(
        key.startswith("ssl_") for key in urllib.parse.parse_qs(parts.query)
    )


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
    try:
        return act(task.app, spec, delivery, outcome)
    finally:
        if outcome.kind is execute.Kind.CANCELLED:
            _revoked_event(task)
        if outcome.kind in ENDED:
            if outcome.workflow_id:
                advance_workflow(task.app, runtime, outcome.workflow_id)
            if outcome.has_dependents:
                release_dependents(task.app, runtime, delivery.run_id)


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
            error = {
                "type": "UnknownJob",
                "message": f"job {job} is no longer registered (removed after this run was "
                "submitted); register it again and retry the run",
                "reason": "unknown_job",
                "traceback": None,
            }
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

    _task(
        app,
        body,
        spec.name,
        soft_time_limit=spec.timeout,
        time_limit=spec.timeout + runtime.settings.hard_timeout_grace_seconds,
        queue=spec.queue,
        priority=spec.priority,
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
        publish(app, spec, delivery.run_id, outcome.dispatch, countdown=outcome.delay)
        raise Ignore()
    if kind is execute.Kind.HANDED_BACK:
        # The message was taken off the queue when it was received (no acknowledgement
        # emulation): the run's next message is a new one, with the run's new token. If it
        # cannot be sent, the reconciler sends it (the run is pending, its message old).
        assert outcome.dispatch is not None
        try:
            publish(app, spec, delivery.run_id, outcome.dispatch)
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


def store_result(app: Celery, run_id: str, state: str, result: Any, retry: bool = True) -> None:
    """Write Celery's result entry for a run in one round trip (SET with expiry + PUBLISH to
    wake waiters). Celery's own store reads the key first; the run record already guards
    against duplicates, so that read is not needed. ``retry=False``: one attempt, for a
    caller waiting on the answer (a Redis that is down fails at once, not after ~20 s of
    retries)."""
    backend = app.backend
    meta = {
        "status": state,
        "result": result,
        "traceback": None,
        "children": [],
        "date_done": datetime.now(UTC).isoformat(),
        "task_id": run_id,
    }
    policy = {} if retry else {"max_retries": 0}
    backend.set(backend.get_key_for_task(run_id), backend.encode(meta), **policy)


def publish(
    app: Celery,
    spec: jobs.JobSpec,
    run_id: str,
    dispatch: int,
    countdown: float | None = None,
    priority: int | None = None,
    producer: Any = None,
) -> None:
    """Put one run's message on the broker (JSON), in Celery's task protocol 2.

    Built and sent with Celery's own message builder and sender (``app.amqp``), as
    ``send_task`` does, without what ``send_task`` adds that jobsys does not use (routers,
    a result object, parent-task links): that cost 60 us of the 550 of a submit.
    """
    dynamic = bool(spec.task)  # registered at runtime: the task is shared, limits per message
    message = app.amqp.as_task_v2(
        run_id,
        spec.task or spec.name,
        args=(),
        kwargs={"run_id": run_id, "dispatch": dispatch},
        countdown=countdown or None,
        # Waiters subscribe in Client.wait; the worker stores results itself.
        ignore_result=True,
        # What logs, events and Flower show of the arguments: the run id, never the input
        # (it may hold secrets; the run record has it). Also spares a repr of every message.
        argsrepr="()",
        # A job registered at runtime is the shared task: name the job for Flower.
        kwargsrepr=(
            f"{{'run_id': '{run_id}', 'job': '{spec.name}'}}"
            if dynamic
            else f"{{'run_id': '{run_id}'}}"
        ),
        create_sent_event=app.conf.task_send_sent_event,
        timezone=app.timezone,
        soft_time_limit=spec.timeout if dynamic else None,
        time_limit=spec.timeout + app.conf.get("jobsys_hard_grace", 10.0) if dynamic else None,
    )
    with app.producer_or_acquire(producer) as P:
        app.amqp.send_task_message(
            P,
            spec.task or spec.name,
            message,
            # Sent through the anonymous exchange (the routing key is the queue): there is
            # nothing to declare on Redis, and consumers declare the queues they read.
            queue=spec.queue,
            declare=[],
            priority=spec.priority if priority is None else priority,
            serializer="json",
        )


def publish_many(
    app: Celery,
    items: Sequence[tuple[jobs.JobSpec, dict[str, Any]]],
    countdown: float | None = None,
    held: dict[str, transport.Held] | None = None,
) -> None:
    """Publish new runs' messages (a job spec and a run row each) through one pipelined
    batch: one round trip per thousand messages instead of one each. A run whose message
    is in ``held`` (``hold``) has it pushed as it was built."""
    held = held or {}
    ready = [held[row["id"]] for _, row in items if row["id"] in held]
    rest = [(spec, row) for spec, row in items if row["id"] not in held]
    with app.producer_or_acquire() as producer:
        if ready:
            producer.channel.push(ready)
        if rest:
            with producer.batch():
                for spec, row in rest:
                    publish(app, spec, row["id"], 1, countdown, row["priority"], producer=producer)


def hold(app: Celery, items: Sequence[tuple[jobs.JobSpec, str]]) -> dict[str, transport.Held]:
    """Build the messages of runs to be made soon (a job spec and a run id each), without
    sending them: ``publish_many`` pushes them once the runs are recorded. Nothing is held
    when sending a message also announces it (``task_send_sent_event``): the announcement
    would come early; such messages are built when they are sent."""
    if app.conf.task_send_sent_event:
        return {}
    out: dict[str, transport.Held] = {}
    with app.producer_or_acquire() as producer:
        channel = producer.channel
        if not isinstance(channel, transport.Channel):
            return {}
        with channel.holding() as held:
            for spec, run_id in items:
                publish(app, spec, run_id, 1, priority=spec.priority, producer=producer)
                out[run_id] = held.pop()
    return out


def republish(app: Celery, registry: jobs.Registry, record: runs.RunRecord) -> None:
    """Publish a stored run again (reaper, reconciler): same input, its current token."""
    spec = registry.scoped(record.tenant).get(record.job)
    publish(app, spec, record.id, record.dispatch, priority=record.priority)


ENDED = (execute.Kind.COMPLETED, execute.Kind.FAILED, execute.Kind.CANCELLED)


def release_dependents(app: Celery, runtime: Runtime, run_id: str) -> None:
    """Runs blocked on ``run_id`` (which just ended) whose dependencies are all done: publish
    them, or fail them if one of their dependencies failed."""
    try:
        for dependent in runtime.store.dependents(run_id):
            released = runtime.store.release(dependent)
            if released is not None:
                republish(app, runtime.registry, released)
    except Exception:
        # The reaper releases blocked runs on every pass: nothing is lost.
        log.exception("jobsys: releasing the runs that wait for %s failed", run_id)


def advance_workflow(app: Celery, runtime: Runtime, workflow_id: str) -> None:
    """Move a workflow run on (its step's run ended); publishing the steps it starts."""
    store = runtime.store.workflows
    try:
        record = store.get(workflow_id)
        wf = record.workflow_def  # as it was when the run started
        if any(s.job not in runtime.registry.scoped(record.tenant) for s in wf.steps):
            return  # a process that loads the jobs of its steps moves it on

        def send(spec: jobs.JobSpec, row: dict[str, Any], delay: float) -> None:
            publish(app, spec, row["id"], 1, countdown=delay or None, priority=row["priority"])

        store.advance(wf, workflow_id, runtime.registry, send, runtime.sealer)
    except Exception:
        # The reaper advances running workflows on every pass: nothing is lost.
        log.exception("jobsys: advancing workflow %s failed", workflow_id)


class Reaper:
    """A thread of each worker's main process: requeues or fails runs whose worker is gone,
    and publishes again waiting runs whose message was lost. Guarded transitions make many
    reapers at once harmless."""

    def __init__(self, app: Celery, runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jobsys-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        self.announce()
        while not self._stop.wait(self.runtime.settings.reaper_seconds):
            self.announce()
            try:
                self.reap_once()
            except Exception:
                log.exception("jobsys reaper: pass failed", extra={"action": "reaper_error"})

    def announce(self) -> None:
        """Say in Redis which jobs this worker runs (``parking.py``): from this thread, which
        goes on while a job runs, so a busy worker still counts as one that knows its jobs."""
        parking = getattr(self.app, "jobsys_parking", None)
        if parking is None:
            return
        try:
            consumed = set(self.app.amqp.queues.consume_from)
            with self.app.producer_or_acquire() as producer:
                parking.announce(producer.channel, consumed)
        except Exception as exc:
            log.warning("jobsys reaper: could not announce this worker's jobs: %s", exc)

    def reap_once(self) -> runs.ReapResult:
        s, store, now = self.runtime.settings, self.runtime.store, runs.utcnow()
        result = store.reap(now, s.max_deliveries, s.hard_timeout_grace_seconds)
        for record in result.requeued:
            self._publish(record)
        for run_id in result.failed:  # wake waiters; the record says why
            exc = RunFailedResult("ended by the reaper (worker lost or past its hard limit)")
            store_result(self.app, run_id, states.FAILURE, self.app.backend.prepare_exception(exc))
        for workflow_id in store.workflows.running():
            advance_workflow(self.app, self.runtime, workflow_id)
        for blocked in store.blocked():
            released = store.release(blocked)
            if released is not None:
                self._publish(released)
        for record in store.stale_waiting(now, s.reconcile_seconds):
            # Same token: if the first message still exists, whichever copy comes second is
            # a no-op, so a deep backlog is never reshuffled.
            self._publish(record)
        if result.requeued or result.failed:
            log.warning(
                "jobsys reaper: requeued %d, failed %d lost runs",
                len(result.requeued),
                len(result.failed),
                extra={"action": "reaper_pass"},
            )
        return result

    def _publish(self, record: runs.RunRecord) -> None:
        if record.job not in self.runtime.registry.scoped(record.tenant):
            return  # another worker (another catalog) publishes the jobs it knows
        republish(self.app, self.runtime.registry, record)
        self.runtime.store.mark_published(record.id, record.dispatch)


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
        runtime.store.count()  # open and migrate the store once, before children use it
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
