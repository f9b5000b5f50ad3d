"""``Runtime``: the per-process state a worker's task bodies use (its store, tracker,
limits, sealer and policy), created lazily after the process forks."""

from __future__ import annotations

import dataclasses
import functools

from celery.exceptions import SoftTimeLimitExceeded

from jobsys.base import config, sealing
from jobsys.declare import jobs, permissions
from jobsys.store import definition_store, stores
from jobsys.worker import context, execute, gates


@dataclasses.dataclass
class Runtime:
    """The per-process state a worker needs, created lazily after the process forks."""

    settings: config.Settings
    registry: jobs.Registry
    node: str | None = None
    """The Celery node name (``worker1@host``), recorded as the worker of each run."""
    inline: bool = False
    """Jobs run in the consuming process (Celery's solo pool under the jobsys supervisor):
    jobsys enforces the time limits itself."""
    _store: stores.Store | None = None
    _tracker: context.Tracker | None = None
    _stop_grace: float | None = None

    @property
    def store(self) -> stores.Store:
        return self.open_store()

    def open_store(self, wait: float = 0.0) -> stores.Store:
        """This process's store, opened on first use; ``wait``: seconds to keep trying while
        the database cannot be reached (``RunStore.open``)."""
        if self._store is None:
            self._store = stores.Store.open(self.settings.database_url, wait)
            if self.node:
                self._store.worker_name = self.node
            self.registry.attach(definition_store.source(self.settings, self._store.engine))
        return self._store

    @property
    def tracker(self) -> context.Tracker:
        if self._tracker is None:
            s = self.settings
            self._tracker = context.Tracker(
                self.store, s.lease_seconds, s.heartbeat_seconds, s.cancel_grace_seconds
            )
            if self._stop_grace is not None:
                self._tracker.stop_within(self._stop_grace)
        return self._tracker

    def stop_within(self, grace: float) -> None:
        """The worker is stopping: a run executing ``grace`` seconds from now is handed
        back. Called in a signal handler: creates nothing (no tracker yet: none runs)."""
        self._stop_grace = grace
        if self._tracker is not None:
            self._tracker.stop_within(grace)

    @functools.cached_property
    def sealer(self) -> sealing.Sealer:
        return sealing.Sealer.for_home(self.settings.secret_key, self.settings.home)

    @functools.cached_property
    def policy(self) -> permissions.Policy:
        return permissions.Policy(
            admin_roles=self.settings.admin_roles,
            superadmin_roles=self.settings.superadmin_roles,
        )

    @functools.cached_property
    def limits(self) -> execute.Limits:
        grace = self.settings.hard_timeout_grace_seconds if self.inline else None
        return execute.Limits(
            self.settings.lease_seconds,
            (SoftTimeLimitExceeded,),
            grace,
            delay_horizon=self.settings.delay_horizon_seconds,
            rates=gates.Rates(self.settings),
        )

    def after_fork(self) -> None:
        if self._store is not None:
            self._store.after_fork()
        self._tracker = None
