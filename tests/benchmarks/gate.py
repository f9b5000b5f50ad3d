"""A start gate for the workers of systems that have no remote control (Dramatiq, Huey).

Each worker process checks in at boot and waits, before it takes any message, until the
benchmark opens the gate. The benchmark opens it once every process has checked in, so a
drain is measured with all N processes running from its first job, as the Celery-based
systems are (their workers start on an empty queue and are then pointed at the real one).
The two keys live in the system's own Redis database, emptied before every measurement.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis

READY = "bench:gate:ready"
OPEN = "bench:gate:open"


def check_in(client: redis.Redis) -> None:
    """In a worker process, at boot: count this process in, then wait for the gate."""
    client.incr(READY)
    while not client.exists(OPEN):
        time.sleep(0.002)


def wait_all_in(
    client: redis.Redis,
    procs: Sequence[subprocess.Popen[bytes]],
    expected: int,
    log: Path,
    timeout: float = 60.0,
) -> None:
    """Wait until ``expected`` worker processes have checked in."""
    deadline = time.monotonic() + timeout
    while int(client.get(READY) or 0) < expected:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"worker exited: {log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready after {timeout} s: {log}")
        time.sleep(0.01)


def open_gate(client: redis.Redis) -> None:
    client.set(OPEN, "1")
