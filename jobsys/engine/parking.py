"""Messages of jobs a worker does not know: set aside for a worker that does, never discarded.

Workers need not all load the same catalog (``JOBSYS_CATALOG``): during a rolling deploy a
new job is submitted while old workers still consume its queue, and ``jobsys bench`` runs its
own job next to the workers of a ``jobsys up``. Celery discards a message whose task it does
not know ("Received unregistered task ... ignored and discarded"): the run stayed pending, with
nothing saying why, until the reconciler published it again minutes later, maybe to the same
worker. A jobsys worker parks such a message instead:

- **Parking.** The worker's consumer (``Consumer.on_unknown_task``) pushes the message as it
  came (headers, body and priority kept: kombu's step, so the parking queue's lists are read
  by priority too) onto its job's *parking queue*,
  ``_jobsys.parked.<job>``, and adds the job's name to the Redis set ``_jobsys.parked``. The
  message left Redis when the worker took it (jobsys runs without emulated acknowledgements),
  so parking moves it; a worker killed between taking and parking it loses it, as it would
  lose any message it holds, and the reconciler publishes the run again (the run store is the
  ledger of delivery, see README "States").
- **Taking parked messages.** A worker *runs* a job when it knows the job and reads the job's
  queue. Every worker looks at the set when its consumer starts (again after a lost
  connection) and then every ``JOBSYS_PARKED_CHECK_SECONDS`` (one ``SMEMBERS``), in its
  consumer's event loop, and consumes the parking queue of each parked job it runs, as Celery
  consumes any queue (late acknowledgement, claim by message token, result). Only workers that
  run the job read its parking queue, so a parked message never goes back to a worker that
  cannot run it: no message bounces between workers, and nothing polls in a loop. A worker
  that finds a parking queue it reads empty takes the job out of the set (looking once more
  after doing so, so that a message parked meanwhile keeps it there) and stops reading it.
- **Saying why.** Each worker announces the jobs it runs in the Redis hash ``_jobsys.known``
  (job name -> until when), from its reaper thread, which goes on while jobs run. The worker
  that parks a message records on the run why the run waits (``RunRecord.waiting``):
  ``no_worker`` ("no live worker knows job X") when no worker announced the job lately,
  ``parked`` (it waits for one of those that did) otherwise. The claim of the run clears it;
  ``jobsys submit --wait`` prints it while it waits, and says so too when no live worker runs
  the job at all (its message then waits in a queue no one reads).

The alternative, a queue per job so that only capable workers ever receive a job's messages,
was not taken: every worker would poll ten Redis lists (one per priority) per job it knows in
each ``BRPOP``, on every message, and ``-Q``, the queues of ``@job(queue=...)`` and the
priorities would all change meaning. Here the per-job path is unchanged but for the claim's
``UPDATE`` also clearing ``waiting``: a worker that knows the job takes its message as
before, and the parking path costs a few Redis commands and one ``UPDATE`` per parked
message.

Messages of jobs registered at runtime go to a task every worker has (``jobsys.dynamic``), so
they are never parked.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from celery import bootsteps
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu import Queue

from jobsys.store import runs

if TYPE_CHECKING:
    from celery import Celery

    from jobsys.engine import broker

log = logging.getLogger("jobsys.parking")

PARKED = "_jobsys.parked"
"""Redis set: the names of the jobs that have (or lately had) parked messages."""
KNOWN = "_jobsys.known"
"""Redis hash: job name -> until when (epoch seconds) a live worker vouches it knows the job."""
QUEUE_PREFIX = "_jobsys.parked."
WARN_EVERY = 60.0
"""Seconds between two warnings of a worker about the same job it parks messages of."""


def queue_name(job: str) -> str:
    """The parking queue of ``job``."""
    return QUEUE_PREFIX + job


def install(app: Celery, runtime: broker.Runtime) -> Parking:
    """Make the worker of ``app`` park the messages of jobs it does not know, and take the
    parked messages of the jobs it knows."""
    parking = Parking(runtime)
    app.jobsys_parking = parking
    app.conf.worker_consumer = f"{__name__}:Consumer"
    app.steps["consumer"].add(ParkedQueues)
    return parking


class Parking:
    """The parking of one worker process (see the module's docstring)."""

    def __init__(self, runtime: broker.Runtime) -> None:
        self.runtime = runtime
        self.interval = runtime.settings.parked_check_seconds
        # A worker vouches for its catalog this long after its reaper's last pass.
        self.ttl = 3 * runtime.settings.reaper_seconds + 5
        self._warned: dict[str, tuple[float, int]] = {}
        self._live: dict[str, tuple[float, bool]] = {}

    # --- the worker that cannot run the message ----------------------------------------

    def park(self, message: Any, name: str, worker: str) -> None:
        """Set ``message`` (of job ``name``, unknown here) aside for a worker that knows the
        job, and record on its run why the run waits. Runs in the consumer's thread."""
        channel = message.channel
        run_id = _header(message, "id")
        try:
            channel._put(queue_name(name), message.serializable())
            with channel.conn_or_acquire() as client:  # (``channel.client`` is the BRPOP's)
                client.sadd(PARKED, name)
        except Exception as exc:
            # The message already left Redis: the reconciler publishes the run again.
            log.error(
                "jobsys: the message of run %s (job %r, unknown to this worker) could not be "
                "parked (%s); the run waits for the reconciler to publish it again",
                run_id,
                name,
                exc,
            )
            return
        self._warn(name)
        if run_id is not None:
            self._note(run_id, _dispatch(message), name, worker, channel)

    def _warn(self, name: str) -> None:
        now = time.monotonic()
        last, count = self._warned.get(name, (0.0, 0))
        count += 1
        if last and now - last < WARN_EVERY:
            self._warned[name] = (last, count)
            return
        self._warned[name] = (now, 0)
        log.warning(
            "jobsys: job %r is not in this worker's catalog (JOBSYS_CATALOG=%s): %d message(s) "
            "parked in %r for a worker that knows it",
            name,
            ",".join(self.runtime.settings.catalog),
            count,
            queue_name(name),
            extra={"action": "parked", "job": name},
        )

    def _note(
        self, run_id: str, dispatch: int | None, name: str, worker: str, channel: Any
    ) -> None:
        known = self._known_elsewhere(channel, name)
        catalog = ",".join(self.runtime.settings.catalog)
        if known:
            reason = "parked"
            text = (
                f"worker {worker} does not know job {name!r} (its catalog: {catalog}); the run "
                "waits for one of the live workers that do"
            )
        else:
            reason = "no_worker"
            text = (
                f"no live worker knows job {name!r}: worker {worker} does not (its catalog: "
                f"{catalog}); the run starts when a worker that loads the job is up "
                "(JOBSYS_CATALOG)"
            )
        waiting = {
            "reason": reason,
            "message": text,
            "job": name,
            "worker": worker,
            "since": _iso_now(),
        }
        try:
            self.runtime.store.mark_waiting(run_id, dispatch, waiting)
        except Exception as exc:  # only the explanation is lost: the message is parked
            log.warning("jobsys: could not record why run %s waits: %s", run_id, exc)

    def _known_elsewhere(self, channel: Any, name: str) -> bool:
        """Whether a live worker announced ``name`` lately (read at most once a second)."""
        now = time.monotonic()
        cached = self._live.get(name)
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        try:
            known = announced(channel, name)
        except Exception:
            known = False
        self._live[name] = (now, known)
        return known

    # --- every worker ------------------------------------------------------------------

    def announce(self, channel: Any, consumed: Any) -> None:
        """Vouch, for ``ttl`` seconds, that a live worker runs the jobs of this catalog whose
        queue it consumes (``consumed``: the names of those queues)."""
        names = [s.name for s in self.runtime.registry.catalog() if s.queue in consumed]
        if names:
            until = f"{time.time() + self.ttl:.3f}"
            with channel.conn_or_acquire() as client:
                client.hset(KNOWN, mapping=dict.fromkeys(names, until))

    def check(self, c: Any) -> None:
        """Consume the parking queues of the parked jobs this worker knows; stop consuming
        those that are empty. Runs in the consumer's event loop."""
        try:
            self._check(c)
        except Exception:
            log.warning("jobsys: looking for parked messages failed", exc_info=True)

    def _check(self, c: Any) -> None:
        consumer = c.task_consumer
        if consumer is None:
            return
        channel = consumer.channel
        # Commands go through the channel's pool: ``channel.client`` is the connection the
        # consumer's BRPOP waits on.
        with channel.conn_or_acquire() as client:
            parked = {_text(n) for n in client.smembers(PARKED)}
            for name in sorted(parked):
                queue = queue_name(name)
                if _serves(consumer, c.app, name) and not _reads(consumer, queue):
                    # Never declared: nothing to create on Redis, no binding left behind.
                    c.app.amqp.queues.add(Queue(queue, routing_key=queue, no_declare=True))
                    c.add_task_queue(queue)
            for queue in [q for q in c.app.amqp.queues if q.startswith(QUEUE_PREFIX)]:
                name = queue[len(QUEUE_PREFIX) :]
                if name in parked and channel._size(queue):
                    continue
                if name in parked:
                    client.srem(PARKED, name)
                    if channel._size(queue):  # parked meanwhile: keep it (and the job) there
                        client.sadd(PARKED, name)
                        continue
                c.cancel_task_queue(queue)
                c.app.amqp.queues.pop(queue, None)


class Consumer(CeleryConsumer):
    """Celery's consumer, parking the messages of jobs this worker does not know instead of
    discarding them (and instead of storing a failure as their result)."""

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        parking: Parking | None = getattr(self.app, "jobsys_parking", None)
        name = _header(message, "task")
        if parking is None or name is None or message.content_type != "application/json":
            # Not a jobsys run's message (JSON only): no worker could run it.
            super().on_unknown_task(body, message, exc)
            return
        parking.park(message, name, str(self.hostname))
        # Frees the prefetch slot; the message is in its parking queue (Redis keeps no copy to
        # acknowledge).
        message.ack_log_error(log, self.connection_errors)


class ParkedQueues(bootsteps.StartStopStep):
    """Consumer bootstep: look for parked messages of the jobs this worker knows when the
    consumer starts (again after a lost connection), then every ``interval`` seconds."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.tref: Any = None
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        parking: Parking | None = getattr(c.app, "jobsys_parking", None)
        if parking is None:
            return
        parking.check(c)
        self.tref = c.timer.call_repeatedly(parking.interval, parking.check, (c,))

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop


def announced(channel: Any, job: str) -> bool:
    """Whether a live worker announced lately that it runs ``job`` (``Parking.announce``)."""
    with channel.conn_or_acquire() as client:
        until = client.hget(KNOWN, job)
    return until is not None and float(until) > time.time()


def _serves(consumer: Any, app: Any, name: str) -> bool:
    """Whether the worker of task consumer ``consumer`` runs job ``name``: it knows the job
    and reads the job's own queue (a worker given other queues with ``-Q`` leaves it)."""
    task = app.tasks.get(name)
    if task is None:
        return False
    return _reads(consumer, getattr(task, "queue", None) or app.conf.task_default_queue)


def _reads(consumer: Any, queue: str) -> bool:
    """Whether ``consumer`` reads ``queue`` (or will, once its event loop starts)."""
    return any(q.name == queue for q in consumer.queues)


def _header(message: Any, key: str) -> str | None:
    headers = message.headers
    value = headers.get(key) if isinstance(headers, dict) else None
    return value if isinstance(value, str) and value else None


def _dispatch(message: Any) -> int | None:
    """The message token of a run's message (protocol 2: ``[args, kwargs, embed]``)."""
    try:
        kwargs = json.loads(message.body)[1]
        dispatch = kwargs.get("dispatch")
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        return None
    return dispatch if isinstance(dispatch, int) and not isinstance(dispatch, bool) else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _iso_now() -> str:
    return runs.utcnow().isoformat()
