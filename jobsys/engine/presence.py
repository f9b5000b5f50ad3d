"""A worker's heartbeat row (``jobsys.store.presence``): what ``jobsys workers list`` shows.

Each worker process (the main process of a Celery node) runs one thread that upserts its row
every ``JOBSYS_HEARTBEAT_SECONDS``: its name, host, pid, pool and concurrency, the queues it
reads, its catalog (modules and ``catalog.digest``) and jobsys version. It is a thread of its
own, not the reaper's: a long reaper pass never delays a heartbeat, and no job's path writes
anything more. A clean stop removes the row; a worker that vanished leaves it to grow stale
(``lost``), and every live worker prunes rows silent for ``presence.FORGET_AFTER`` about once
a minute.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from celery import Celery, signals

from jobsys.base import release
from jobsys.declare import catalog
from jobsys.store import presence, runs

if TYPE_CHECKING:
    from jobsys.engine import broker

log = logging.getLogger("jobsys.presence")

PRUNE_EVERY = 60.0
"""Seconds between two prunes of long-silent workers' rows by one worker."""
HIDDEN_QUEUE_PREFIX = "_jobsys."
"""Queues jobsys reads for itself (the parking queues, ``parking.QUEUE_PREFIX``): not shown."""


class Presence:
    """The heartbeat thread of one worker process."""

    def __init__(self, app: Celery, runtime: broker.Runtime) -> None:
        self.app, self.runtime = app, runtime
        self.concurrency = 1
        self.started_at = runs.utcnow()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._pruned = 0.0
        self._failing = False
        self._store: presence.PresenceStore | None = None

    @property
    def name(self) -> str:
        return self.runtime.node or f"celery@{socket.gethostname()}"

    def start(self) -> None:
        self._pid = os.getpid()
        self.started_at = runs.utcnow()
        self._thread = threading.Thread(target=self._loop, name="jobsys-presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and remove this worker's row (a clean stop is not a lost worker).
        Only the process that started the thread does anything (not a prefork child)."""
        if self._thread is None or os.getpid() != self._pid:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        try:
            self.store.remove(self.name, self._pid)
        except Exception as exc:
            log.warning("jobsys presence: could not remove this worker's row: %s", exc)

    @property
    def store(self) -> presence.PresenceStore:
        if self._store is None:
            self._store = presence.PresenceStore(self.runtime.store.engine)
        return self._store

    def record(self, catalog_hash: str) -> presence.WorkerRecord:
        """What this worker's heartbeat says now."""
        consumed = self.app.amqp.queues.consume_from or self.app.amqp.queues
        queues = sorted(q for q in consumed if not q.startswith(HIDDEN_QUEUE_PREFIX))
        s = self.runtime.settings
        return presence.WorkerRecord(
            name=self.name,
            host=socket.gethostname(),
            pid=self._pid,
            pool="inline" if self.runtime.inline else "prefork",
            concurrency=1 if self.runtime.inline else self.concurrency,
            queues=queues,
            catalog=list(s.catalog),
            catalog_hash=catalog_hash,
            version=release.version(),
            heartbeat_seconds=s.heartbeat_seconds,
            started_at=self.started_at,
            last_seen=runs.utcnow(),
        )

    def _loop(self) -> None:
        digest = catalog.digest(self.runtime.registry)
        while True:
            self.beat(digest)
            if self._stop.wait(self.runtime.settings.heartbeat_seconds):
                return

    def beat(self, catalog_hash: str) -> None:
        try:
            self.store.beat(self.record(catalog_hash))
            if time.monotonic() - self._pruned >= PRUNE_EVERY:
                self._pruned = time.monotonic()
                self.store.prune(runs.utcnow())
        except Exception as exc:
            if not self._failing:  # once per outage, not once per beat
                log.warning("jobsys presence: heartbeat not recorded: %s", exc)
            self._failing = True
        else:
            if self._failing:
                log.warning("jobsys presence: heartbeats recorded again")
            self._failing = False


def install(app: Celery, runtime: broker.Runtime) -> Presence:
    """Beat from the worker's main process once it is ready, until it shuts down."""
    beat = Presence(app, runtime)

    def init(sender: Any = None, **_: Any) -> None:
        beat.concurrency = int(getattr(sender, "concurrency", None) or 1)

    def ready(**_: Any) -> None:
        beat.start()

    def shutdown(**_: Any) -> None:
        beat.stop()

    signals.worker_init.connect(init, weak=False)
    signals.worker_ready.connect(ready, weak=False)
    signals.worker_shutdown.connect(shutdown, weak=False)
    return beat
