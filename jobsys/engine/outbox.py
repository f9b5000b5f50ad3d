"""The producer's outbox: runs recorded but not yet on the broker, published in order when it
answers again.

A run's record is committed before its message is sent, and that is the contract: once
``submit`` has returned a run id, the run is never lost. When the broker cannot be reached,
``submit`` does not wait for it and does not fail the run: the run stays pending ("not yet
queued", its ``waiting`` says why) and goes into this process's outbox, whose thread sends
the messages in the order they were submitted as soon as the broker answers, and stamps
them published. While the outbox holds anything, later submits join its end rather than
overtake it, so the order within a priority is kept.

The outbox lives in the producer's memory; if the producer dies first, the runs are still
recorded, unpublished, and the workers' reconciler publishes them (``reaper.py``). Both
claim a run before sending it (``RunStore.claim_publish``), so it is sent once.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger("jobsys.outbox")


@dataclasses.dataclass(frozen=True)
class Pending:
    """One run to publish: its id, its message's token, and how to send it."""

    run_id: str
    send: Callable[[], None]


class Outbox:
    """Runs waiting for the broker, sent in order by one thread of this process."""

    def __init__(
        self,
        claim: Callable[[str], bool],
        published: Callable[[str], None],
        unclaim: Callable[[str], None],
        retry_seconds: float = 0.5,
        max_retry_seconds: float = 2.0,
    ) -> None:
        self._claim, self._published, self._unclaim = claim, published, unclaim
        self.retry_seconds, self.max_retry_seconds = retry_seconds, max_retry_seconds
        self._queue: collections.deque[Pending] = collections.deque()
        self._lock = threading.Lock()
        self._draining = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, items: Sequence[Pending]) -> None:
        """Queue runs whose message could not be sent (or must not overtake queued ones)."""
        with self._lock:
            self._queue.extend(items)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._loop, name="jobsys-outbox", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def close(self) -> None:
        """Stop sending; what is left stays recorded for the reconciler."""
        self._stop.set()
        self._wake.set()

    def drain(self) -> int:
        """Try to send everything queued now (one caller at a time); how many are left."""
        with self._draining:
            return self._drain()

    def _drain(self) -> int:
        while self._queue and not self._stop.is_set():
            head = self._queue[0]
            if self._claim(head.run_id):
                try:
                    head.send()
                except Exception as exc:
                    self._unclaim(head.run_id)
                    log.info("jobsys outbox: broker still unreachable (%s)", exc)
                    return len(self._queue)
                self._published(head.run_id)
            with self._lock:
                self._queue.popleft()
        return len(self._queue)

    def _loop(self) -> None:
        delay = self.retry_seconds
        while not self._stop.is_set():
            try:
                left = self.drain()
            except Exception:  # the database, not the broker: keep trying
                log.exception("jobsys outbox: pass failed")
                left = len(self._queue)
            if not left:
                with self._lock:
                    if not self._queue:
                        self._thread = None
                        return
                continue
            self._wake.clear()
            self._stop.wait(delay)
            delay = min(delay * 2, self.max_retry_seconds)
