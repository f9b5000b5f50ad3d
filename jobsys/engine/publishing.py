"""Publishing runs' messages and storing their results, in Celery's terms (task protocol 2,
JSON), each in as few broker round trips as it takes.

Every message of a run is built here (``publish``), and this is where a run's priority (0
lowest to 9 highest, ``base/bounds.py``) becomes the broker's (``broker_priority``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import kombu.exceptions
import redis.exceptions
from celery import Celery

from jobsys.base import bounds
from jobsys.declare import jobs
from jobsys.engine import transport
from jobsys.store import runs


class RunFailedResult(Exception):
    """Stored in Celery's result backend for a run that ended failed (the record has details)."""


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


def broker_priority(priority: int) -> int:
    """kombu's priority for a run's ``priority`` (``bounds``: 0 lowest .. 9 highest).

    kombu's Redis transport keeps one list per priority step next to each queue (``jobs`` for
    step 0, ``jobs\\x06\\x16N`` for step N) and its consumers take from them in the order of
    the steps (``BRPOP jobs jobs\\x06\\x161 ... jobs\\x06\\x169``): the lowest step first. So a
    run of priority p goes to step ``9 - p``: 9 to ``jobs`` itself, the default 5 to step 4, 0
    to step 9. What moves a message later keeps the step it has (``transport.Channel.push``,
    ``parking.py``); nothing else reads kombu's numbers."""
    return bounds.HIGHEST_PRIORITY - priority


def publish(
    app: Celery,
    spec: jobs.JobSpec,
    run_id: str,
    dispatch: int,
    countdown: float | None = None,
    priority: int | None = None,
    producer: Any = None,
    retry: bool | None = None,
) -> None:
    """Put one run's message on the broker (JSON), in Celery's task protocol 2, at
    ``priority`` (the run's; the job's if ``None``). ``retry=False``: one try, no waiting for
    a broker that does not answer (the caller keeps the run for later); ``None``: Celery's
    publish retry policy.

    Built and sent with Celery's own message builder and sender (``app.amqp``), as
    ``send_task`` does, without what ``send_task`` adds that jobsys does not use (routers,
    a result object, parent-task links): that cost 60 us of the 550 of a submit.
    """
    if spec.external:  # an outside actor takes its runs from the store: no message, ever
        return
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
    level = broker_priority(spec.priority if priority is None else priority)

    def send() -> None:
        with app.producer_or_acquire(producer) as P:
            app.amqp.send_task_message(
                P,
                spec.task or spec.name,
                message,
                # Sent through the anonymous exchange (the routing key is the queue): there
                # is nothing to declare on Redis, and consumers declare the queues they read.
                queue=spec.queue,
                declare=[],
                priority=level,
                serializer="json",
                # Never kombu's retry: see ``_with_retries``.
                retry=False,
            )

    if producer is not None or not (app.conf.task_publish_retry if retry is None else retry):
        send()  # (a given producer: a batch or a held message, sent when it is flushed)
    else:
        _with_retries(app, send)


RETRIED: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)
"""The errors of a broker that may answer again: a publish with retries tries again."""


def _with_retries(app: Celery, send: Callable[[], None]) -> None:
    """``send`` under Celery's publish retry policy (``task_publish_retry_policy``).

    Done here, not by kombu: kombu's ``Producer.publish(retry=True)`` writes the policy into
    its connection's ``transport_options``, a dict every connection of the app shares
    (``broker_transport_options``). From then on, every publish of the process, those that
    must fail at once (``max_retries`` 0: a submit whose run then waits in the outbox)
    included, retried for seconds against a broker that is down."""
    policy = app.conf.task_publish_retry_policy or {}
    tries = int(policy.get("max_retries", 3)) + 1
    start, step = float(policy.get("interval_start", 0)), float(policy.get("interval_step", 0.2))
    ceiling = float(policy.get("interval_max", 1))
    for attempt in range(tries):
        try:
            send()
            return
        except RETRIED:
            if attempt + 1 >= tries:
                raise
            time.sleep(min(start + attempt * step, ceiling))


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


def hold(
    app: Celery,
    items: Sequence[tuple[jobs.JobSpec, str]],
    priorities: Mapping[str, int] | None = None,
) -> dict[str, transport.Held]:
    """Build the messages of runs to be made soon (a job spec and a run id each), without
    sending them: ``publish_many`` pushes them once the runs are recorded. ``priorities``:
    the runs' own, by run id (the job's for a run not in it). Nothing is held when sending a
    message also announces it (``task_send_sent_event``): the announcement would come early;
    such messages are built when they are sent."""
    if app.conf.task_send_sent_event:
        return {}
    out: dict[str, transport.Held] = {}
    with app.producer_or_acquire() as producer:
        channel = producer.channel
        if not isinstance(channel, transport.Channel):
            return {}
        with channel.holding() as held:
            for spec, run_id in items:
                if spec.external:  # (never published: ``publish``)
                    continue
                priority = (priorities or {}).get(run_id, spec.priority)
                publish(app, spec, run_id, 1, priority=priority, producer=producer)
                out[run_id] = held.pop()
    return out


def republish(
    app: Celery, registry: jobs.Registry, records: Sequence[runs.RunRecord], front: bool = True
) -> None:
    """Publish stored runs again (reaper, reconciler), in the order given: same input, their
    current tokens, their own priorities, at the *front* of those priorities' lists. A run
    whose worker was lost, or whose message was, had its turn already: it keeps its place
    ahead of the runs of its priority that came after it instead of going to the back of the
    line. (``front=False``: at the back, for runs queued for the first time, such as those
    released by their dependencies or delayed runs now due.) A run not due yet (its
    ``next_attempt_at`` ahead) is sent with what is left of its delay as the countdown: no
    run's message lets it start early."""
    now = runs.utcnow()
    items = [
        (registry.scoped(r.tenant).get(r.job), r.id, r.dispatch, r.priority, _left(r, now))
        for r in records
    ]
    _push(app, items, front)


def _left(record: runs.RunRecord, now: datetime) -> float | None:
    """Seconds until ``record`` is due, if it is not yet."""
    due = record.next_attempt_at
    return (due - now).total_seconds() if due is not None and due > now else None


def publish_front(
    app: Celery, spec: jobs.JobSpec, run_id: str, dispatch: int, priority: int
) -> None:
    """Publish a run that had its turn already (handed back by its stopping worker) at the
    front of its priority's list, as ``republish`` does for the runs the reaper requeues."""
    _push(app, [(spec, run_id, dispatch, priority, None)], front=True)


Item = tuple[jobs.JobSpec, str, int, int, float | None]
"""A run's message to publish: spec, run id, token, priority, countdown."""


def _push(app: Celery, items: Sequence[Item], front: bool) -> None:
    """Publish runs' messages in one round trip, at the front of their priority's lists or
    at the back."""
    if not items:
        return
    with app.producer_or_acquire() as producer:
        channel = producer.channel
        if not isinstance(channel, transport.Channel):  # (another transport: the back)
            for spec, run_id, dispatch, priority, countdown in items:
                publish(app, spec, run_id, dispatch, countdown, priority, producer=producer)
            return
        with channel.holding() as held:
            for spec, run_id, dispatch, priority, countdown in items:
                publish(app, spec, run_id, dispatch, countdown, priority, producer=producer)
        channel.push(held, front=front)
