"""The processes of ``jobsys up``: started, kept running, and stopped in order.

``jobsys up`` runs the embedded Redis (unless a broker is given), one worker supervisor per
``--workers``, beat and the HTTP server. A child that ends while ``up`` runs (a crash, a
kill) is started again, after a backoff when it keeps failing, as the worker supervisor does
for its own processes; Redis comes back on the same port with the same password and its
append-only file, so the others reconnect to the same data. Only Ctrl-C or SIGTERM stops
``up``, and then in this order:

1. the workers stop taking work; their running jobs have the shutdown grace to finish, and
   those still running then are handed back (pending again, their message published again);
2. a run still marked running by one of this machine's worker processes that has exited (one
   that was killed) is handed back too: no run is left running by a process that is gone;
3. beat, then the HTTP server;
4. Redis, last: the hand-backs above publish to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jobsys.base import config, embedded, running
from jobsys.declare import catalog
from jobsys.store import definition_store, runs, stores
from jobsys.worker import supervisor

WORKER_HAND_BACK_SECONDS = supervisor.HAND_BACK_SECONDS + 5.0
"""After the grace, how long the worker supervisors have to hand runs back and exit before
``up`` kills what is left of them (their own limit is ``HAND_BACK_SECONDS``)."""
STOP_SECONDS = 10.0
"""How long beat and the HTTP server have to stop before they are killed."""


@dataclasses.dataclass
class Child:
    """One role of ``up``, as a process group of its own (its processes included)."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    proc: subprocess.Popen[bytes] | None = None
    failures: list[float] = dataclasses.field(default_factory=list)
    restart_at: float | None = None

    @property
    def worker(self) -> bool:
        return self.name.startswith("worker")


class Stack:
    def __init__(
        self,
        settings: config.Settings,
        env: dict[str, str],
        redis: embedded.RedisServer | None,
        n_workers: int,
        concurrency: int,
        serve: Sequence[str] | None,
        say: Callable[[str], None],
    ) -> None:
        self.settings, self.env, self.redis, self.say = settings, env, redis, say
        logs = settings.home / "logs"
        self.nodes: list[str] = []
        self.children: list[Child] = []
        if redis is not None:
            self.children.append(Child("redis", self._start_redis, redis.process))
        for i in range(1, n_workers + 1):
            argv = ["worker", "-c", str(concurrency), "-n", f"worker{i}@%h"]
            self.children.append(Child(f"worker{i}", self._spawner(argv, logs / f"worker{i}.log")))
            self.nodes += supervisor.node_names(f"worker{i}@{_host()}", concurrency)
        self.children.append(Child("beat", self._spawner(["beat"], logs / "beat.log")))
        if serve is not None:
            self.children.append(Child("http", self._spawner(serve, logs / "http.log")))
        self.on_change: Callable[[], None] = lambda: None
        """Called after a child was started again (its pid changed)."""
        self.stopping = 0
        """How many stop signals came: 1 stops in order, 2 stops now."""
        self._orphans: list[tuple[int, float]] = []
        """Process groups of worker supervisors that died: their worker processes are
        handing their runs back; killed at the time given."""

    def _spawner(self, argv: Sequence[str], log: Path) -> Callable[[], subprocess.Popen[bytes]]:
        return lambda: embedded.spawn(argv, self.env, log)

    def _start_redis(self) -> subprocess.Popen[bytes]:
        assert self.redis is not None
        self.redis.restart()
        assert self.redis.process is not None
        return self.redis.process

    # --- running ---------------------------------------------------------------------------

    def start(self) -> None:
        for child in self.children:
            if child.proc is None:
                child.proc = child.start()

    def pids(self) -> list[int]:
        """The pids of the children (Redis's is ``redis_pid``)."""
        return [c.proc.pid for c in self.children if c.proc and c.name != "redis"]

    @property
    def redis_pid(self) -> int | None:
        return self.redis.process.pid if self.redis and self.redis.process else None

    def run(self) -> None:
        """Keep every child running until SIGINT or SIGTERM."""

        def on_signal(signum: int, frame: Any) -> None:
            self.stopping += 1

        # Set both explicitly: a shell may start a background `jobsys up` with SIGINT ignored.
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not self.stopping:
            self.tend()
            time.sleep(0.2)

    def tend(self) -> None:
        """Start again the children that ended, once their backoff is over."""
        for child in self.children:
            now = time.monotonic()
            if child.proc is not None and child.restart_at is None:
                code = child.proc.poll()
                if code is None:
                    continue
                child.restart_at = now + self._ended(child, code, now)
            if child.restart_at is not None and now >= child.restart_at:
                try:
                    child.proc = child.start()
                except Exception as exc:  # (Redis that does not come back): try again later
                    self.say(f"jobsys up: {child.name} did not start again: {exc}")
                    child.restart_at = now + self._backoff(child, now)
                    continue
                child.restart_at = None
                self.say(f"jobsys up: {child.name} started again (pid {child.proc.pid})")
                self.on_change()
        for pgid, kill_at in list(self._orphans):
            if time.monotonic() >= kill_at or not _group_alive(pgid):
                _kill_group(pgid)
                self._orphans.remove((pgid, kill_at))

    def _ended(self, child: Child, code: int, now: float) -> float:
        assert child.proc is not None
        pid = child.proc.pid
        if child.worker:
            # Its worker processes got SIGTERM when it died: they finish or hand back their
            # runs within the grace, and exit. Kill what is left of them after that.
            grace = self.settings.shutdown_grace_seconds + WORKER_HAND_BACK_SECONDS
            self._orphans.append((pid, now + grace))
        else:
            _kill_group(pid)
        delay = self._backoff(child, now)
        self.say(
            f"jobsys up: {child.name} (pid {pid}) exited with {code}; "
            f"starting it again in {delay:g} s (see {self.settings.home / 'logs'})"
        )
        return delay

    @staticmethod
    def _backoff(child: Child, now: float) -> float:
        child.failures = [t for t in child.failures if now - t < 60] + [now]
        backoff = supervisor.RESTART_BACKOFF
        return backoff[min(len(child.failures) - 1, len(backoff) - 1)]

    # --- stopping --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop in order: workers (grace, hand-backs), beat, HTTP server, Redis last."""
        held = self._stop_workers()
        self._hand_back_lost(held)
        for name in ("beat", "http"):
            for child in self.children:
                if child.name == name:
                    _stop(child, STOP_SECONDS if self.stopping < 2 else 0)
        if self.redis is not None:
            self.redis.stop()

    def _stop_workers(self) -> list[runs.RunRecord]:
        """SIGTERM the worker supervisors (and the processes of dead ones); wait for them
        to finish or hand back their runs; return the runs they were executing."""
        workers = [c for c in self.children if c.worker and c.proc is not None]
        for child in workers:
            _signal(child, signal.SIGTERM)
        for pgid, _ in self._orphans:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        held = self._held()
        grace = self.settings.shutdown_grace_seconds
        if held:
            names = ", ".join(f"{r.id} ({r.job})" for r in held)
            self.say(f"waiting up to {grace:g} s for {_count(len(held), 'run')}: {names}")
        deadline = time.monotonic() + grace + WORKER_HAND_BACK_SECONDS
        groups = [c.proc.pid for c in workers if c.proc] + [g for g, _ in self._orphans]
        while self.stopping < 2 and time.monotonic() < deadline:
            for child in workers:  # reap: a zombie still counts as a member of its group
                if child.proc is not None:
                    child.proc.poll()
            if not any(_group_alive(g) for g in groups):
                break
            time.sleep(0.1)
        for g in groups:
            _kill_group(g)
        for child in workers:
            _reap(child)
        return held

    def _held(self) -> list[runs.RunRecord]:
        try:
            with _store(self.settings) as store:
                return store.running_on(self.nodes)
        except Exception as exc:
            self.say(f"jobsys up: could not list the running runs: {exc}")
            return []

    def _hand_back_lost(self, held: list[runs.RunRecord]) -> None:
        """Hand back the runs still marked running by this machine's worker processes (all
        have exited now), and say what became of the runs waited for."""
        try:
            with _store(self.settings) as store:
                back = []
                for r in store.running_on(self.nodes):
                    if r.worker_pid is not None and running.alive(r.worker_pid):
                        continue
                    why = "handed back: its worker was stopped before it ended; it runs again"
                    record = store.hand_back(r.id, r.attempts, why)
                    if record is not None and record.state is runs.RunState.PENDING:
                        back.append(record)
                if back:
                    _republish(self.settings, store, back)
                for r in held:
                    state = store.get(r.id).state
                    said = "handed back (pending)" if state is runs.RunState.PENDING else state
                    self.say(f"  {r.id} ({r.job}): {said}")
        except Exception as exc:
            self.say(f"jobsys up: could not hand back the runs of the stopped workers: {exc}")


@contextlib.contextmanager
def _store(settings: config.Settings) -> Any:
    store = stores.Store.open(settings.database_url)
    try:
        yield store
    finally:
        store.close()


def _republish(settings: config.Settings, store: runs.RunStore, records: list[Any]) -> None:
    from jobsys.engine import broker  # on first use: it loads Celery

    registry = catalog.load_registry(settings.catalog)
    registry.attach(definition_store.source(settings, store.engine))
    app = broker.make_celery(settings, registry)
    try:
        broker.republish(app, registry, records)  # at the front: they had their turn
    finally:
        app.close()


def _host() -> str:
    from jobsys.engine import celery_api  # on first use: it loads Celery

    return celery_api.host_format("%h")


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _group_alive(pgid: int) -> bool:
    return running.alive(pgid, os.killpg)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _signal(child: Child, signum: int) -> None:
    if child.proc is not None and child.proc.poll() is None:
        child.proc.send_signal(signum)


def _reap(child: Child) -> None:
    if child.proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(1)


def _stop(child: Child, timeout: float) -> None:
    """SIGTERM, then kill the child's process group after ``timeout``."""
    if child.proc is None:
        return
    _signal(child, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.proc.wait(timeout)
    _kill_group(child.proc.pid)
    _reap(child)
