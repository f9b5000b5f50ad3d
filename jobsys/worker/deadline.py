"""Time limits for jobs that run in the consuming process (the inline worker mode).

The soft limit is a ``SIGALRM`` timer that raises ``JobTimeout`` inside the job body; the
hard limit is enforced by the tracker thread, which ends the whole process (the supervisor
starts a new one and the reaper records the run as timed out). Under Celery's prefork pool,
Celery's own time limits apply instead and nothing here is used.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from jobsys.base import errors

_inside = threading.local()


def _on_alarm(signum: int, frame: Any) -> None:
    if getattr(_inside, "seconds", None) is not None:
        seconds = _inside.seconds
        _inside.seconds = None  # raise once
        raise errors.JobTimeout(f"run went past its {seconds:g} s timeout")


@contextlib.contextmanager
def soft_limit(seconds: float) -> Iterator[None]:
    """Raise ``JobTimeout`` in the body if it runs longer than ``seconds`` (main thread only).

    The alarm only raises while the body runs: one that fires just after the body returned
    finds the flag cleared and does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    _inside.seconds = seconds
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _inside.seconds = None
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
