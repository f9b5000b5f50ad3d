"""The measurements of the side-by-side benchmark, the same for every system.

A system (``System``) is driven through a few verbs: enqueue no-op jobs, start N worker
processes that stay idle, wait until they are all up, let them consume, read back when each
job completed, and do one submit-and-wait round trip. Every figure comes from real worker
processes on the benchmark's private Redis.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import psutil

from jobsys.base import embedded
from jobsys.ops import bench


class System(Protocol):
    """One job system under test."""

    name: str
    """Its key on the command line and in the JSON (``jobsys-sqlite``, ``huey`` ...)."""
    title: str
    """How the tables name it."""
    setup: str
    """The settings it runs with, in a few words (printed with the figures)."""

    def reset(self) -> None:
        """Empty its Redis databases (no worker of its own is running)."""

    def enqueue(self, n: int) -> list[Any]:
        """Enqueue ``n`` no-op jobs one call each; return handles for ``finish_times``."""

    def enqueue_batch(self, n: int) -> list[Any] | None:
        """Enqueue ``n`` no-op jobs through its batch API; None if it has none."""

    def start(self, processes: int, log: Path) -> list[subprocess.Popen[bytes]]:
        """Start ``processes`` worker processes that take no job until ``go``."""

    def wait_ready(self, procs: list[subprocess.Popen[bytes]], processes: int, log: Path) -> None:
        """Wait until every worker process started is up."""

    def go(self) -> None:
        """Let the workers consume."""

    def finish_times(self, handles: list[Any], timeout: float) -> list[float]:
        """Wait until every job has its result stored; return their completion times."""

    def roundtrip(self) -> None:
        """Enqueue one no-op job and block until its result is there."""


def wait_for_times(
    fetch: Callable[[], list[float | None]], count: int, timeout: float
) -> list[float]:
    """Call ``fetch`` (one completion time or None per job) until no job is missing."""
    deadline = time.monotonic() + timeout
    while True:
        values = fetch()
        missing = sum(v is None for v in values)
        if not missing:
            return [v for v in values if v is not None]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{missing} of {count} jobs not finished after {timeout} s")
        time.sleep(0.2)


def cpu_seconds(procs: Sequence[subprocess.Popen[bytes]]) -> float:
    return sum(bench.cpu_seconds(p) for p in procs)


def rss_mib(procs: Sequence[subprocess.Popen[bytes]]) -> list[float]:
    return [mib for p in procs for mib in bench.rss_mib(p)]


def pss_mib(procs: Sequence[subprocess.Popen[bytes]]) -> float:
    """The proportional set size of ``procs`` and their children, summed: what they cost in
    memory together (a page shared by k processes counts 1/k in each; RSS counts it in each)."""
    total = 0
    for proc in procs:
        main = psutil.Process(proc.pid)
        for p in [main, *main.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_full_info().pss
    return round(total / 2**20, 1)


def drain(system: System, n: int, processes: int, workdir: Path) -> dict[str, float]:
    """Enqueue ``n`` no-op jobs with no worker running, then start ``processes`` worker
    processes, let them consume once all are up, and time the drain from the first
    completion to the last."""
    system.reset()
    start = time.perf_counter()
    handles = system.enqueue(n)
    enqueue_s = time.perf_counter() - start
    log = workdir / f"{system.name}-drain-{processes}.log"
    log.unlink(missing_ok=True)
    procs = system.start(processes, log)
    try:
        system.wait_ready(procs, processes, log)
        cpu_before = cpu_seconds(procs)
        system.go()
        times = system.finish_times(handles, timeout=max(120, n / 50))
        cpu = cpu_seconds(procs) - cpu_before
        memory = rss_mib(procs)
        pss = pss_mib(procs)
    finally:
        embedded.stop_all(procs, timeout=30)
    window = max(times) - min(times)
    return {
        "enqueue_per_s": round(n / enqueue_s, 1),
        "drain_per_s": round((n - 1) / window, 1) if window > 0 else float("inf"),
        "cpu_s_per_1000": round(1000 * cpu / n, 3),
        "rss_mib_max": max(memory),
        "rss_mib_total": round(sum(memory), 1),
        "pss_mib_total": pss,
    }


def roundtrip(system: System, count: int, workdir: Path) -> dict[str, float]:
    """``count`` sequential enqueue-and-wait calls on an idle worker of 1 process."""
    system.reset()
    log = workdir / f"{system.name}-roundtrip.log"
    log.unlink(missing_ok=True)
    procs = system.start(1, log)
    try:
        system.wait_ready(procs, 1, log)
        system.go()
        for _ in range(20):  # warm up connections
            system.roundtrip()
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            system.roundtrip()
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        embedded.stop_all(procs, timeout=30)
    return {k: round(v, 3) for k, v in bench.percentiles(samples).items()}


def batch_enqueue(system: System, n: int) -> dict[str, float] | None:
    """Enqueue ``n`` jobs through the system's batch API (no worker running)."""
    system.reset()
    start = time.perf_counter()
    handles = system.enqueue_batch(n)
    seconds = time.perf_counter() - start
    system.reset()
    return None if handles is None else {"enqueue_per_s": round(n / seconds, 1)}
