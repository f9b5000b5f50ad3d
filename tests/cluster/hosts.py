"""Test harness: a jobsys cluster spread over network namespaces (``netns``).

A ``Site`` is made once per test session: a bridge, a private Redis on the bridge's address,
a fresh PostgreSQL database, and a forwarder to it on the bridge's address (the machine's
PostgreSQL listens on loopback only). ``Hosts`` is a test module's cluster on it: each worker
node and each beat runs in a namespace of its own (``jobsys worker`` / ``jobsys beat`` under
``ip netns exec``), with the module's timers, and writes its executions to its own ledger
file; the test process submits and reads records straight from Redis and PostgreSQL. Closing
a ``Hosts`` heals every partition, kills its processes, removes its namespaces, drops every
connection to the database (the forwarder starts again) and empties Redis.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import redis
import sqlalchemy as sa

from jobsys.base import config
from jobsys.service import client
from jobsys.store import runs
from tests.cluster import netns, services, watch
from tests.cluster.processes import ROOT
from tests.waiting import NotYet, eventually

CATALOG = "tests.cluster.jobs"
JOB = "cluster.ledger"
TIMERS = {
    "JOBSYS_LEASE_SECONDS": "3",
    "JOBSYS_HEARTBEAT_SECONDS": "0.5",
    "JOBSYS_REAPER_SECONDS": "1",
    "JOBSYS_RECONCILE_SECONDS": "3",
    "JOBSYS_CANCEL_GRACE_SECONDS": "1",
    "JOBSYS_HARD_TIMEOUT_GRACE_SECONDS": "1",
    "JOBSYS_SHUTDOWN_GRACE_SECONDS": "1",
    "JOBSYS_BEAT_INTERVAL": "0.2",
    "JOBSYS_STATS_CACHE_SECONDS": "0",
}
"""Short leases and periods, so that a scenario's recovery takes seconds (each may change
them)."""


class Site:
    """The session's bridge, Redis, PostgreSQL database and forwarder."""

    def __init__(self, folder: Path, admin_url: str, stack: contextlib.ExitStack) -> None:
        self.folder = folder
        self.bridge = netns.Bridge()
        stack.callback(self.bridge.close)
        self.database = services.Database(admin_url)
        stack.callback(self.database.drop)
        self.broker = services.BrokerServer(folder, self.bridge.address)
        stack.callback(self.broker.stop)
        self.broker.start()
        self.forwarder = services.Forwarder(folder, self.bridge.address, self.database.target)
        stack.callback(self.forwarder.stop)
        self.forwarder.start()

    @property
    def node_database_url(self) -> str:
        """The database as the hosts reach it: through the forwarder."""
        return self.database.url_through(self.bridge.address, self.forwarder.port)

    def reset(self) -> None:
        """Between scenarios: every database connection of the hosts dropped (a partitioned
        one may hold locks), Redis emptied (or started again, if a scenario left it down)."""
        self.forwarder.stop()
        self.forwarder.start()
        if self.broker.proc is None:
            self.broker.start()
        with redis.Redis.from_url(self.broker.url(0)) as r:
            r.flushall()


@contextlib.contextmanager
def site(folder: Path, admin_url: str) -> Iterator[Site]:
    """A ``Site``, taken down on the way out whatever happened (also when making it fails
    half-way: what was made is removed)."""
    with contextlib.ExitStack() as stack:
        yield Site(folder, admin_url, stack)


class Hosts:
    """A cluster on the site, shared by the scenarios of a test module (starting processes
    is what takes time); ``env``: settings of its processes (``TIMERS`` overridden).

    Each scenario runs between ``begin`` (processes that died are started again; a new
    ``Watcher``) and ``end`` (partitions healed, the broker and the database path up again;
    the scenario's outcomes handed over for its report)."""

    def __init__(self, site: Site, folder: Path, **env: str) -> None:
        self.site = site
        self.folder = folder
        self.ledgers = folder / "ledgers"
        self.ledgers.mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "JOBSYS_HOME": str(folder / "home"),
            "JOBSYS_BROKER_URL": site.broker.url(0),
            "JOBSYS_RESULT_URL": site.broker.url(1),
            "JOBSYS_DATABASE_URL": site.node_database_url,
            "JOBSYS_CATALOG": CATALOG,
            **TIMERS,
            **env,
        }
        here = {**self.env, "JOBSYS_DATABASE_URL": site.database.url}  # not through the forwarder
        self.client = client.Client(config.Settings.from_env(here))
        self.hosts: dict[str, netns.Host] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.roles: dict[str, tuple[list[str], str, int]] = {}
        """Name -> its ``jobsys`` arguments, the log line that says it is ready, how often."""
        self._log_from: dict[str, int] = {}
        self.outcomes: list[watch.Outcome] = []
        self.since = runs.utcnow()
        self.watcher = watch.Watcher(site.database.url, self.since)

    # --- scenarios ----------------------------------------------------------------------

    def begin(self) -> None:
        dead = [name for name, proc in self.processes.items() if proc.poll() is not None]
        for name in dead:
            self.spawn(name, *self.roles[name])
        for name in dead:
            self.wait_ready(name)
        self.watcher.stop()
        self.outcomes = []
        self.since = runs.utcnow()
        self.watcher = watch.Watcher(self.site.database.url, self.since)

    def end(self) -> list[watch.Outcome]:
        self.watcher.stop()
        for host in self.hosts.values():
            if host.partitioned:
                host.heal()
        if self.site.broker.proc is None:
            self.site.broker.start()
        if self.site.forwarder.proc is None:
            self.site.forwarder.start()
        return self.outcomes

    def close(self) -> None:
        """Every process killed, every namespace removed, the site reset."""
        self.end()
        for name in list(self.processes):
            self.kill(name)
        for name in list(self.hosts):
            self.site.bridge.remove(name)
        self.client.close()
        self.site.reset()

    # --- processes ----------------------------------------------------------------------

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def spawn(self, name: str, argv: list[str], ready: str, count: int) -> None:
        """``python -m jobsys ARGV`` in the namespace of ``name`` (made at its first use),
        ready once it has logged ``ready`` ``count`` times (``wait_ready``)."""
        if name not in self.hosts:
            self.hosts[name] = self.site.bridge.host(name)
        env = {
            **self.env,
            "JOBSYS_TEST_NODE": name,
            "JOBSYS_TEST_LEDGER": str(self.ledgers / f"{name}.ledger"),
            # libpq names the node's sessions in pg_stat_activity (``active_since``)
            "PGAPPNAME": f"jobsys-{name}",
        }
        self.roles[name] = (argv, ready, count)
        self._log_from[name] = len(self.log(name))
        with (self.folder / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                self.hosts[name].argv(sys.executable, "-m", "jobsys", *argv),
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, name: str, timeout: float = 120) -> None:
        _, text, count = self.roles[name]
        self.wait_for_log(name, text, count, timeout, since=self._log_from[name])

    def wait_for_log(
        self, name: str, text: str, count: int = 1, timeout: float = 90, since: int = 0
    ) -> None:
        """Until ``text`` is in the log of ``name`` (past its first ``since`` characters)
        ``count`` times; fails at once if the process exited."""
        proc = self.processes[name]

        def seen() -> bool | NotYet:
            log = self.log(name)[since:]
            if log.count(text) >= count:
                return True
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited {proc.returncode}:\n{log[-3000:]}")
            return NotYet("\n" + log[-2000:])

        eventually(seen, timeout, 0.1, what=f"{name} to log {text!r} {count} times")

    def running(self, name: str) -> bool:
        return name in self.processes and self.processes[name].poll() is None

    def start_workers(self, *names: str, concurrency: int = 1) -> None:
        """A worker node of ``concurrency`` processes in each namespace of ``names`` not
        running one already, all started at once; back when every process is ready."""
        new = [name for name in names if not self.running(name)]
        for name in new:
            argv = ["worker", "-c", str(concurrency), "-n", f"{name}@%h"]
            self.spawn(name, argv, "ready.", concurrency)
        for name in new:
            self.wait_ready(name)

    def start_beats(self, *names: str) -> None:
        new = [name for name in names if not self.running(name)]
        for name in new:
            self.spawn(name, ["beat"], "beat: Starting", 1)
        for name in new:
            self.wait_ready(name)

    def kill(self, name: str) -> None:
        """SIGKILL the whole process group of ``name`` (supervisor and worker processes)."""
        proc = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def partition(self, name: str) -> dt.datetime:
        self.hosts[name].partition()
        return runs.utcnow()

    def heal(self, name: str) -> dt.datetime:
        self.hosts[name].heal()
        return runs.utcnow()

    def active_since(self, name: str, since: dt.datetime) -> bool | NotYet:
        """Whether a database session of ``name`` has done something since ``since`` (a
        healed node is back once its stalled connections have given up or carried on)."""
        with self.client.store.engine.connect() as conn:
            last = conn.execute(
                sa.text(
                    "SELECT max(state_change) FROM pg_stat_activity WHERE application_name = :a"
                ),
                {"a": f"jobsys-{name}"},
            ).scalar()
        return True if last is not None and last > since else NotYet(f"last active {last}")

    # --- runs and ledgers ---------------------------------------------------------------

    def submit(self, count: int, seconds: float) -> list[str]:
        return [self.client.submit(JOB, {"seconds": seconds}) for _ in range(count)]

    def ledger(self) -> list[watch.Entry]:
        return watch.read_ledgers(self.ledgers)

    def started(self, run_ids: list[str], node: str | None = None) -> set[str]:
        """The runs of ``run_ids`` whose body has started (on ``node``, if given)."""
        wanted = set(run_ids)
        return {
            e.run_id
            for e in self.ledger()
            if e.event == "start" and e.run_id in wanted and node in (None, e.node)
        }

    def wait_started(
        self, run_ids: list[str], node: str | None = None, timeout: float = 60
    ) -> None:
        def all_started() -> bool | NotYet:
            n = len(self.started(run_ids, node))
            return n == len(run_ids) or NotYet(f"{n} of {len(run_ids)} started")

        eventually(all_started, timeout, 0.05, what=f"{len(run_ids)} runs to start on {node}")

    def finish(self, run_ids: list[str], timeout: float) -> tuple[list[runs.RunRecord], list[str]]:
        """Wait (up to ``timeout`` s) for every run to finish; the records, and the runs that
        did not (stuck)."""

        def finished() -> bool | NotYet:
            left = [i for i in run_ids if not self.client.store.get(i).terminal]
            return not left or NotYet(f"{len(left)} of {len(run_ids)} unfinished: {left[:5]}")

        with contextlib.suppress(AssertionError):
            eventually(finished, timeout, 0.2, what="the runs to finish")
        records = [self.client.store.get(i) for i in run_ids]
        return records, [r.id for r in records if not r.terminal]

    def outcome(
        self, scenario: str, run_ids: list[str], fault_cleared: dt.datetime | None, timeout: float
    ) -> watch.Outcome:
        """Wait for the runs, then the scenario's figures (reported after the test: printed,
        written to its folder and shown in the session's summary)."""
        records, stuck = self.finish(run_ids, timeout)
        self.watcher.stop()
        wanted = set(run_ids)
        ledger = [e for e in self.ledger() if e.run_id in wanted]
        result = watch.outcome(scenario, records, stuck, self.watcher, ledger, fault_cleared)
        self.outcomes.append(result)
        return result
