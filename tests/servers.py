"""Test harness: ``jobsys serve`` (the HTTP API, the dashboard and ``/mcp``) in a subprocess on a
free port, with a ``Cluster``'s settings.

``with Serve(cluster) as s:`` starts it, waits until ``/api/v1/health`` answers (failing with
the tail of its log if it exits or stays silent), and stops its whole process group on the way
out. Extra keyword arguments are environment variables for it alone (``JOBSYS_BROKER_URL=...``
to serve against a broker that is down, say).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from types import TracebackType

import httpx

from jobsys.base.embedded import free_port
from tests.cluster import ROOT, Cluster
from tests.waiting import NotYet, eventually

__all__ = ["Serve", "free_port"]


class Serve:
    """``python -m jobsys serve`` on a free port with the cluster's settings (and ``env``), its
    output in ``serve-<port>.log`` of the cluster's folder."""

    def __init__(self, cluster: Cluster, **env: str) -> None:
        self.cluster = cluster
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = cluster.tmp / f"serve-{self.port}.log"
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobsys", "serve", "--port", str(self.port)],
                env={**cluster.env, **env},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def __enter__(self) -> Serve:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def wait_ready(self, timeout: float = 60) -> None:
        """Until ``/api/v1/health`` answers 200."""

        def answers() -> bool | NotYet:
            if self.proc.poll() is not None:
                raise AssertionError(f"jobsys serve exited {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200:
                    return True
            return NotYet("\n" + self.tail())

        eventually(answers, timeout, what="jobsys serve to answer /api/v1/health")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to its process group, SIGKILL if it is still there after ``timeout`` s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
