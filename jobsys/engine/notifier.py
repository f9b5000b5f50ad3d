"""The notifier: a thread beside each worker's reaper that sends webhook notifications, every
``JOBSYS_NOTIFY_SECONDS``.

Each pass turns the run events written since the last one into deliveries of the
subscriptions that match them (``store/subscriptions.py``, the durable outbox), then claims
the deliveries that are due and sends them, a few at a time, each signed
(``base/webhooks.py``). A failed attempt (no answer, an answer other than 2xx, a host no
longer on ``JOBSYS_WEBHOOK_HOSTS``) is tried again after a backoff that doubles up to
``JOBSYS_WEBHOOK_BACKOFF_MAX_SECONDS``, and after ``JOBSYS_WEBHOOK_ATTEMPTS`` the delivery is
marked failed, and kept with its log.

It never touches a run: the events it reads are written by the database in the run's own
transaction, so a subscriber that is down, slow or gone, or a notifier that is stopped,
delays notifications and nothing else. Every worker runs one; claims with a lease keep two
from sending the same delivery at once, and a delivery is sent again (same id) only when the
notifier that claimed it died before writing the outcome.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import logging
import random
import ssl
import threading
import time
import urllib.parse

from jobsys.base import errors, webhooks
from jobsys.declare import http_jobs, spec
from jobsys.engine.runtime import Runtime
from jobsys.store import subscriptions

log = logging.getLogger("jobsys.notifier")

CLAIM = 100
"""Deliveries claimed at once (sent ``SENDERS`` at a time, their outcomes written in one
transaction)."""
SENDERS = 4
"""Deliveries sent at once (a slow receiver holds up one sender, not the others)."""
MAX_ANSWER = 64 * 1024
"""Bytes of an answer's body read (and dropped) at most."""
PRUNE_EVERY = 300.0
"""Seconds between two deletions of old deliveries (``JOBSYS_KEEP_DELIVERIES``)."""


class Notifier:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = settings = runtime.settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jobsys-notifier", daemon=True)
        self._tls: ssl.SSLContext | None = None
        self._secrets: dict[str, str] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.backoff = spec.RetryPolicy(
            max_attempts=settings.webhook_attempts,
            initial_backoff=settings.webhook_backoff_seconds,
            max_backoff=settings.webhook_backoff_max_seconds,
            jitter=0.1,
        )

    def start(self) -> None:
        if self.settings.notify_seconds > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        period = self.settings.notify_seconds
        wait = random.uniform(0.0, 1.0) * period
        pruned_at = time.monotonic()
        while not self._stop.wait(wait):
            wait = period
            try:
                self.notify_once()
                if time.monotonic() - pruned_at > PRUNE_EVERY:
                    pruned_at = time.monotonic()
                    self.prune_once()
            except Exception:
                log.exception("jobsys notifier: pass failed", extra={"action": "notifier_error"})

    def prune_once(self) -> int:
        """Delete the deliveries that ended longer ago than ``JOBSYS_KEEP_DELIVERIES``."""
        keep = self.settings.keep_deliveries
        if keep is None:
            return 0
        before, deleted = time.time() - keep, 0
        while not self._stop.is_set():
            done = self.runtime.store.subscriptions.prune(before)
            deleted += done
            if done < 1000:
                break
        return deleted

    def notify_once(self) -> int:
        """One pass: new events into deliveries, then the due deliveries sent; how many were
        sent (delivered or not)."""
        subs = self.runtime.store.subscriptions
        listening = subs.any()
        subs.fan_out(listening=listening)
        if not listening:  # an idle pass: nothing to send (a deleted one's went with it)
            return 0
        sent = 0
        while not self._stop.is_set():
            lease = 2 * self.settings.webhook_timeout_seconds + 30
            claimed = subs.claim(CLAIM, lease)
            if not claimed:
                break
            self._send_all(claimed)
            sent += len(claimed)
            if len(claimed) < CLAIM:
                break
        return sent

    def _send_all(self, claimed: list[subscriptions.Delivery]) -> None:
        owners = self.runtime.store.subscriptions.secrets_of([d.subscription_id for d in claimed])
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                SENDERS, thread_name_prefix="jobsys-webhook"
            )
        futures = [
            self._pool.submit(self._send_one, d, owners.get(d.subscription_id)) for d in claimed
        ]
        done = [f.result() for f in futures]
        self.runtime.store.subscriptions.record([a for a in done if a is not None])

    def _send_one(
        self, delivery: subscriptions.Delivery, sub: subscriptions.Subscription | None
    ) -> subscriptions.Attempt | None:
        """Send one delivery; how it went (``None``: its subscription is gone)."""
        if sub is None:  # deleted while its delivery was claimed: nothing to send it to
            return None
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            http_jobs.check_url(sub.id, sub.url, self.settings.webhook_hosts)
            secret = self._secret(sub.secret)
            body = json.dumps(delivery.payload, separators=(",", ":")).encode()
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "jobsys-webhooks",
                webhooks.DELIVERY_HEADER: delivery.id,
                webhooks.EVENT_HEADER: delivery.event,
                webhooks.SIGNATURE_HEADER: webhooks.sign(secret, body),
            }
            status = self._post(sub.url, body, headers)
            if not 200 <= status < 300:
                error = f"answered HTTP {status}"
        except (errors.InvalidInput, errors.ConfigError) as exc:
            error = f"not sent: {exc}"
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, TLS
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        seconds = time.monotonic() - started
        retry_at = None
        attempt = delivery.attempts + 1
        if error is not None and attempt < self.settings.webhook_attempts:
            retry_at = time.time() + self.backoff.next_delay(attempt)
        if error is not None:
            log.warning(
                "jobsys notifier: delivery %s to %s, attempt %d: %s",
                delivery.id,
                sub.url,
                attempt,
                error,
                extra={"action": "webhook_failed" if retry_at is None else "webhook_retry"},
            )
        return subscriptions.Attempt(delivery, status, error, seconds, retry_at)

    def _secret(self, sealed: str) -> str:
        """A subscription's signing secret, opened once per process."""
        found = self._secrets.get(sealed)
        if found is None:
            found = self._secrets[sealed] = str(self.runtime.sealer.open(sealed)["secret"])
        return found

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST ``body`` to ``url``; the answer's status. The standard library's client, a
        connection per request and no redirect followed: a third of the CPU of a pooled
        ``httpx`` client per request, which matters on a worker busy with jobs."""
        parts = urllib.parse.urlsplit(url)
        timeout = self.settings.webhook_timeout_seconds
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            conn = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=timeout, context=self._tls
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            response.read(MAX_ANSWER)
            return int(response.status)
        finally:
            conn.close()
