"""``Store``: the stores of one database together, the runs (``RunStore``, which it is) with the
workflow runs and the schedules kept beside them.

It sits above the stores it holds, so the lowest one (``runs``) never builds a higher one:
open a ``Store`` where runs, workflow runs and schedules are all needed (a client, a worker, a
beat), a bare ``RunStore`` where runs alone are.
"""

from __future__ import annotations

import functools

from jobsys.store import (
    bulk,
    pauses,
    retention,
    runs,
    schedules,
    semantic,
    subscriptions,
    workflow_runs,
)


class Store(runs.RunStore):
    """One database's run records (every ``RunStore`` method), workflow runs and schedules."""

    @functools.cached_property
    def workflows(self) -> workflow_runs.WorkflowStore:
        """The workflow runs in the same database."""
        return workflow_runs.WorkflowStore(self)

    @functools.cached_property
    def schedules(self) -> schedules.ScheduleStore:
        """The schedules in the same database."""
        return schedules.ScheduleStore(self.engine)

    @functools.cached_property
    def pauses(self) -> pauses.PauseStore:
        """The paused queues and jobs in the same database, and the runs they hold."""
        return pauses.PauseStore(self.engine)

    @functools.cached_property
    def bulk(self) -> bulk.BulkStore:
        """Runs matched by a filter, and the batched writes of bulk actions."""
        return bulk.BulkStore(self.engine, self._end)

    @functools.cached_property
    def retention(self) -> retention.RetentionStore:
        """The pruner's batched deletes, and archiving runs and schedules."""
        return retention.RetentionStore(self.engine)

    @functools.cached_property
    def semantic(self) -> semantic.SemanticStore:
        """The vectors of semantic search: the indexer's writes, the job searches' reads."""
        return semantic.SemanticStore(self.engine)

    @functools.cached_property
    def subscriptions(self) -> subscriptions.SubscriptionStore:
        """Webhook subscriptions and the outbox of their deliveries."""
        return subscriptions.SubscriptionStore(self.engine)
