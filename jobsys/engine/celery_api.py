"""The Celery and kombu names the layers above the engine use: the app's type, the result
timeout ``Client.wait`` catches, the broker's connection error the HTTP API answers 503 for,
broker URLs with their passwords hidden, and worker node names.

Only the engine imports Celery and kombu (a contract in pyproject.toml, checked by
``lint-imports``); code above it takes these names from here."""

from __future__ import annotations

from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout
from celery.utils.nodenames import default_nodename, host_format
from kombu.exceptions import OperationalError as BrokerConnectionError
from kombu.utils.url import maybe_sanitize_url as sanitize_url

__all__ = [
    "BrokerConnectionError",
    "Celery",
    "ResultTimeout",
    "default_nodename",
    "host_format",
    "sanitize_url",
]
