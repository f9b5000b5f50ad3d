"""The pruner: a thread beside each worker's reaper that applies the retention policies
(``JOBSYS_KEEP_*``, a job's ``@job(keep_completed=...)``) every ``JOBSYS_PRUNE_SECONDS``,
deleting ended runs past their age a batch at a time (``store/retention.py``).

It has a thread of its own so that a long pass (a first pass over a million old runs) never
holds up the reaper's recovery of lost runs and due delayed runs. Every worker runs one;
their passes start at a random offset within the period, and their batches never take the
same rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, checked deletes on SQLite).
"""

from __future__ import annotations

import logging
import threading

from jobsys.engine import periodic
from jobsys.engine.runtime import Runtime
from jobsys.store import retention, runs

log = logging.getLogger("jobsys.pruner")


class Pruner:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jobsys-pruner", daemon=True)

    def start(self) -> None:
        if self.runtime.settings.prune_seconds > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        periodic.every(
            self.runtime.settings.prune_seconds, self._stop, self.prune_once, log, "pruner"
        )

    def prune_once(self) -> retention.PruneResult | None:
        """One pass of the policies; ``None`` when they keep every run (the default)."""
        s, now = self.runtime.settings, runs.utcnow()
        rules = retention.policy_rules(s, self.runtime.registry, now)
        if not rules:
            return None
        store = self.runtime.store
        result = store.retention.prune(
            rules,
            batch=s.prune_batch,
            stop=self._stop,
            workflow_cutoffs=retention.workflow_cutoffs(s, now),
        )
        if result.runs or result.workflow_runs:
            log.info(
                "jobsys pruner: deleted %d runs and %d workflow runs in %d batches (%.1f s)",
                result.runs,
                result.workflow_runs,
                result.batches,
                result.seconds,
                extra={"action": "pruned"},
            )
        return result
