"""The loop of a worker's periodic threads (the pruner, the indexer): one pass every
``period`` seconds until stopped, the first after a random part of a period (workers started
together spread out), a failing pass logged and the next one tried on time."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any


def every(
    period: float,
    stop: threading.Event,
    one_pass: Callable[[], Any],
    log: logging.Logger,
    name: str,
) -> None:
    """Run ``one_pass`` every ``period`` seconds until ``stop`` is set."""
    wait = random.uniform(0.2, 1.0) * period
    while not stop.wait(wait):
        wait = period
        try:
            one_pass()
        except Exception:
            log.exception("jobsys %s: pass failed", name, extra={"action": f"{name}_error"})
