"""Entry point of the beat role: Celery beat driven by the schedules in the jobsys store."""

from __future__ import annotations

import functools

from celery import Celery
from celery.apps.beat import Beat

from beat.scheduler import StoreScheduler
from jobsys.base import config, private
from jobsys.declare import jobs


def run(
    app: Celery, settings: config.Settings, registry: jobs.Registry, loglevel: str = "INFO"
) -> None:
    """Run Celery beat in this process until it is stopped."""
    private.make_dir(settings.home)
    scheduler = functools.partial(StoreScheduler, settings=settings, registry=registry)
    Beat(
        app=app,
        scheduler=scheduler,
        max_interval=settings.beat_interval,
        loglevel=loglevel,
        pidfile=None,
        schedule=str(settings.home / "beat-schedule"),
        redirect_stdouts=False,
    ).run()
