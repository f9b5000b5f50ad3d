"""What follows the end of a run on a worker (its workflow moved on, the runs that wait for
it released), and the reaper: the thread of each worker's main process that recovers runs
whose worker is gone, queues delayed runs when they are due and publishes again the messages
that were lost."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery, states

from jobsys.declare import jobs
from jobsys.engine import pausing
from jobsys.engine.indexer import Indexer
from jobsys.engine.notifier import Notifier
from jobsys.engine.pruner import Pruner
from jobsys.engine.publishing import RunFailedResult, publish, republish, store_result
from jobsys.engine.runtime import Runtime
from jobsys.store import runs
from jobsys.worker import execute, gates

log = logging.getLogger("jobsys.broker")

DUE_BATCH = 500
"""Delayed runs claimed (and published) by one statement of a reaper's pass."""
DUE_BATCHES = 20
"""At most this many batches a pass: 10,000 runs due at once are queued by one pass."""

FOREIGN_SECONDS = 300.0
"""How long a reaper leaves out of its passes the runs of a job it found it does not run
(another catalog's, during a rolling deploy), before it looks at them again."""


def release_dependents(app: Celery, runtime: Runtime, run_id: str) -> None:
    """Runs blocked on ``run_id`` (which just ended) whose dependencies are all done: publish
    them, or fail them if one of their dependencies failed (``release_dependents``)."""
    try:
        released = runtime.store.release_dependents(run_id, runtime.settings.delay_horizon_seconds)
        republish(app, runtime.registry, released, front=False)
    except Exception:
        # The reaper releases blocked runs on every pass: nothing is lost.
        log.exception("jobsys: releasing the runs that wait for %s failed", run_id)


def frees_slot(outcome: execute.Outcome) -> bool:
    """Whether a run of a job with a concurrency limit let its slot go (it ended, will be
    retried, was handed back, or backs off): the next runs waiting for one are woken."""
    if outcome.kind is execute.Kind.WAITING:
        return outcome.waited == "backoff"
    return outcome.kind is not execute.Kind.STALE


def wake_waiting(app: Celery, runtime: Runtime, spec: jobs.JobSpec, run_id: str) -> None:
    """Publish the next runs waiting for a slot of ``spec`` (``run_id`` let one go)."""
    try:
        republish(app, runtime.registry, gates.wake_after(runtime.store, spec, run_id), False)
    except Exception:  # a reaper's pass wakes them (``gates.wake_free``): nothing is lost
        log.exception("jobsys: waking the runs waiting for a slot of %s failed", spec.name)


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
    publishes delayed runs when they are due, and publishes again waiting runs whose message
    was lost. Guarded transitions make many reapers at once harmless."""

    def __init__(self, app: Celery, runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime
        self._foreign: dict[str, float] = {}
        """Jobs of runs this reaper found it does not run (another catalog's), each until
        when (``time.monotonic``) its runs are left out of its passes."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jobsys-reaper", daemon=True)
        self.pruner = Pruner(runtime)
        """Applies the retention policies, in a thread of its own (``pruner.py``)."""
        self.indexer = Indexer(runtime)
        """Embeds texts for semantic search, in a thread of its own (``indexer.py``)."""
        self.notifier = Notifier(runtime)
        """Sends the webhook notifications, in a thread of its own (``notifier.py``)."""

    def start(self) -> None:
        self._thread.start()
        self.pruner.start()
        self.indexer.start()
        self.notifier.start()

    def stop(self) -> None:
        self._stop.set()
        self.pruner.stop()
        self.indexer.stop()
        self.notifier.stop()

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
        result = store.reap(
            now,
            s.max_deliveries,
            s.hard_timeout_grace_seconds,
            lease=s.lease_seconds,
            heartbeat=s.heartbeat_seconds,
        )
        self._publish(result.requeued)
        for run_id in result.failed:  # wake waiters; the record says why
            exc = RunFailedResult("ended by the reaper (worker lost or past its hard limit)")
            store_result(self.app, run_id, states.FAILURE, self.app.backend.prepare_exception(exc))
        for workflow_id in store.workflows.running():
            advance_workflow(self.app, self.runtime, workflow_id)
        released = store.release_dependents(None, s.delay_horizon_seconds)  # every blocked run
        self._publish(released, front=False)
        self.publish_due(now)
        try:  # runs waiting for a slot freed by a worker that died
            self._publish(gates.wake_free(store, self.runtime.registry), front=False)
        except Exception:
            log.exception("jobsys reaper: waking runs waiting for a slot failed")
        pausing.release(self.app, self.runtime.registry, store, knows=self._knows)
        # Claimed (stamped published in one guarded statement) before they are sent, so of
        # the reconcilers of every worker passing at once, one sends each. Same token: if the
        # first message still exists, whichever copy comes second is a no-op.
        stale = store.claim_stale(now, s.reconcile_seconds, skip_jobs=self._skipped())
        known = [r for r in stale if self._knows(r)]
        for record in stale:
            if not self._knows(record):  # another catalog's job: left for its workers
                store.unclaim_publish(record.id, record.published_at)
                self._skip(record.job)
        if known:
            republish(self.app, self.runtime.registry, known)
        if result.requeued or result.failed:
            log.warning(
                "jobsys reaper: requeued %d, failed %d lost runs",
                len(result.requeued),
                len(result.failed),
                extra={"action": "reaper_pass"},
            )
        return result

    def publish_due(self, now: dt.datetime) -> list[runs.RunRecord]:
        """Publish the delayed runs due within the delay horizon, each once however many
        reapers pass (``claim_due``), at the back of their priority's lists with what is
        left of their delay as the countdown: a worker holds a message for at most the
        horizon, and the run starts when due. Returns those published.

        A pass takes ``DUE_BATCH`` runs at a time, and takes more while batches come full (at
        most ``DUE_BATCHES``), so that a burst of runs due at once (a campaign, thousands
        started at 9:00) is queued in one pass, not 500 per pass."""
        published: list[runs.RunRecord] = []
        for _ in range(DUE_BATCHES):
            batch, claimed = self._publish_due_batch(now)
            published += batch
            if claimed < DUE_BATCH:
                break
        return published

    def _publish_due_batch(self, now: dt.datetime) -> tuple[list[runs.RunRecord], int]:
        claimed = self.runtime.store.claim_due(
            now,
            self.runtime.settings.delay_horizon_seconds,
            limit=DUE_BATCH,
            skip_jobs=self._skipped(),
        )
        known = [r for r in claimed if self._knows(r)]
        for record in claimed:
            if not self._knows(record):  # another catalog's job: left for its workers
                self.runtime.store.unclaim_publish(record.id, None)
                self._skip(record.job)
        try:
            republish(self.app, self.runtime.registry, known, front=False)
        except Exception:  # (the broker is down) given back: the next pass sends them
            for record in known:
                self.runtime.store.unclaim_publish(record.id, None)
            raise
        if known:
            log.info(
                "jobsys reaper: queued %d delayed runs now due",
                len(known),
                extra={"action": "delayed_published"},
            )
        return known, len(claimed)

    def _skip(self, job: str) -> None:
        self._foreign[job] = time.monotonic() + FOREIGN_SECONDS

    def _skipped(self) -> list[str]:
        """The jobs to leave out of this pass: without it, more runs of jobs this worker
        does not run than a pass takes (500) would fill every pass, given back each time,
        and the due runs of its own jobs behind them would never be published."""
        now = time.monotonic()
        self._foreign = {job: until for job, until in self._foreign.items() if until > now}
        return sorted(self._foreign)

    def _knows(self, record: runs.RunRecord) -> bool:
        return record.job in self.runtime.registry.scoped(record.tenant)

    def _publish(self, records: Sequence[runs.RunRecord], front: bool = True) -> None:
        # another worker (another catalog) publishes the jobs it knows
        mine = [r for r in records if self._knows(r)]
        republish(self.app, self.runtime.registry, mine, front)
        for record in mine:
            self.runtime.store.mark_published(record.id, record.dispatch)
