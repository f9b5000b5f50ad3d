"""Worker presence: each worker process's heartbeat row, and the runs the workers hold.

Every worker process (a Celery node: ``worker1-1@host``) upserts one row of ``jobsys_workers``
every ``JOBSYS_HEARTBEAT_SECONDS`` from a thread of its own (``jobsys.engine.presence``), never
from the path a job takes: who it is (host, pid, pool), what it reads (queues) and runs (catalog
modules, catalog hash, jobsys version), when it started and when it was last seen. A worker that
stops cleanly removes its row; one that vanished stays, ``lost`` once it has missed
``LOST_AFTER_BEATS`` heartbeats, and is pruned ``FORGET_AFTER`` later. The table lives in the
run store, so ``jobsys workers list`` sees every machine without Celery's remote control.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa

from jobsys.store import runs, schema

W = schema.workers
R = schema.runs

LOST_AFTER_BEATS = 3
"""A worker not heard from for this many of its heartbeat intervals is ``lost``."""
FORGET_AFTER = dt.timedelta(hours=1)
"""A worker silent for this long (lost, or killed without a clean stop) is pruned."""


@dataclasses.dataclass(frozen=True)
class WorkerRecord:
    """One worker process, as its last heartbeat said. Times are UTC."""

    name: str
    """The Celery node name (``worker1-1@host``), recorded as the ``worker`` of its runs."""
    host: str
    pid: int
    pool: str
    """``inline`` (jobsys's supervised solo processes), ``solo`` or ``prefork``."""
    concurrency: int
    """Runs it executes at once."""
    queues: list[str]
    catalog: list[str]
    """The modules of its ``JOBSYS_CATALOG``."""
    catalog_hash: str
    version: str
    heartbeat_seconds: float
    started_at: dt.datetime
    last_seen: dt.datetime

    def lost(self, now: dt.datetime) -> bool:
        """Not heard from for ``LOST_AFTER_BEATS`` of its own heartbeat intervals."""
        silent = (now - self.last_seen).total_seconds()
        return silent > LOST_AFTER_BEATS * self.heartbeat_seconds

    def to_json(self) -> dict[str, Any]:
        return runs.as_json(self)


@dataclasses.dataclass(frozen=True)
class HeldRun:
    """A running run and the worker holding it."""

    id: str
    job: str
    tenant: str
    worker: str
    started_at: dt.datetime | None


class PresenceStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def beat(self, record: WorkerRecord) -> None:
        """Record ``record`` as the latest heartbeat of its worker (insert or replace)."""
        values = dataclasses.asdict(record)
        with self.engine.begin() as conn:
            changed = conn.execute(W.update().where(W.c.name == record.name).values(values))
            if changed.rowcount:
                return
        try:
            with self.engine.begin() as conn:
                conn.execute(W.insert().values(values))
        except sa.exc.IntegrityError:  # its first beat raced an earlier instance's last one
            with self.engine.begin() as conn:
                conn.execute(W.update().where(W.c.name == record.name).values(values))

    def remove(self, name: str, pid: int) -> None:
        """Forget worker ``name`` (it stops), unless another process took the name since."""
        with self.engine.begin() as conn:
            conn.execute(W.delete().where(W.c.name == name, W.c.pid == pid))

    def prune(self, now: dt.datetime) -> int:
        """Forget the workers silent for ``FORGET_AFTER``; how many were."""
        with self.engine.begin() as conn:
            return conn.execute(W.delete().where(W.c.last_seen < now - FORGET_AFTER)).rowcount

    def known(self) -> list[WorkerRecord]:
        """Every worker known, by host and name."""
        query = sa.select(W).order_by(W.c.host, W.c.name)
        with self.engine.connect() as conn:
            return [WorkerRecord(**row._asdict()) for row in conn.execute(query)]

    def held_runs(self) -> list[HeldRun]:
        """The running runs that name a worker, oldest start first."""
        query = (
            sa.select(R.c.id, R.c.job, R.c.tenant, R.c.worker, R.c.started_at)
            .where(R.c.state == runs.RunState.RUNNING.value, R.c.worker.is_not(None))
            .order_by(R.c.started_at)
        )
        with self.engine.connect() as conn:
            return [HeldRun(**row._asdict()) for row in conn.execute(query)]
