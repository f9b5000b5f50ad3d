"""Bare Celery, stock settings plus the same delivery guarantees jobsys gives (late acks,
results stored), for the side-by-side benchmark. The worker's broker and backend come from
``BARE_BROKER_URL`` / ``BARE_RESULT_URL``; the benchmark builds its own clients with
``make_app``."""

from __future__ import annotations

import os

from celery import Celery


def noop() -> dict[str, object]:
    return {}


def make_app(broker_url: str, result_url: str) -> Celery:
    app = Celery("bare", broker=broker_url, backend=result_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        broker_connection_retry_on_startup=True,
    )
    app.task(name="bare.noop")(noop)
    return app


app = make_app(
    os.environ.get("BARE_BROKER_URL", "redis://127.0.0.1:6379/0"),
    os.environ.get("BARE_RESULT_URL", "redis://127.0.0.1:6379/0"),
)
