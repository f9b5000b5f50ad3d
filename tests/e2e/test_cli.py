"""The README tour, end to end: ``jobsys up`` in a fresh home, then the CLI as a user types it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.cluster import ROOT, Database, with_db
from tests.servers import free_port
from tests.waiting import NotYet, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.interface]

CONSOLE_SCRIPT = Path(sys.executable).with_name("jobsys")
"""The ``jobsys`` command as a shell runs it (a console script, not ``python -m jobsys``: it
does not put the working directory on ``sys.path`` by itself)."""

MYJOBS = '''
import pydantic
from jobsys import JobContext, RetryPolicy, job


class Invoice(pydantic.BaseModel):
    customer: str
    cents: int = pydantic.Field(gt=0)


class Sent(pydantic.BaseModel):
    message_id: str


@job("billing.send_invoice", timeout=60, tags=["billing"], retry=RetryPolicy(max_attempts=5))
def send_invoice(invoice: Invoice, ctx: JobContext) -> Sent:
    """Email an invoice."""
    ctx.log(f"sending to {invoice.customer}")
    return Sent(message_id=f"{ctx.run_id}-1")
'''
"""The README's own job module, kept in the folder ``jobsys up`` runs from."""


class Up:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        self.log = home.parent / "up.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobsys", "up"],
            env=env,
            cwd=home.parent,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool | NotYet:
            worker_log = self.home / "logs" / "worker1.log"
            if worker_log.exists() and "ready." in worker_log.read_text(errors="replace"):
                return True
            assert self.proc.poll() is None, self.log.read_text()
            return NotYet("\n" + self.log.read_text())

        eventually(ready, timeout, 0.2, what="jobsys up's worker to be ready")

    def api(self, path: str, **params: str) -> Any:
        """One GET of the HTTP API ``up`` serves, with the token it printed: what a wait
        polls (milliseconds, where a ``jobsys`` process takes a second of CPU to start)."""
        printed = self.log.read_text(errors="replace")
        base = re.search(r"http +(http://127\.0\.0\.1:\d+)/", printed)
        token = re.search(r"token +(\S+)", printed)
        assert base and token, printed
        answer = httpx.get(
            f"{base.group(1)}/api/v1{path}",
            params=params,
            headers={"Authorization": f"Bearer {token.group(1)}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def wait_state(self, run_id: str, state: str, timeout: float = 30) -> None:
        """Wait until the run is in ``state``, polling the HTTP API (the server may still
        be starting)."""

        def reached() -> bool | NotYet:
            now = self.api(f"/runs/{run_id}")["state"]
            return now == state or NotYet(now)

        eventually(
            reached, timeout, 0.2, what=f"run {run_id} to be {state}", ignoring=(httpx.HTTPError,)
        )

    def wait_running(self, run_id: str) -> None:
        """Wait until the run is running (over HTTP), then check the CLI shows it so."""
        self.wait_state(run_id, "running")
        shown = json.loads(self.jobsys("runs", "show", run_id, "--json", check=True).stdout)
        assert shown["state"] == "running", shown

    def jobsys(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "jobsys", *args],
            env=self.env,
            cwd=self.home.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def shell(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``jobsys ARGS`` as typed in a shell in the folder ``jobsys up`` runs from."""
        return subprocess.run(
            [str(CONSOLE_SCRIPT), *args],
            env=self.env,
            cwd=self.home.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, database_url: str | None) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("tour")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    env["JOBSYS_HOME"] = str(tmp / ".jobsys")
    env["PYTHONPATH"] = str(ROOT)
    env["JOBSYS_HTTP_PORT"] = str(free_port())
    env["JOBSYS_CATALOG"] = "workers.examples,myjobs"  # as the README says, myjobs.py here
    (tmp / "myjobs.py").write_text(MYJOBS)
    db = Database(tmp, database_url) if database_url else None
    if db is not None:
        env["JOBSYS_DATABASE_URL"] = db.url
    if os.environ.get("JOBSYS_TEST_BROKER_URL"):
        env["JOBSYS_BROKER_URL"] = with_db(os.environ["JOBSYS_TEST_BROKER_URL"], 14)
        env["JOBSYS_RESULT_URL"] = with_db(os.environ["JOBSYS_TEST_BROKER_URL"], 15)
    runner = Up(tmp / ".jobsys", env)
    try:
        runner.wait_ready()
        yield runner
    finally:
        with contextlib.suppress(ProcessLookupError):
            runner.proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            runner.proc.wait(30)
        if runner.proc.poll() is None:
            runner.proc.kill()
        if db is not None:
            db.drop()


def test_submit_wait_prints_the_sum_and_show_has_the_record(up: Up) -> None:
    result = up.jobsys(
        "submit", "examples.add", "--input", '{"a": 2, "b": 3}', "--wait", check=True
    )
    assert result.stdout.strip() == "5"
    run_id = result.stderr.split("run ", 1)[1].split()[0]
    record = json.loads(up.jobsys("runs", "show", run_id, "--json", check=True).stdout)
    assert record["state"] == "completed" and record["attempts"] == 1
    assert record["started_at"] and record["finished_at"] and record["duration"] is not None
    assert record["worker"].startswith("worker1-") and record["worker_pid"] > 0
    assert json.loads(up.jobsys("runs", "result", run_id, check=True).stdout) == 5
    listed = json.loads(
        up.jobsys("runs", "list", "--job", "examples.add", "--json", check=True).stdout
    )
    assert run_id in [r["id"] for r in listed]
    assert run_id[:8] in up.jobsys("runs", "list", check=True).stdout


def test_invalid_input_exits_nonzero_naming_the_field_and_records_nothing(up: Up) -> None:
    before = json.loads(up.jobsys("runs", "list", "--limit", "10000", "--json", check=True).stdout)
    result = up.jobsys("submit", "examples.add", "--input", '{"a": 2, "b": "three"}')
    assert result.returncode == 2
    assert "b: Input should be a valid integer" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    bad_json = up.jobsys("submit", "examples.add", "--input", "{a: 2}")
    assert bad_json.returncode == 2
    assert "--input is not valid JSON: expecting property name" in bad_json.stderr
    assert "line 1, column 2 of '{a: 2}'" in bad_json.stderr and "(input)" not in bad_json.stderr
    after = json.loads(up.jobsys("runs", "list", "--limit", "10000", "--json", check=True).stdout)
    assert after == before


def test_unknown_names_and_ids_exit_2_with_one_line(up: Up) -> None:
    unknown_job = up.jobsys("submit", "examples.addd", "--input", "{}")
    assert unknown_job.returncode == 2 and "examples.add" in unknown_job.stderr
    unknown_run = up.jobsys("runs", "show", "0" * 32)
    assert unknown_run.returncode == 2 and "not found" in unknown_run.stderr
    bad_since = up.jobsys("runs", "list", "--since", "yesterday-ish")
    assert bad_since.returncode == 2 and "--since" in bad_since.stderr


def test_the_shell_command_loads_a_job_module_of_the_working_directory(up: Up) -> None:
    done = up.shell(
        "submit", "billing.send_invoice", "--input", '{"customer": "ada", "cents": 100}', "--wait"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["message_id"].endswith("-1")
    listed = up.shell("jobs", "list", "--json")
    assert "billing.send_invoice" in [j["name"] for j in json.loads(listed.stdout)]


def test_tables_are_whole_when_the_output_is_not_a_terminal(up: Up) -> None:
    table = up.jobsys("jobs", "list", check=True).stdout
    assert "…" not in table
    for name in ("examples.hash_file", "examples.admin_only", "billing.send_invoice"):
        assert f"│ {name} " in table
    assert "Only principals with the role ``admin`` may run it (or see its runs)." in table
    assert max(len(line) for line in table.splitlines()) > 80


def test_the_banner_says_which_processes_run(up: Up) -> None:
    banner = up.log.read_text()
    assert "workers  2 processes running jobs (worker1: 2 each" in banner
    assert "and beat" in banner


def test_jobs_list_and_show(up: Up) -> None:
    names = [j["name"] for j in json.loads(up.jobsys("jobs", "list", "--json", check=True).stdout)]
    assert {
        "examples.add",
        "examples.sleep",
        "examples.flaky",
        "examples.fail",
        "examples.hash_file",
    } <= set(names)
    shown = json.loads(up.jobsys("jobs", "show", "examples.add", "--json", check=True).stdout)
    assert shown["input_schema"]["required"] == ["a", "b"]


def test_failed_run_exits_1_and_flaky_retries(up: Up) -> None:
    failed = up.jobsys("submit", "examples.fail", "--input", "{}", "--wait")
    assert failed.returncode == 1 and "Fatal" in failed.stderr
    flaky = up.jobsys(
        "submit", "examples.flaky", "--input", '{"failures": 1}', "--wait", check=True
    )
    assert json.loads(flaky.stdout) == {"attempts": 2}


def test_cancel_and_logs_from_the_cli(up: Up) -> None:
    run_id = up.jobsys(
        "submit", "examples.sleep", "--input", '{"seconds": 60}', check=True
    ).stdout.strip()
    up.wait_running(run_id)
    assert up.jobsys("runs", "cancel", run_id, check=True).returncode == 0
    result = up.jobsys("runs", "result", run_id, "--wait", "30")
    assert result.returncode == 1 and "cancelled" in result.stderr
    path = up.home.parent / "data.bin"
    path.write_bytes(b"jobsys" * 1000)
    hashed = up.jobsys(
        "submit",
        "examples.hash_file",
        "--input",
        json.dumps({"path": str(path)}),
        "--wait",
        check=True,
    )
    assert json.loads(hashed.stdout)["size"] == 6000
    hash_id = hashed.stderr.split("run ", 1)[1].split()[0]
    logs = up.jobsys("runs", "logs", hash_id, "--follow", check=True).stdout
    assert "hashed 6000 bytes" in logs


def test_schedules_from_the_cli_fire_through_beat(up: Up) -> None:
    created = json.loads(
        up.jobsys(
            "schedules",
            "create",
            "examples.add",
            "--every",
            "1",
            "--input",
            '{"a": 20, "b": 22}',
            "--name",
            "answer",
            "--json",
            check=True,
        ).stdout
    )
    sid = created["id"]
    assert created["state"] == "active" and created["cadence"] == {"kind": "interval", "every": 1.0}

    def two_fires_completed() -> bool | NotYet:
        made = up.api("/runs", schedule=sid, state="completed")["runs"]
        return len(made) >= 2 or NotYet(made)

    eventually(
        two_fires_completed, 30, 0.5, what="two completed fires", ignoring=(httpx.HTTPError,)
    )
    listed = json.loads(up.jobsys("runs", "list", "--json", check=True).stdout)
    made = [r for r in listed if r["schedule_id"] == sid and r["state"] == "completed"]
    assert len(made) >= 2 and all(r["output"] == 42 for r in made)
    assert all(r["trigger"] == "scheduled" and r["fire_at"] for r in made)
    paused = json.loads(up.jobsys("schedules", "pause", sid, "--json", check=True).stdout)
    assert paused["state"] == "paused"
    run_id = up.jobsys("schedules", "trigger", sid, check=True).stdout.strip()
    assert json.loads(up.jobsys("runs", "result", run_id, "--wait", "30", check=True).stdout) == 42
    updated = json.loads(
        up.jobsys(
            "schedules",
            "update",
            sid,
            "--cron",
            "0 8 * * 1",
            "--tz",
            "Europe/Paris",
            "--json",
            check=True,
        ).stdout
    )
    assert updated["version"] == 2 and updated["state"] == "paused"
    assert updated["cadence"] == {"kind": "cron", "cron": "0 8 * * 1", "timezone": "Europe/Paris"}
    shown = json.loads(up.jobsys("schedules", "show", sid, "--json", check=True).stdout)
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    table = up.jobsys("schedules", "list", check=True).stdout
    assert sid in table and "paused" in table
    deleted = json.loads(up.jobsys("schedules", "delete", sid, "--json", check=True).stdout)
    assert deleted["state"] == "cancelled"
    bad = up.jobsys("schedules", "create", "examples.add", "--cron", "61 * * * *")
    assert bad.returncode == 2 and "cron: '61 * * * *' is not five cron fields" in bad.stderr
    bad_input = up.jobsys("schedules", "create", "examples.add", "--every", "5", "--input", "{}")
    assert bad_input.returncode == 2 and "a: Field required" in bad_input.stderr
    missing = up.jobsys("schedules", "pause", "sch_nope")
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_the_readme_permission_tour(up: Up) -> None:
    token = up.jobsys(
        "tokens", "create", "--principal", "viewer", "--tenant", "default", check=True
    ).stdout.strip()
    assert token.startswith("jst_")
    denied = up.jobsys("submit", "examples.admin_only", "--input", "{}", "--token", token)
    assert denied.returncode == 3
    assert "permission denied: 'viewer' may not execute job 'examples.admin_only'" in denied.stderr
    allowed = up.jobsys("submit", "examples.admin_only", "--input", "{}", "--wait", check=True)
    assert json.loads(allowed.stdout) == {"by": "local"}
    audit = json.loads(up.jobsys("audit", "list", "--json", check=True).stdout)
    assert any(e["principal_id"] == "viewer" and e["outcome"] == "denied" for e in audit)


def test_the_diamond_workflow_from_the_cli(up: Up) -> None:
    declared = json.loads(up.jobsys("workflows", "list", "--json", check=True).stdout)
    assert "examples.diamond" in [w["name"] for w in declared]
    done = up.jobsys(
        "workflows", "submit", "examples.diamond", "--input", "{}", "--wait", check=True
    )
    output = json.loads(done.stdout)
    assert output["total"] == {"total": 385 + 10, "parts": 10}  # squares of 1..10, plus 10 + 0
    listed = json.loads(up.jobsys("workflows", "list", "--runs", "--json", check=True).stdout)
    wf_id = listed[0]["id"]
    dag = up.jobsys("runs", "show", wf_id, check=True).stdout
    for line in (
        "numbers succeeded",
        "squares succeeded (10 runs)",
        "offset succeeded",
        "total succeeded",
    ):
        assert line in dag
    missing = up.jobsys("workflows", "submit", "examples.diamnd")
    assert missing.returncode == 2 and "examples.diamond" in missing.stderr


def test_a_cancelled_workflow_draws_its_cancelled_step_as_cancelled(up: Up) -> None:
    definition = up.home.parent / "nap.json"
    steps = [{"name": "nap", "job": "examples.sleep", "input": {"seconds": 120}}]
    definition.write_text(
        json.dumps({"name": "team.nap", "kind": "workflow", "workflow": {"steps": steps}})
    )
    up.jobsys("jobs", "register", str(definition), check=True)
    wf_id = up.jobsys("workflows", "submit", "team.nap", check=True).stdout.strip()

    def shown() -> dict[str, Any]:
        return dict(json.loads(up.jobsys("runs", "show", wf_id, "--json", check=True).stdout))

    eventually(  # polled over HTTP; the CLI then shows the same run
        lambda: up.api("/runs", workflow=wf_id)["runs"],
        30,
        0.2,
        what="the step's run",
        ignoring=(httpx.HTTPError,),
    )
    (step_run,) = shown()["steps"]["nap"]["runs"]
    up.jobsys("workflows", "cancel", wf_id, check=True)
    up.wait_state(step_run, "cancelled")
    ended = shown()
    assert ended["state"] == "cancelled" and ended["steps"]["nap"]["state"] == "cancelled"
    for command in (("runs", "show", wf_id), ("workflows", "show", wf_id)):
        drawn = up.jobsys(*command, check=True).stdout
        assert "nap cancelled" in drawn and "failed" not in drawn


def test_the_log_stream_sends_the_record_only_when_its_state_changes(up: Up) -> None:
    printed = up.log.read_text()
    base = re.search(r"http +(http://127\.0\.0\.1:\d+)/", printed)
    token = re.search(r"token +(\S+)", printed)
    assert base and token, printed
    # Submitted over HTTP rather than by a CLI process, whose start-up on a loaded machine
    # can outlast the run: the stream must open while the run still reports progress.
    submitted = httpx.post(
        f"{base.group(1)}/api/v1/jobs/examples.sleep/runs",
        json={"input": {"seconds": 3}},
        headers={"Authorization": f"Bearer {token.group(1)}"},
        timeout=30,
    )
    assert submitted.status_code == 202, submitted.text
    run_id = submitted.json()["run_id"]
    stream = f"{base.group(1)}/api/v1/runs/{run_id}/logs/stream?token={token.group(1)}"
    with httpx.stream("GET", stream, timeout=60) as events:
        assert events.status_code == 200
        text = "".join(events.iter_text())
    names = re.findall(r"^event: (\w+)$", text, re.MULTILINE)
    assert names[-1] == "end"
    states = [
        json.loads(data)["state"]
        for data in re.findall(r"^event: state\ndata: (.*)$", text, re.MULTILINE)
    ]
    assert len(states) == len(set(states)) and states[-1] == "completed", states
    progress = re.findall(r"^event: progress\ndata: (.*)$", text, re.MULTILINE)
    assert progress and all(set(json.loads(p)) == {"run_id", "progress"} for p in progress)


def test_up_serves_the_api_and_dashboard_with_the_token_it_prints(up: Up) -> None:
    printed = up.log.read_text()
    base = re.search(r"http +(http://127\.0\.0\.1:\d+)/", printed)
    token = re.search(r"token +(\S+)", printed)
    assert base and token, printed
    url, secret = base.group(1), token.group(1)
    auth = {"Authorization": f"Bearer {secret}"}
    eventually(  # the server may still be starting
        lambda: httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200,
        30,
        0.2,
        what=f"{url}/api/v1/health to answer 200",
        ignoring=(httpx.TransportError,),
    )
    assert httpx.get(f"{url}/api/v1/jobs").status_code == 401
    names = [j["name"] for j in httpx.get(f"{url}/api/v1/jobs", headers=auth).json()["jobs"]]
    assert "examples.add" in names
    done = httpx.post(
        f"{url}/api/v1/jobs/examples.add/runs",
        json={"input": {"a": 2, "b": 3}, "wait": 30},
        headers=auth,
        timeout=40,
    ).json()
    assert done["state"] == "completed" and done["output"] == 5
    shown = json.loads(up.jobsys("runs", "show", done["run_id"], "--json", check=True).stdout)
    assert shown["output"] == 5  # the CLI and the API read the same record
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    stream = f"{url}/api/v1/runs/{done['run_id']}/logs/stream?token={secret}"
    with httpx.stream("GET", stream, timeout=30) as events:
        assert events.status_code == 200
        assert "event: end" in "".join(events.iter_text())
    access_log = (up.home / "logs" / "http.log").read_text()
    assert "/logs/stream?token=***" in access_log and secret not in access_log


def test_ctrl_c_stops_everything_with_no_orphans(up: Up) -> None:
    # a long job is running: `up` hands it back after the shutdown grace
    long_run = up.jobsys("submit", "examples.sleep", "--input", '{"seconds": 600}', check=True)
    run_id = long_run.stdout.strip()
    up.wait_running(run_id)
    services = json.loads((up.home / "services.json").read_text())
    pids = [services["pid"], *services["children"]]
    if services.get("redis_pid"):
        pids.append(services["redis_pid"])
    family = {
        p.pid
        for pid in pids
        if psutil.pid_exists(pid)
        for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    }
    assert len(family) >= 4  # up, redis (or an external broker), worker + pool, beat
    up.proc.send_signal(signal.SIGINT)
    up.proc.wait(60)

    def all_ended() -> bool | NotYet:
        alive = [
            p
            for p in family
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        return not alive or NotYet(alive)

    eventually(
        all_ended,
        30,
        0.2,
        what="every process of jobsys up to end",
        ignoring=(psutil.NoSuchProcess,),
    )
    assert not (up.home / "services.json").exists()


def _tour_env(tmp: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    env.update(JOBSYS_HOME=str(tmp / ".jobsys"), PYTHONPATH=str(ROOT), JOBSYS_HTTP_PORT=str(port))
    return env


def _up_token(tmp: Path, env: dict[str, str]) -> str:
    """Start ``jobsys up``, read the login token it prints, stop it (Ctrl-C)."""
    runner = Up(tmp / ".jobsys", env)
    try:
        printed = re.compile(r"^  token +(jst_\S+)", re.MULTILINE)
        eventually(
            lambda: printed.search(runner.log.read_text()) is not None or runner.proc.poll() == 0,
            60,
            0.2,
            what="the token line",
        )
        found = printed.search(runner.log.read_text())
        assert found, runner.log.read_text()
        return found.group(1)
    finally:
        runner.proc.send_signal(signal.SIGINT)
        runner.proc.wait(60)


@pytest.mark.backend_independent
def test_a_taken_port_names_the_setting_to_change(tmp_path: Path) -> None:
    port = free_port()
    env = _tour_env(tmp_path, port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        refused = subprocess.run(
            [sys.executable, "-m", "jobsys", "up"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert refused.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken" in refused.stderr
    assert "--http-port or JOBSYS_HTTP_PORT" in refused.stderr


@pytest.mark.backend_independent
def test_up_keeps_one_login_token_across_restarts(tmp_path: Path) -> None:
    env = _tour_env(tmp_path, free_port())
    first = _up_token(tmp_path, env)
    kept = tmp_path / ".jobsys" / "up.token"
    assert kept.read_text().strip() == first and kept.stat().st_mode & 0o777 == 0o600
    assert _up_token(tmp_path, env) == first  # a restart prints the same token
    listed = subprocess.run(
        [sys.executable, "-m", "jobsys", "tokens", "list", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    valid = [t for t in json.loads(listed.stdout) if t["revoked_at"] is None]
    assert [t["id"] for t in valid] == [first.removeprefix("jst_").split("_")[0]]
