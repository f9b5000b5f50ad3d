"""The Celery settings jobsys runs with (see README "How jobsys configures Celery")."""

from __future__ import annotations

import ssl
import urllib.parse
from typing import Any

from jobsys.base import config


def celery_config(settings: config.Settings) -> dict[str, Any]:
    """The Celery settings jobsys runs with (see README "How jobsys configures Celery")."""
    return {
        "broker_url": settings.resolved_broker_url(),
        "broker_transport": "jobsys.engine.transport:Transport",
        "result_backend": settings.resolved_result_url(),
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": settings.prefetch,
        # The run store, not the broker, is the ledger of delivery: a claimed run whose worker
        # dies is requeued when its lease expires, and a waiting run whose message was lost
        # (popped by a worker that died before claiming it, or lost by Redis) is published
        # again by the reconciler. kombu's emulated acknowledgements (a hash of unacked
        # messages, restored after a visibility timeout of an hour) would only repeat that,
        # later, at the price of two Redis round trips per job.
        "broker_transport_options": {
            "ack_emulation": False,
            # A publish that finds no broker fails at once instead of retrying to connect
            # for seconds: the run is recorded, and the producer's outbox (or the
            # reconciler) sends it when the broker is back. Publishing with Celery's retry
            # policy (``require_queued``) still retries the publish as a whole.
            "max_retries": 0,
            "socket_connect_timeout": 5,
            # A command whose reply never comes (a connection cut off mid-command, its peer
            # gone) fails after this long instead of hanging the process (a beat's publish,
            # a producer's); a worker's blocking read of its queues waits 1 s at a time.
            "socket_timeout": 30,
            "socket_keepalive": True,
            "health_check_interval": 25,
            "retry_on_timeout": True,
            # One Redis list per priority, read lowest step first: a run of priority p (0
            # lowest .. 9 highest) is sent at step 9 - p (``publishing.broker_priority``).
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_soft_shutdown_timeout": 10.0,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_deduplicate_successful_tasks": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 5,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 3,
        },
        "result_expires": settings.result_expires,
        "result_extended": False,
        "result_backend_always_retry": True,
        "result_backend_max_retries": 10,
        "redis_backend_health_check_interval": 25,
        "redis_socket_keepalive": True,
        "redis_retry_on_timeout": True,
        "redis_socket_connect_timeout": 5,
        "redis_socket_timeout": 30,
        # Events cost a broker round trip each; Flower switches them on in the workers
        # (enable_events) while it watches, or JOBSYS_TASK_EVENTS=1 keeps them always on.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "task_track_started": False,
        "timezone": "UTC",
        "enable_utc": True,
        "task_default_queue": "jobs",
        "worker_hijack_root_logger": False,
        **tls_config(settings),
    }


def tls_config(settings: config.Settings) -> dict[str, Any]:
    """TLS for a ``rediss://`` broker or result URL that says nothing of it: verify the
    server's certificate against the system's authorities (kombu would otherwise connect in
    clear through jobsys's transport, and Celery's backend refuses such a URL). A URL with
    ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile`` or ``ssl_keyfile`` in its query is
    taken as it is."""
    found: dict[str, Any] = {}
    if _bare_rediss(settings.resolved_broker_url()):
        found["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if _bare_rediss(settings.resolved_result_url()):
        found["redis_backend_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return found


def _bare_rediss(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "rediss" and not any(
        key.startswith("ssl_") for key in urllib.parse.parse_qs(parts.query)
    )
