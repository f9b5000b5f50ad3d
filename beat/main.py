"""Entry point of the beat role: Celery beat driven by the schedules in the jobsys store."""

from __future__ import annotations

import functools
from types import FrameType
from typing import Any

from celery import Celery, beat
from celery.apps.beat import Beat
from celery.platforms import signals

from beat.scheduler import StoreScheduler
from jobsys.base import config, private
from jobsys.declare import jobs


def run(
    app: Celery, settings: config.Settings, registry: jobs.Registry, loglevel: str = "INFO"
) -> None:
    """Run Celery beat in this process until it is stopped."""
    private.make_dir(settings.home)
    scheduler = functools.partial(StoreScheduler, settings=settings, registry=registry)
    _Beat(
        app=app,
        scheduler=scheduler,
        max_interval=settings.beat_interval,
        loglevel=loglevel,
        pidfile=None,
        schedule=str(settings.home / "beat-schedule"),
        redirect_stdouts=False,
    ).run()


class _Beat(Beat):
    """Celery's beat, stopped by SIGTERM or SIGINT even while its scheduler is still waiting
    for the run store: Celery's handler saves the scheduler's state first, and asking for a
    scheduler not yet made would make one, waiting for the store again inside the handler."""

    def install_sync_handler(self, service: beat.Service) -> None:
        def stop(signum: int, frame: FrameType | None) -> Any:
            if "scheduler" in vars(service):  # made: save its state (the publish times)
                service.sync()
            raise SystemExit()

        signals.update(SIGTERM=stop, SIGINT=stop)
