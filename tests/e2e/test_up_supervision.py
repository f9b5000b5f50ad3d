"""``jobsys up`` keeps its processes running (a killed child is started again, and no run is
lost), and Ctrl-C stops them in order within the shutdown grace, leaving no run running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from jobsys.base import config
from jobsys.declare import catalog
from jobsys.service import client
from jobsys.store import runs, stores
from tests.cluster import ROOT, Database, with_db
from tests.servers import free_port
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.interface]

GRACE = 6.0


class Up:
    """``jobsys up`` in its own session, as a terminal runs it: Ctrl-C is SIGINT to the
    whole foreground process group (``interrupt``)."""

    def __init__(self, tmp: Path, database_url: str | None, *args: str) -> None:
        self.home, self.args = tmp / ".jobsys", args
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
        self.env.update(
            JOBSYS_HOME=str(self.home),
            PYTHONPATH=str(ROOT),
            JOBSYS_SHUTDOWN_GRACE_SECONDS=str(GRACE),
            JOBSYS_HTTP_PORT=str(free_port()),
        )
        self.db = Database(tmp, database_url) if database_url else None
        if self.db is not None:
            self.env["JOBSYS_DATABASE_URL"] = self.db.url
        if os.environ.get("JOBSYS_TEST_BROKER_URL"):
            self.env["JOBSYS_BROKER_URL"] = with_db(os.environ["JOBSYS_TEST_BROKER_URL"], 12)
            self.env["JOBSYS_RESULT_URL"] = with_db(os.environ["JOBSYS_TEST_BROKER_URL"], 13)
        self.store = stores.Store.open(
            self.db.url if self.db else f"sqlite:///{self.home / 'jobsys.db'}"
        )
        self.log = tmp / "up.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: client.Client | None = None

    def start(self, workers_ready: int) -> None:
        """Start ``up``; wait until ``workers_ready`` worker processes said they are ready
        (counted in worker1.log, which a second start appends to)."""
        worker_log = self.home / "logs" / "worker1.log"
        before = self.ready_count(worker_log)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobsys", "up", *self.args],
                env=self.env,
                cwd=self.home.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        eventually(
            lambda: self.ready_count(worker_log) >= before + workers_ready or self.ended(),
            60,
            what="the workers",
        )
        assert not self.ended(), self.output()

    @staticmethod
    def ready_count(path: Path) -> int:
        return path.read_text(errors="replace").count(" ready.") if path.exists() else 0

    def ended(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def services(self) -> dict[str, Any]:
        return dict(json.loads((self.home / "services.json").read_text()))

    def jobsys(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "jobsys", *args],
            env=self.env,
            cwd=self.home.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result

    def submit(self, job: str, data: dict[str, Any]) -> str:
        """Submit through a client in this process (milliseconds, where a ``jobsys submit``
        process takes a second or more on a loaded machine: runs meant to be in flight
        together start together)."""
        return self._connected().submit(job, data)

    def _connected(self) -> client.Client:
        if self._client is None:
            settings = config.Settings.from_env(self.env)
            self._client = client.Client(settings, catalog.load_registry(settings.catalog))
        return self._client

    def cancel(self, run_id: str) -> None:
        self._connected().cancel(run_id)

    def state(self, run_id: str) -> runs.RunState:
        return self.store.get(run_id).state

    def interrupt(self) -> None:
        """Ctrl-C in the terminal: SIGINT to every process of the foreground group."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGINT)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.store.close()
        if self.db is not None:
            self.db.drop()


@pytest.fixture
def make_up(tmp_path: Path, database_url: str | None) -> Iterator[Callable[..., Up]]:
    made: list[Up] = []

    def make(*args: str) -> Up:
        made.append(Up(tmp_path, database_url, *args))
        return made[-1]

    yield make
    for up in made:
        up.close()


def killed_and_restarted(up: Up, pid: int, key: str) -> float:
    """SIGKILL ``pid`` (a child of ``up``); the seconds until ``up`` started it again (its
    new pid recorded in services.json under ``key``)."""
    start = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    def new_pid() -> bool:
        try:
            value = up.services()[key]
        except (OSError, ValueError):
            return False  # (being rewritten)
        return pid not in (value if isinstance(value, list) else [value])

    eventually(lambda: new_pid() or up.ended(), 60, what=f"a new process in place of {pid}")
    assert not up.ended(), up.output()
    elapsed = time.monotonic() - start
    print(f"\n{key} {pid} killed: started again in {elapsed:.2f} s")
    return elapsed


def test_a_killed_worker_supervisor_is_started_again_and_its_run_is_not_lost(
    make_up: Callable[..., Up],
) -> None:
    up = make_up("-c", "1")
    up.start(workers_ready=1)
    in_flight = up.submit("examples.sleep", {"seconds": 2 * GRACE})
    eventually(lambda: up.state(in_flight) is runs.RunState.RUNNING, 30, what="the run to start")
    supervisor = up.services()["children"][0]
    started = time.monotonic()
    killed_and_restarted(up, supervisor, "children")
    # Its worker process (orphaned) hands the run back at the end of the grace; the new
    # worker runs it to the end. Not the reaper: that would wait for the lease (30 s).
    eventually(
        lambda: up.state(in_flight) is runs.RunState.COMPLETED, 60, what="the run to complete"
    )
    print(f"run in flight completed {time.monotonic() - started:.2f} s after the kill")
    record = up.store.get(in_flight)
    assert record.lost == 0 and record.dispatch == 2  # handed back once, not reaped
    added = up.jobsys("submit", "examples.add", "--input", '{"a": 2, "b": 3}', "--wait")
    assert added.stdout.strip() == "5"
    assert "worker1" in up.output() and "exited with -9" in up.output()
    assert not up.ended()


def test_a_killed_redis_comes_back_with_its_messages_on_the_same_port(
    make_up: Callable[..., Up],
) -> None:
    up = make_up("-c", "1")
    up.start(workers_ready=1)
    before = up.services()
    if before["redis_pid"] is None:
        pytest.skip(reason="an external broker (JOBSYS_TEST_BROKER_URL): no embedded Redis to kill")
    busy = up.submit("examples.sleep", {"seconds": 10})
    eventually(lambda: up.state(busy) is runs.RunState.RUNNING, 30, what="the first run to start")
    queued = up.submit("examples.add", {"a": 1, "b": 2})  # its message waits in Redis
    # (the one worker process is busy: the message is in Redis when it is killed)
    assert (up.state(busy), up.state(queued)) == (runs.RunState.RUNNING, runs.RunState.PENDING)
    started = time.monotonic()
    killed_and_restarted(up, before["redis_pid"], "redis_pid")
    assert up.services()["broker_url"] == before["broker_url"]  # same port and password
    # The queued run's message came back from the append-only file: it runs now, not
    # when the reconciler publishes it again (JOBSYS_RECONCILE_SECONDS, 300 s).
    for run_id in (busy, queued):
        eventually(
            lambda run_id=run_id: up.state(run_id) is runs.RunState.COMPLETED,
            60,
            what=f"run {run_id} to complete",
        )
    print(f"both runs completed {time.monotonic() - started:.2f} s after the kill")
    assert up.store.get(queued).dispatch == 1
    added = up.jobsys("submit", "examples.add", "--input", '{"a": 2, "b": 3}', "--wait")
    assert added.stdout.strip() == "5"


def test_killed_beat_and_http_server_are_started_again(make_up: Callable[..., Up]) -> None:
    up = make_up("-c", "1")
    up.start(workers_ready=1)
    services = up.services()
    _, beat, http = services["children"]
    killed_and_restarted(up, beat, "children")
    killed_and_restarted(up, http, "children")
    beat_now = up.services()["children"][1]
    assert beat_now != beat and psutil.pid_exists(beat_now)
    url = services["http"] + "/api/v1/health"
    eventually(lambda: _answers(url), 30, what="the HTTP server on the same port")
    added = up.jobsys("submit", "examples.add", "--input", '{"a": 2, "b": 3}', "--wait")
    assert added.stdout.strip() == "5"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_ctrl_c_with_five_runs_in_flight_finishes_or_hands_back_within_the_grace(
    make_up: Callable[..., Up],
) -> None:
    up = make_up("-c", "5")
    up.start(workers_ready=5)
    long = [up.submit("examples.sleep", {"seconds": 600}) for _ in range(3)]
    short = [up.submit("examples.sleep", {"seconds": GRACE - 1}) for _ in range(2)]
    eventually(
        lambda: all(up.state(r) is runs.RunState.RUNNING for r in long + short),
        30,
        what="the five runs to start",
    )
    started = time.monotonic()
    up.interrupt()
    assert up.proc is not None
    up.proc.wait(60)
    took = time.monotonic() - started
    print(f"\nCtrl-C with 5 runs in flight: exited in {took:.2f} s (grace {GRACE:g} s)")
    output = up.output()
    assert f"waiting up to {GRACE:g} s for 5 runs:" in output, output
    assert took < GRACE + 5, output
    for run_id in short:  # they ended within the grace
        assert up.state(run_id) is runs.RunState.COMPLETED, run_id
    for run_id in long:  # handed back: pending, with a new message, an attempt given back
        record = up.store.get(run_id)
        assert record.state is runs.RunState.PENDING, run_id
        assert (record.dispatch, record.attempts, record.max_attempts) == (2, 1, 3 + 1)
        assert f"{run_id} (examples.sleep): handed back (pending)" in output
        logs = [line.message for line in up.store.logs(run_id)]
        assert any(m.startswith("handed back") for m in logs), logs
    # Redis stopped last: no worker lost its broker while handing runs back.
    worker_log = (up.home / "logs" / "worker1.log").read_text(errors="replace")
    assert "Connection refused" not in worker_log and "Error 111" not in worker_log
    # The handed-back runs are delivered again by the next start (their messages waited in
    # Redis; not the reconciler's republishing, which waits 300 s).
    up.start(workers_ready=5)
    eventually(
        lambda: all(up.state(r) is runs.RunState.RUNNING for r in long),
        60,
        what="the handed-back runs to run again",
    )
    for run_id in long:  # not left running: cancelled in this process (no CLI under test here)
        up.cancel(run_id)


def test_ctrl_c_hands_back_a_run_whose_worker_process_was_killed(
    make_up: Callable[..., Up],
) -> None:
    """A worker process killed in the middle of a run leaves it running (until its lease
    expires); Ctrl-C does not leave it so: ``up`` hands it back, and publishes it again."""
    up = make_up("-c", "1")
    up.start(workers_ready=1)
    run_id = up.submit("examples.sleep", {"seconds": 600})
    eventually(lambda: up.state(run_id) is runs.RunState.RUNNING, 30, what="the run to start")
    worker_pid = up.store.get(run_id).worker_pid
    assert worker_pid is not None
    os.kill(worker_pid, signal.SIGKILL)
    eventually(lambda: not psutil.pid_exists(worker_pid), 10, what="the worker process to end")
    assert up.state(run_id) is runs.RunState.RUNNING  # its lease runs for 30 s
    up.interrupt()
    assert up.proc is not None
    up.proc.wait(60)
    record = up.store.get(run_id)
    assert record.state is runs.RunState.PENDING, up.output()
    assert record.dispatch == 2
    assert f"{run_id} (examples.sleep): handed back (pending)" in up.output()
    up.start(workers_ready=1)  # its new message waited in Redis
    eventually(lambda: up.state(run_id) is runs.RunState.RUNNING, 60, what="the run to run again")
