"""Publishing the runs a pause held, once it is gone: by the resumer, and by every worker's
reaper on each pass (in case the resumer died between deleting the pause and publishing).

The runs are taken (``PauseStore.claim_released``: a new message token each, in one guarded
statement, so of every resumer and reaper passing at once one takes each run) and published
at the back of their priorities' lists, highest priority first, then oldest: they start in
priority order. A run of a job this process does not know is left parked, for a process that
does (another catalog's workers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery

from jobsys.declare import jobs
from jobsys.engine.publishing import republish
from jobsys.store import pauses, records, stores

log = logging.getLogger("jobsys.pausing")

BATCH = 500
"""Runs taken by one statement; a release takes batches until one comes short."""
BATCHES = 200
"""At most this many batches at a time (100,000 runs): the reapers take the rest."""


def resume(
    app: Celery,
    registry: jobs.Registry,
    store: stores.Store,
    pause: tuple[str, str, str | None],
    tenant: str | None = None,
) -> tuple[list[pauses.Pause], int]:
    """Delete a pause (scope, name, its tenant or ``None`` for every tenant's) and publish
    the parked runs (of ``tenant``; ``None``: of every tenant) no pause holds any more; the
    pauses deleted and the number of runs published. The first batch is taken in the
    transaction that deletes the pause, so that the resumer, not a reaper passing meanwhile,
    publishes them (and says how many); any more, as ``release`` does."""
    knows = _knowing(registry)
    scope, name, owner = pause
    gone, taken = store.pauses.resume(scope, name, owner, knows, tenant, BATCH)
    _publish(app, registry, store, taken)
    more = release(app, registry, store, tenant) if len(taken) == BATCH else 0
    return gone, len(taken) + more


def release(
    app: Celery,
    registry: jobs.Registry,
    store: stores.Store,
    tenant: str | None = None,
    knows: Callable[[records.RunRecord], bool] | None = None,
) -> int:
    """Publish the parked runs (of ``tenant``; ``None``: of every tenant) that no pause
    holds any more, in priority order; the number published. ``knows``: whether this process
    can publish a run's job (default: its job is in ``registry``)."""
    knows = knows or _knowing(registry)
    total, skipped = 0, set[str]()
    for _ in range(BATCHES):
        found = store.pauses.released(tenant, BATCH, skip_jobs=skipped)
        skipped |= {r.job for r in found if not knows(r)}
        taken = store.pauses.claim_released([r for r in found if knows(r)])
        _publish(app, registry, store, taken)
        total += len(taken)
        if len(found) < BATCH:
            break
    return total


def _knowing(registry: jobs.Registry) -> Callable[[records.RunRecord], bool]:
    return lambda r: r.job in registry.scoped(r.tenant)


def _publish(
    app: Celery, registry: jobs.Registry, store: stores.Store, taken: list[records.RunRecord]
) -> None:
    try:
        republish(app, registry, taken, front=False)
    except Exception:  # (the broker is down) parked again: the next pass sends them
        for run in taken:
            store.pauses.unclaim(run, None)
        raise
    if taken:
        log.info(
            "jobsys: published %d runs no longer paused",
            len(taken),
            extra={"action": "paused_released"},
        )
