"""The inline worker mode: N worker processes, each consuming and executing in one process.

Celery's prefork pool routes every message through its main process to a child, and that
main process saturates a core long before the children do. Here every process is a complete
Celery worker on the solo pool (consume, execute, acknowledge in one place), and this small
supervisor keeps N of them running: it starts a new one whenever one ends (a crash, or a job's
hard time limit), forwards stop signals, and never executes jobs itself.

The supervisor imports the libraries a worker process needs (Celery, kombu, SQLAlchemy,
pydantic, jobsys's engine: ``workers.inline.preload``) once, then forks each worker process
from itself: a process starts in a fraction of the CPU time a new interpreter would take, and
the library code is shared between them. It opens no connection, starts no thread and reads no
job module before forking: each worker process makes its own connections and imports the
catalog itself (so a restarted one runs the code on disk now).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from jobsys.base import config, embedded

log = logging.getLogger("jobsys.supervisor")

RESTART_BACKOFF = (0.0, 0.5, 1.0, 2.0, 5.0)
"""Seconds to wait before restarting a process that keeps failing within a minute."""
HAND_BACK_SECONDS = 10.0
"""After the shutdown grace, how long a worker process has to hand its run back and exit
before it is killed."""


def node_names(base: str | None, count: int) -> list[str]:
    """``worker1@%h`` and 2 processes -> ``worker1-1@%h``, ``worker1-2@%h``."""
    name, _, host = (base or "celery@%h").partition("@")
    host = host or "%h"
    if count == 1:
        return [f"{name}@{host}"]
    return [f"{name}-{i}@{host}" for i in range(1, count + 1)]


class BecomeWorker(BaseException):
    """Raised in a forked child: unwinds the supervisor's frames, so that the worker runs
    from ``main`` with nothing of the supervisor's loop beneath it."""

    def __init__(self, argv: Sequence[str]) -> None:
        super().__init__()
        self.argv = list(argv)


class Child:
    """A forked worker process, with the parts of ``subprocess.Popen`` the supervisor uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.02)
        return code


class Supervisor:
    def __init__(
        self,
        argv_for: Callable[[str], Sequence[str]],
        names: Sequence[str],
        stop_timeout: float = 60.0,
    ) -> None:
        self.argv_for, self.names, self.stop_timeout = argv_for, list(names), stop_timeout
        self.children: dict[str, Child] = {}
        self.failures: dict[str, list[float]] = {name: [] for name in names}
        self.stopping: int | None = None

    def start(self, name: str) -> None:
        """Fork the worker process ``name``; in the child, raise ``BecomeWorker``."""
        argv = self.argv_for(name)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_DFL)
            embedded.die_with_parent()
            embedded.name_process(f"jobsys {name.partition('@')[0]}")  # in ps and top
            raise BecomeWorker(argv)
        self.children[name] = Child(pid)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self._on_signal)
        for name in self.names:
            self.start(name)
        while self.stopping is None:
            self._restart_ended()
            time.sleep(0.2)
        return self._stop(self.stopping)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stopping is None:
            self.stopping = signum
        else:  # a second signal: stop now
            self.stopping = signal.SIGQUIT
            self._send(signal.SIGQUIT)

    def _restart_ended(self) -> None:
        now = time.monotonic()
        for name, proc in list(self.children.items()):
            code = proc.poll()
            if code is None:
                continue
            recent = [t for t in self.failures[name] if now - t < 60] + [now]
            self.failures[name] = recent
            delay = RESTART_BACKOFF[min(len(recent) - 1, len(RESTART_BACKOFF) - 1)]
            print(
                f"jobsys supervisor: {name} exited with {code}; restarting in {delay:g} s",
                file=sys.stderr,
                flush=True,
            )
            deadline = time.monotonic() + delay
            while self.stopping is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.stopping is None:
                self.start(name)

    def _send(self, signum: int) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def _stop(self, signum: int) -> int:
        # SIGTERM/SIGINT: warm shutdown (finish the current job); SIGQUIT: cold.
        self._send(signal.SIGQUIT if signum == signal.SIGQUIT else signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for proc in self.children.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return 0


WORKER_MODULE = "workers.inline"
"""The module of one inline worker process (a Celery worker on the solo pool): its ``main``
runs it, its ``preload`` imports the libraries it needs."""


def solo_worker_argv(name: str, loglevel: str, queues: str | None) -> list[str]:
    """The arguments of one inline worker process's ``main`` (``workers/inline.py``)."""
    argv = [f"--hostname={name}", f"--loglevel={loglevel}"]
    return argv + ([f"--queues={queues}"] if queues else [])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobsys worker", description=__doc__)
    parser.add_argument("--concurrency", "-c", type=int, default=2)
    parser.add_argument("--hostname", "-n", default=None)
    parser.add_argument("--loglevel", "-l", default="INFO")
    parser.add_argument("--queues", "-Q", default=None)
    args = parser.parse_args(argv)
    names = node_names(args.hostname, args.concurrency)
    settings = config.Settings.from_env()
    worker = importlib.import_module(WORKER_MODULE)
    worker.preload(settings.database_url)
    # What is loaded now is shared with the worker processes until one writes to it; the
    # collector's passes write to every object they visit, so without this each worker
    # process soon held its own copy of most of these pages (PSS of a 2-process worker on
    # PostgreSQL: 155 MiB without, 132 MiB with; with its driver preloaded too, 124 MiB).
    gc.collect()
    gc.freeze()
    try:
        return Supervisor(
            lambda name: solo_worker_argv(name, args.loglevel, args.queues),
            names,
            stop_timeout=settings.shutdown_grace_seconds + HAND_BACK_SECONDS,
        ).run()
    except BecomeWorker as child:  # in a forked child: the supervisor's frames are gone
        code: int = worker.main(child.argv)
        return code


def exec_supervisor(
    concurrency: int, hostname: str | None, loglevel: str, queues: str | None
) -> None:
    """Replace this process (same pid, so signals reach it) with a light supervisor."""
    argv = [
        sys.executable,
        "-m",
        "jobsys.worker.supervisor",
        "-c",
        str(concurrency),
        "-l",
        loglevel,
    ]
    argv += (["-n", hostname] if hostname else []) + (["-Q", queues] if queues else [])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    sys.exit(main())
