"""Bare Celery, stock settings plus the same delivery guarantees jobsys gives (late acks,
results stored), for the side-by-side benchmark. Broker and backend come from the env."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("bare", broker=os.environ["BARE_BROKER_URL"], backend=os.environ["BARE_RESULT_URL"])
app.conf.update(
    task_acks_late=True, task_reject_on_worker_lost=True, broker_connection_retry_on_startup=True
)


@app.task(name="bare.noop")
def noop() -> dict[str, object]:
    return {}
