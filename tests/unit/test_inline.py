"""The pieces of the inline worker mode that need no broker: node names and the soft limit."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from jobsys.base import errors
from jobsys.ops import bench
from jobsys.worker import deadline, supervisor


def test_node_names_number_the_processes() -> None:
    assert supervisor.node_names(None, 1) == ["celery@%h"]
    assert supervisor.node_names("worker1@%h", 2) == ["worker1-1@%h", "worker1-2@%h"]
    assert supervisor.node_names("bench", 2) == ["bench-1@%h", "bench-2@%h"]


def test_solo_argv_runs_the_inline_worker_module() -> None:
    assert supervisor.WORKER_MODULE == "workers.inline"
    argv = supervisor.solo_worker_argv("w-1@%h", "INFO", "a,b")
    assert argv == ["--hostname=w-1@%h", "--loglevel=INFO", "--queues=a,b"]


@pytest.mark.parametrize(
    ("url", "loaded"),
    [("sqlite:////tmp/runs.db", False), ("postgresql+psycopg://u@db/jobsys", True)],
)
def test_preload_imports_the_database_driver_of_the_run_store_only(url: str, loaded: bool) -> None:
    """The supervisor shares the PostgreSQL driver with its worker processes; a SQLite worker
    never loads it (a fresh interpreter: this one may have loaded it already)."""
    probe = (
        "import sys, workers.inline as w; w.preload(sys.argv[1]); "
        "print('psycopg' in sys.modules, 'sqlalchemy.dialects.postgresql' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, url], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [str(loaded), str(loaded)]


def test_soft_limit_raises_inside_the_body_only() -> None:
    start = time.monotonic()
    with pytest.raises(errors.JobTimeout, match=r"0\.2 s"), deadline.soft_limit(0.2):
        time.sleep(5)
    assert time.monotonic() - start < 1
    with deadline.soft_limit(0.05):
        pass
    time.sleep(0.1)  # the timer was cancelled: nothing fires after the body


def test_percentiles_pick_from_the_sorted_samples() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert bench.percentiles(samples) == {"p50": 51.0, "p90": 90.0, "p99": 99.0}
