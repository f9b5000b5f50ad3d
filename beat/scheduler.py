"""The jobsys scheduler for Celery beat: due schedules come from the store, every tick.

Celery beat calls ``tick()`` in a loop and sleeps for what it returns. Each tick asks the store
for the active schedules whose indexed ``next_fire_at`` has passed (never a scan of every
schedule) and fires them a batch at a time (``firing.Firing``: schedules advanced and their
runs inserted in one transaction, one run per fire however many beats race); each batch is
published as soon as it is committed, then its runs are stamped published. The schedules due in
the next few seconds are read, and their messages built, ahead of time (``lookahead``), so that
a burst of fires due at once is only written and sent. Creating, changing, pausing, resuming
and deleting a schedule take effect at the next tick, at most ``JOBSYS_BEAT_INTERVAL`` seconds
later, without a restart. Nothing is kept in a local file: any number of beats can run, and one
that dies loses no fire."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from celery import Celery, beat

from beat import lookahead
from jobsys.base import config, sealing
from jobsys.declare import jobs
from jobsys.engine import broker
from jobsys.scheduling import firing
from jobsys.store import definition_store, runs, stores

log = logging.getLogger("jobsys.beat")

STAMP_IDLE = 0.05
STAMP_AGE = 5.0
STAMP_BATCH = 10_000
"""Publish times are written when beat will idle at least ``STAMP_IDLE`` seconds, or once they
are ``STAMP_AGE`` seconds old or ``STAMP_BATCH`` many: one write for many fires, not one
between each two fires of a steady stream."""
IDLE_PAUSE = 0.02
"""Seconds beat pauses when the next fire is past due but is not one it can make."""
LOCKED_PAUSE = 0.1
"""Seconds beat pauses when what is due is held by another beat's fire transaction."""
STARTUP_WAIT = 120.0
"""Seconds beat keeps trying to reach the run store when it starts, before it exits (and its
supervisor, ``jobsys up`` or the container's, starts it again)."""


class StoreScheduler(beat.Scheduler):
    """A ``celery.beat.Scheduler`` over ``jobsys_schedules``."""

    def __init__(
        self,
        app: Celery,
        *,
        settings: config.Settings,
        registry: jobs.Registry,
        **kwargs: Any,
    ) -> None:
        self.settings, self.registry = settings, registry
        kwargs["max_interval"] = settings.beat_interval
        if kwargs.get("lazy"):
            # Celery's start-up banner makes one to describe it (``info``); the scheduler
            # that runs, made next, opens the store: opened here too, the banner would wait
            # for an unreachable store before beat's SIGTERM handler is installed.
            super().__init__(app, **kwargs)
            return
        self.store = stores.Store.open(settings.database_url, wait=STARTUP_WAIT)
        registry.attach(definition_store.source(settings, self.store.engine))
        self.schedules = self.store.schedules
        self.firing = firing.Firing(self.schedules)
        self.fired = 0
        self.ticks = 0
        self._published: list[tuple[str, dt.datetime]] = []
        self._published_since = 0.0
        self._ticking = self._closed = False
        super().__init__(app, **kwargs)
        self.lookahead = lookahead.Lookahead(self.app, self.schedules, registry)

    def setup_schedule(self) -> None:
        """Seed the schedules jobs declare in code (an edited one keeps its edit)."""
        sealer = sealing.Sealer.for_home(self.settings.secret_key, self.settings.home)
        for schedule_id in self.schedules.seed(self.registry, sealer=sealer):
            log.info("jobsys beat: declared schedule %s created or updated", schedule_id)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Fire what is due; return the seconds to sleep before the next tick."""
        started = time.monotonic()
        self.ticks += 1
        self._ticking = True
        try:
            fired = 0
            now = runs.utcnow()
            # What was read ahead and is due now; with none, the store is read.
            ahead = self.lookahead.take(now)
            try:
                for batch in self.firing.batches(self.registry, now, ahead=ahead or None):
                    self._publish(batch)
                    fired += len(batch)
            finally:
                self.lookahead.release(ahead)
            if fired and not ahead:
                return 0.0  # read from the store: more may be due than one read returns
            following = self.schedules.next_due_at()
            wait = self._wait(following, time.monotonic() - started, fired)
            if self._stamp_due(wait):
                self._stamp_published()
            # One page more is read ahead while beat idles, or even when busy if what is read
            # ahead runs short (a steady stream of fires can keep beat from ever idling).
            if (wait > 0 or self.lookahead.short(now)) and self.lookahead.read(runs.utcnow()):
                wait = 0.0  # more to read ahead: the next tick goes on (after what is due)
            elif wait > 0:
                wait = self._wait(following, 0.0)
        except Exception:
            log.exception("jobsys beat: tick failed; retrying", extra={"action": "beat_error"})
            return self.max_interval
        finally:
            self._ticking = False
        return wait

    def _wait(self, following: dt.datetime | None, spent: float, fired: int = 1) -> float:
        """How long to sleep after a tick that fired nothing (``fired``: what it fired)."""
        if following is None:
            return max(0.0, self.max_interval - spent)
        wait = (following - runs.utcnow()).total_seconds()
        if wait <= 0:
            # Past due yet not fired: due since the store was read (fire it now), or a job
            # this beat's catalog lacks (left for a beat that has it: pause, do not spin), or
            # held by another beat's transaction (a tick that fired nothing: look again soon).
            due = self.schedules.due(runs.utcnow(), 50)
            fireable = any(firing.known(self.registry, r.tenant, r.job) for r in due)
            if not fireable:
                return IDLE_PAUSE
            return 0.0 if fired else LOCKED_PAUSE
        return min(self.max_interval, wait)

    def _publish(self, fired: list[firing.Fired]) -> None:
        items = [(f.spec, f.run) for f in fired if f.spec is not None and f.run is not None]
        if items:
            try:
                broker.publish_many(self.app, items, held=self.lookahead.messages(items))
            except Exception:
                # The runs are recorded; the reconciler publishes them once the broker is back.
                log.exception("jobsys beat: publishing %d runs failed", len(items))
            else:
                sent = runs.utcnow()
                if not self._published:
                    self._published_since = time.monotonic()
                self._published.extend((run["id"], sent) for _, run in items)
        for f in fired:
            if f.workflow is not None:  # its first steps start now; the reaper retries
                self._start_workflow(f.id)
            log.debug(
                "jobsys beat: fired a schedule -> %s",
                f.id,
                extra={"action": "schedule_fired", "run_id": f.id},
            )
        self.fired += len(fired)
        # One line a batch: a burst fires thousands of schedules in a second.
        log.info(
            "jobsys beat: fired %d schedules (%s .. %s)",
            len(fired),
            fired[0].id,
            fired[-1].id,
            extra={"action": "schedules_fired", "count": len(fired)},
        )

    def _stamp_due(self, wait: float) -> bool:
        if not self._published:
            return False
        old = time.monotonic() - self._published_since > STAMP_AGE
        return wait >= STAMP_IDLE or old or len(self._published) >= STAMP_BATCH

    def _stamp_published(self) -> None:
        """Write when the runs fired since the last stamp were published (while beat is idle,
        off the path of a burst). A beat that dies first leaves them unstamped; the
        reconciler publishes them again, and the copy is dropped as a duplicate."""
        sent, self._published = self._published, []
        self.store.mark_published_many(sent)

    def _start_workflow(self, workflow_id: str) -> None:
        def send(spec: jobs.JobSpec, row: dict[str, Any], delay: float) -> None:
            broker.publish(
                self.app, spec, row["id"], 1, countdown=delay or None, priority=row["priority"]
            )

        record = self.store.workflows.get(workflow_id)
        wf = record.workflow_def
        self.store.workflows.advance(wf, workflow_id, self.registry, send)

    # Celery's local schedule (a shelve file) is not used: the store is the schedule.
    @property
    def schedule(self) -> dict[str, Any]:
        return {}

    def sync(self) -> None:
        pass

    def close(self) -> None:
        """Stamp what was published, then close the store. Celery beat calls this from its
        SIGTERM handler, which may interrupt a tick in the middle of a write, and again once
        its loop has ended: the first call waits for the second, as the interrupted write
        still holds its transaction (on SQLite, the lock the stamp needs: it waited 30 s)."""
        if self._ticking or self._closed:
            return
        self._closed = True
        try:
            self._stamp_published()
        except Exception:
            log.exception("jobsys beat: stamping the last published runs failed")
        log.info("jobsys beat: %d ticks, %d fires made", self.ticks, self.fired)
        self.store.close()

    @property
    def info(self) -> str:
        return f"    . schedules -> {self.settings.database_url.split('@')[-1]}"
