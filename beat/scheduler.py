"""The jobsys scheduler for Celery beat: due schedules come from the store, every tick.

Celery beat calls ``tick()`` in a loop and sleeps for what it returns. Each tick asks the
store for the active schedules whose indexed ``next_fire_at`` has passed (never a scan of
every schedule), fires them (``ScheduleStore.fire_due``: the schedule advanced and its run
inserted in one transaction, one run per fire however many beats race) and publishes the new
runs. Creating, changing, pausing, resuming and deleting a schedule take effect at the next
tick, at most ``JOBSYS_BEAT_INTERVAL`` seconds later, without a restart. Nothing is kept in a
local file: any number of beats can run, and one that dies loses no fire.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, beat

from jobsys import broker, config, definitions, jobs, runs, schedules

log = logging.getLogger("jobsys.beat")


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
        self.store = runs.RunStore.open(settings.database_url)
        registry.attach(definitions.source(settings, self.store.engine))
        self.schedules: schedules.ScheduleStore = self.store.schedules
        self.fired = 0
        self.ticks = 0
        kwargs["max_interval"] = settings.beat_interval
        super().__init__(app, **kwargs)

    def setup_schedule(self) -> None:
        """Seed the schedules jobs declare in code (an edited one keeps its edit)."""
        for schedule_id in self.schedules.seed(self.registry):
            log.info("jobsys beat: declared schedule %s created or updated", schedule_id)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Fire what is due; return the seconds to sleep before the next tick."""
        started = time.monotonic()
        self.ticks += 1
        try:
            fired = self.schedules.fire_due(self.registry, runs.utcnow())
            self._publish(fired)
            following = self.schedules.next_due_at()
        except Exception:
            log.exception("jobsys beat: tick failed; retrying", extra={"action": "beat_error"})
            return self.max_interval
        spent = time.monotonic() - started
        if fired:
            return 0.0  # there may be more due than one tick fires
        if following is None:
            return max(0.0, self.max_interval - spent)
        wait = (following - runs.utcnow()).total_seconds()
        return min(self.max_interval, max(0.0, wait))

    def _publish(self, fired: list[schedules.Fired]) -> None:
        items = [(f.spec, f.run) for f in fired if f.spec is not None and f.run is not None]
        if items:
            try:
                broker.publish_many(self.app, items)
            except Exception:
                # The runs are recorded; the reconciler publishes them once the broker is back.
                log.exception("jobsys beat: publishing %d runs failed", len(items))
                return
        for f in fired:
            if f.workflow is not None:  # its first steps start now; the reaper retries
                self._start_workflow(f.id)
            self.fired += 1
            log.info(
                "jobsys beat: fired a schedule -> %s",
                f.id,
                extra={"action": "schedule_fired", "run_id": f.id},
            )

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
        log.info("jobsys beat: %d ticks, %d fires published", self.ticks, self.fired)
        self.store.close()

    @property
    def info(self) -> str:
        return f"    . schedules -> {self.settings.database_url.split('@')[-1]}"
