"""Flower over a jobsys cluster: `jobsys flower` (a real process) against the test broker, with
a real worker; finished runs are read back through Flower's HTTP API by their job names.

What is checked: the run shows as a task named after its job, its id the run id, in the state
its record has; nothing of a secret input reaches Flower (messages carry only the run id);
every page and API route asks for the basic-auth credentials; Flower's control actions are
off; without JOBSYS_FLOWER_BASIC_AUTH a password is made up and printed, never none; and the
workers stop sending task events when Flower stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobsys import RunState
from jobsys.base import config, embedded, errors
from jobsys.cli import flower as cli_flower
from tests.cluster import ROOT, Cluster, cluster
from tests.waiting import NotYet, eventually

pytestmark = [pytest.mark.integration, pytest.mark.interface]

USER, PASSWORD = "watcher", f"pw-{uuid.uuid4().hex}"


class Flower:
    """A `python -m jobsys flower` process on a free port, with its output in a log file."""

    def __init__(
        self, c: Cluster, name: str, auth: str | None, prefix: str = "", **extra: str
    ) -> None:
        self.port = embedded.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.prefix = prefix
        self.log_path = c.tmp / f"{name}.log"
        env = {k: v for k, v in c.env.items() if k != cli_flower.AUTH_ENV} | extra
        if auth is not None:
            env[cli_flower.AUTH_ENV] = auth
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jobsys", "flower", "--port", str(self.port)],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.http = httpx.Client(base_url=self.base, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        """Until it answers (its health check needs no credentials)."""

        def answers() -> bool | NotYet:
            if self.process.poll() is not None:
                raise AssertionError(f"flower exited {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if self.http.get(f"{self.prefix}/healthcheck").status_code == 200:
                    return True
            return NotYet("\n" + self.log()[-3000:])

        eventually(answers, timeout, 0.2, what="flower to answer its health check")

    def get(
        self, path: str, auth: tuple[str, str] | None = (USER, PASSWORD), **params: str
    ) -> httpx.Response:
        return self.http.get(path, auth=auth, params=params)

    def stop(self) -> int:
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def wait_tasks(flower: Flower, job: str, wanted: dict[str, str], timeout: float = 30) -> Any:
    """Poll Flower's task list filtered by job name until every run id in ``wanted`` is
    there in its wanted state; return the list (a JSON object keyed by task id)."""

    def shown() -> dict[str, Any] | NotYet:
        response = flower.get("/api/tasks", auth=(USER, PASSWORD)).raise_for_status()
        seen = {k: v for k, v in response.json().items() if v.get("name") == job}
        if all(seen.get(i, {}).get("state") == s for i, s in wanted.items()):
            return seen
        return NotYet(seen)

    return eventually(shown, timeout, 0.2, what=f"Flower to show {wanted} as {job} runs")


def wait_task(flower: Flower, run_id: str, state: str, timeout: float = 30) -> Any:
    """Poll Flower's view of one task until it is in ``state``; return it."""

    def shown() -> Any:
        response = flower.get(f"/api/task/info/{run_id}")
        if response.status_code == 200 and response.json().get("state") == state:
            return response.json()
        return NotYet(response.text)

    return eventually(shown, timeout, 0.2, what=f"Flower to show {run_id} as {state}")


def _until_flower_receives(c: Cluster, flower: Flower, timeout: float = 60) -> None:
    """Events sent before Flower's event queue is bound are lost (a fanout exchange keeps
    nothing): run warm-up jobs until Flower shows one."""

    def warm_up_shown() -> bool | NotYet:
        run_id = c.client.submit("examples.add", {"a": 0, "b": 0})
        c.wait_all([run_id], timeout=30)
        try:
            wait_tasks(flower, "examples.add", {run_id: "SUCCESS"}, timeout=5)
        except AssertionError as exc:
            return NotYet(str(exc))
        return True

    eventually(warm_up_shown, timeout, 0, what="Flower to receive the workers' events")


@pytest.fixture(scope="module")
def watched(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[tuple[Cluster, Flower]]:
    """A cluster with one worker, and Flower watching it (task events switched on)."""
    with cluster(tmp_path_factory.mktemp("flower"), redis_url, database_url) as c:
        c.start_worker("w1", concurrency=1)
        flower = Flower(c, "flower", auth=f"{USER}:{PASSWORD}")
        try:
            flower.wait_ready()
            # Flower asked the worker for task events; it logs when it complies.
            c.wait_for_log("w1", "Events of group {task} enabled by remote", timeout=30)
            _until_flower_receives(c, flower)
            yield c, flower
        finally:
            flower.stop()


def test_a_finished_run_shows_by_its_job_name(watched: tuple[Cluster, Flower]) -> None:
    c, flower = watched
    run_id = c.client.submit("examples.add", {"a": 2, "b": 3})
    record = c.wait_all([run_id], timeout=60)[0]
    assert record.state is RunState.COMPLETED and record.output == 5

    tasks = wait_tasks(flower, "examples.add", {run_id: "SUCCESS"})
    task = tasks[run_id]
    assert task["name"] == record.job == "examples.add"
    assert task["uuid"] == run_id
    assert task["worker"] == record.worker
    assert task["result"] == "5"
    # The message's arguments: the run id only.
    assert task["args"] == "()" and task["kwargs"] == f"{{'run_id': '{run_id}'}}"

    assert run_id in flower.get("/api/tasks", taskname="examples.add").json()
    assert run_id not in flower.get("/api/tasks", taskname="tests.uses_secret").json()

    info = flower.get(f"/api/task/info/{run_id}")
    assert info.status_code == 200, info.text
    assert info.json()["name"] == "examples.add" and info.json()["state"] == "SUCCESS"
    assert info.json()["uuid"] == run_id


def test_a_runtime_registered_job_is_found_by_its_name(watched: tuple[Cluster, Flower]) -> None:
    c, flower = watched
    c.client.definitions.register(
        {"name": "flower.add10", "kind": "alias", "target": "examples.add", "defaults": {"b": 10}}
    )
    run_id = c.client.submit("flower.add10", {"a": 1})
    record = c.wait_all([run_id], timeout=60)[0]
    assert record.state is RunState.COMPLETED and record.output == 11

    # One Celery task runs every runtime-registered job: the job name is in the arguments.
    task = wait_task(flower, run_id, "SUCCESS")
    assert task["name"] == "jobsys.dynamic"
    assert "'job': 'flower.add10'" in task["kwargs"]
    assert run_id in flower.get("/api/tasks", search="flower.add10").json()


def test_a_cancelled_run_shows_revoked(watched: tuple[Cluster, Flower]) -> None:
    c, flower = watched
    run_id = c.client.submit("examples.sleep", {"seconds": 60})
    c.wait_state(run_id, RunState.RUNNING, timeout=30)
    c.client.cancel(run_id)
    assert c.wait_all([run_id], timeout=60)[0].state is RunState.CANCELLED
    # The worker's buffered received/started events (which carry the name) may arrive after
    # the revoked one; Flower keeps REVOKED and merges the name in.
    wait_tasks(flower, "examples.sleep", {run_id: "REVOKED"})


def test_secret_inputs_never_reach_flower(watched: tuple[Cluster, Flower]) -> None:
    c, flower = watched
    token, key = f"S3NT1NEL-{uuid.uuid4().hex}", f"APIKEY-{uuid.uuid4().hex}"
    ids = {
        mode: c.client.submit("tests.uses_secret", {"token": token, "api_key": key, "mode": mode})
        for mode in ("echo", "fail")
    }
    records = {mode: c.wait_all([i], timeout=60)[0] for mode, i in ids.items()}
    assert records["echo"].state is RunState.COMPLETED
    assert records["fail"].state is RunState.FAILED

    tasks = wait_tasks(
        flower, "tests.uses_secret", {ids["echo"]: "SUCCESS", ids["fail"]: "FAILURE"}
    )
    # What the job output and raised is there, redacted like the record.
    assert "token was **********" in tasks[ids["echo"]]["result"]
    assert "the API refused **********" in tasks[ids["fail"]]["exception"]

    shown = [json.dumps(tasks), flower.get("/api/tasks").text, flower.get("/tasks").text]
    for run_id in ids.values():
        for path in (f"/api/task/info/{run_id}", f"/api/task/result/{run_id}", f"/task/{run_id}"):
            response = flower.get(path)
            assert response.status_code == 200, (path, response.text)
            shown.append(response.text)
    shown.append(flower.get("/metrics").text)
    everything = "\n".join(shown)
    assert all(run_id in everything for run_id in ids.values())
    assert token not in everything, "a secret input reached Flower"
    assert key not in everything, "a secret input reached Flower"


def test_every_route_needs_the_credentials(watched: tuple[Cluster, Flower]) -> None:
    c, flower = watched
    run_id = c.client.submit("examples.add", {"a": 1, "b": 1})
    c.wait_all([run_id], timeout=60)
    wait_tasks(flower, "examples.add", {run_id: "SUCCESS"})
    routes = ["/", "/tasks", f"/task/{run_id}", "/api/tasks", f"/api/task/info/{run_id}"]
    routes += ["/api/workers", "/broker"]
    for path in routes:
        assert flower.get(path, auth=None).status_code == 401, path
        assert flower.get(path, auth=(USER, "wrong")).status_code == 401, path
        assert flower.get(path, auth=("nobody", PASSWORD)).status_code == 401, path
        assert flower.get(path).status_code == 200, path
    # Control actions would bypass the run records: off unless --allow-control.
    revoke = flower.http.post(f"/api/task/revoke/{run_id}", auth=(USER, PASSWORD))
    assert revoke.status_code == 403, revoke.text
    apply = flower.http.post(
        "/api/task/async-apply/examples.add", auth=(USER, PASSWORD), json={"kwargs": {}}
    )
    assert apply.status_code == 403, apply.text


def test_without_credentials_set_a_password_is_made_and_printed(fresh: Cluster) -> None:
    flower = Flower(fresh, "flower-default", auth=None)
    try:
        flower.wait_ready()
        found = re.findall(r"user admin, password (\S+)", flower.log())
        assert len(found) == 1, flower.log()
        assert flower.get("/api/workers", auth=None).status_code == 401
        assert flower.get("/api/workers", auth=("admin", "")).status_code == 401
        assert flower.get("/api/workers", auth=("admin", found[0])).status_code == 200
    finally:
        flower.stop()


def test_url_prefix_from_the_environment(fresh: Cluster) -> None:
    auth, prefix = f"{USER}:{PASSWORD}", {cli_flower.PREFIX_ENV: "ops/flower"}
    flower = Flower(fresh, "flower-prefix", auth, prefix="/ops/flower", **prefix)
    try:
        flower.wait_ready()
        assert flower.get("/ops/flower/api/workers").status_code == 200
        assert flower.get("/ops/flower/api/workers", auth=None).status_code == 401
        assert flower.get("/api/workers").status_code == 404
    finally:
        flower.stop()


def test_a_taken_port_is_an_error_message(fresh: Cluster) -> None:
    first = Flower(fresh, "flower-first", auth=f"{USER}:{PASSWORD}")
    try:
        first.wait_ready()
        done = subprocess.run(
            [sys.executable, "-m", "jobsys", "flower", "--port", str(first.port)],
            env={**fresh.env, cli_flower.AUTH_ENV: f"{USER}:{PASSWORD}"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        assert f"cannot listen on 127.0.0.1:{first.port}" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        first.stop()


def test_workers_stop_sending_task_events_when_flower_stops(
    tmp_path: Path, redis_url: str, database_url: str | None
) -> None:
    with cluster(tmp_path, redis_url, database_url) as c:
        c.start_worker("w", concurrency=1)
        flower = Flower(c, "flower-stops", auth=f"{USER}:{PASSWORD}")
        try:
            flower.wait_ready()
            c.wait_for_log("w", "Events of group {task} enabled by remote", timeout=30)
        finally:
            assert flower.stop() == 0, flower.log()
        c.wait_for_log("w", "Events of group {task} disabled by remote", timeout=30)


@pytest.mark.parametrize(
    "given", ["nopassword", "user:", ":pw", "a:b,,c:d", "a:b, c"], ids=lambda s: repr(s)
)
def test_malformed_credentials_are_refused(given: str) -> None:
    with pytest.raises(errors.ConfigError, match=cli_flower.AUTH_ENV):
        cli_flower.credentials(given)


@pytest.mark.backend_independent
def test_credentials_parse_and_never_empty() -> None:
    env = {cli_flower.AUTH_ENV: "ann:pw:with:colons, bob:x"}
    given = config.Settings.from_env(env).flower_basic_auth
    assert cli_flower.credentials(given) == (["ann:pw:with:colons", "bob:x"], None)
    made, password = cli_flower.credentials(config.Settings.from_env({}).flower_basic_auth)
    assert password and made == [f"admin:{password}"]
    assert cli_flower.credentials(None)[1] != password
    assert cli_flower.credentials(" ")[1] is not None
    with pytest.raises(errors.ConfigError):
        cli_flower.flower_argv("127.0.0.1", 5555, [])


@pytest.mark.backend_independent
def test_a_bad_setting_exits_with_a_message(tmp_path: Path) -> None:
    env = {**os.environ, "JOBSYS_HOME": str(tmp_path), cli_flower.AUTH_ENV: "nopassword"}
    env["JOBSYS_BROKER_URL"] = "redis://127.0.0.1:1/0"
    done = subprocess.run(
        [sys.executable, "-m", "jobsys", "flower"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert cli_flower.AUTH_ENV in done.stderr and "nopassword" not in done.stderr
