"""Entry point of the beat role: Celery beat with the jobsys app, its state under JOBSYS_HOME."""

from __future__ import annotations

from celery import Celery

from jobsys import config


def run(app: Celery, settings: config.Settings, loglevel: str = "INFO") -> None:
    """Run Celery beat in this process until it is stopped."""
    settings.home.mkdir(parents=True, exist_ok=True)
    app.start(
        [
            "beat",
            f"--loglevel={loglevel}",
            f"--schedule={settings.home / 'beat-schedule'}",
            "--pidfile=",
        ]
    )
