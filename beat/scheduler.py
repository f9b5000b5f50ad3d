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

from jobsys import broker, config, jobs, runs, schedules

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
        self.schedules: schedules.ScheduleStore = self.store.schedules
        self.fired = 0
        kwargs["max_interval"] = settings.beat_interval
        super().__init__(app, **kwargs)

    def setup_schedule(self) -> None:
        """Seed the schedules jobs declare in code (an edited one keeps its edit)."""
        for schedule_id in self.schedules.seed(self.registry):
            log.info("jobsys beat: declared schedule %s created or updated", schedule_id)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Fire what is due; return the seconds to sleep before the next tick."""
        started = time.monotonic()
        try:
            for fired in self.schedules.fire_due(self.registry, runs.utcnow()):
                self._publish(fired)
            following = self.schedules.next_due_at()
        except Exception:
            log.exception("jobsys beat: tick failed; retrying", extra={"action": "beat_error"})
            return self.max_interval
        spent = time.monotonic() - started
        if following is None:
            return max(0.0, self.max_interval - spent)
        wait = (following - runs.utcnow()).total_seconds()
        return min(self.max_interval, max(0.0, wait))

    def _publish(self, fired: schedules.Fired) -> None:
        row = fired.run
        try:
            broker.publish(self.app, fired.spec, row["id"], 1, row["input"], row["principal"])
        except Exception:
            # The run is recorded; the reconciler publishes it once the broker is back.
            log.exception("jobsys beat: publishing run %s failed", row["id"])
            return
        self.store.mark_published(row["id"], 1)
        self.fired += 1
        log.info(
            "jobsys beat: fired schedule %s (%s) -> run %s",
            row["schedule_id"],
            row["trigger"],
            row["id"],
            extra={"action": "schedule_fired", "run_id": row["id"]},
        )

    # Celery's local schedule (a shelve file) is not used: the store is the schedule.
    @property
    def schedule(self) -> dict[str, Any]:
        return {}

    def sync(self) -> None:
        pass

    def close(self) -> None:
        self.store.close()

    @property
    def info(self) -> str:
        return f"    . schedules -> {self.settings.database_url.split('@')[-1]}"
