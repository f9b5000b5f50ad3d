"""The indexer: a thread beside each worker's reaper that embeds, every
``JOBSYS_EMBED_SECONDS``, what semantic search ranks (``jobsys.store.semantic``): the new
entries of the keyword index (runs' errors, batches of log lines), the jobs' names,
descriptions and tags, and the schedules' names and descriptions. It runs only when
``JOBSYS_EMBEDDER`` is set.

It has a thread of its own, as the pruner has, so that a slow embedder (a remote endpoint, a
first pass over a large old index) never holds up the reaper, and no job waits for an
embedding: the per-job path writes the keyword index only, as it did before. Of the workers'
indexers, one at a time holds the work (a lease in the store); the others skip their pass.
"""

from __future__ import annotations

import logging
import threading

from jobsys.base import embedders
from jobsys.engine import periodic
from jobsys.engine.runtime import Runtime
from jobsys.store import semantic

log = logging.getLogger("jobsys.indexer")


def job_text(name: str, description: str, tags: tuple[str, ...]) -> str:
    """What is embedded of a job: its name (its words), its description, its tags."""
    words = name.replace(".", " ").replace("_", " ")
    return " ".join(p for p in (words, description, " ".join(tags)) if p)


class Indexer:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        s = runtime.settings
        self.embedder = embedders.from_setting(s.embedder, s.embedder_model, s.embedder_key)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jobsys-indexer", daemon=True)
        self._jobs_seen: str | None = None
        self._schedules_seen: tuple[int, str] | None = None
        """What the last pass found of the jobs' texts and the schedules: unchanged, they are
        not read again (a pass costs a query or two when nothing is new)."""

    def start(self) -> None:
        if self.embedder is not None and self.runtime.settings.embed_seconds > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        periodic.every(
            self.runtime.settings.embed_seconds, self._stop, self.index_once, log, "indexer"
        )

    def index_once(self) -> int:
        """One pass: the number of texts embedded."""
        if self.embedder is None:
            return 0
        store, embed = self.runtime.store, self.embedder.embed
        texts = {s.name: job_text(s.name, s.description, s.tags) for s in self.runtime.registry}
        done, jobs_seen = 0, semantic.digest(repr(sorted(texts.items())))
        if jobs_seen != self._jobs_seen:
            done += store.semantic.index_jobs(embed, texts)
            self._jobs_seen = jobs_seen
        schedules_seen = store.semantic.schedules_seen()
        if schedules_seen != self._schedules_seen:
            done += store.semantic.index_schedules(embed)
            self._schedules_seen = schedules_seen
        holder = f"{self.runtime.node or store.worker_name}:{threading.get_native_id()}"
        done += store.semantic.index_runs(
            embed, self.runtime.settings.embed_batch, holder, self._stop
        )
        if done:
            log.info("jobsys indexer: embedded %d texts", done, extra={"action": "embedded"})
        return done
