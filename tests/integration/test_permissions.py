"""Permissions: every (principal, job, action) cell through the Python client and the CLI,
tenant isolation, the worker's own check of a forged run, tokens and the audit log.

The CLI cells run the click app in-process (``click.testing.CliRunner``, sharing one open store
as in ``tests/security/test_access_matrix.py``): a ``python -m jobsys`` process adds only its
start-up time. One cell per action (the reader's, on ``tests.ops_only``: allowed to read and
list, denied the rest) runs instead as a real ``python -m jobsys ... --token`` process, in the
background while the others run in-process."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import functools
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from jobsys import Principal, RunState
from jobsys.base import errors
from jobsys.cli import main as cli_main
from jobsys.declare import cadence
from jobsys.service import client
from jobsys.store import runs
from tests.cluster import ROOT, Cluster
from tests.security.test_access_matrix import shared_store

pytestmark = [pytest.mark.integration, pytest.mark.interface]

ADMIN = Principal(id="ada", roles=("admin",), tenant="t1")
OPS = Principal(id="olga", roles=("ops",), tenant="t1")
READER = Principal(id="rita", scopes=("runs:read",), tenant="t1")
NOBODY = Principal(id="ned", tenant="t1")
ACTIONS = ("execute", "create", "update", "delete", "read", "list")
INPUTS = {
    "examples.admin_only": {},
    "tests.ops_only": {"seconds": 0},
    "examples.add": {"a": 1, "b": 2},
}
EVERYTHING = set(ACTIONS)
# Written out by hand from the jobs' rules (not computed by the code under test).
ALLOWED: dict[tuple[str, str], set[str]] = {
    ("ada", "examples.admin_only"): EVERYTHING,
    ("ada", "tests.ops_only"): EVERYTHING,
    ("ada", "examples.add"): EVERYTHING,
    ("olga", "examples.admin_only"): set(),
    ("olga", "tests.ops_only"): EVERYTHING,
    ("olga", "examples.add"): EVERYTHING,
    ("rita", "examples.admin_only"): set(),
    ("rita", "tests.ops_only"): {"read", "list"},
    ("rita", "examples.add"): EVERYTHING,
    ("ned", "examples.admin_only"): set(),
    ("ned", "tests.ops_only"): set(),
    ("ned", "examples.add"): EVERYTHING,
}
LATER = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def as_(c: Cluster, who: Principal) -> client.Client:
    return client.Client(c.settings, c.registry, principal=who, store=c.store, app=c.client.app)


class Fixtures:
    """Runs and schedules the admin made, one fresh pair per matrix cell."""

    def __init__(self, c: Cluster) -> None:
        self.admin = as_(c, ADMIN)

    def run(self, job: str) -> str:
        return self.admin.submit(job, INPUTS[job])

    def schedule(self, job: str) -> str:
        every = cadence.every(3600, start_at=LATER, input=INPUTS[job])
        return self.admin.schedules.create(job, every).id


def attempt_with_client(c: client.Client, f: Fixtures, job: str, action: str) -> bool:
    """True if allowed; False if denied (``PermissionDenied``, or absent from a list)."""
    calls: dict[str, Callable[[], Any]] = {
        "execute": lambda: c.submit(job, INPUTS[job]),
        "create": lambda: c.schedules.create(
            job, cadence.every(3600, start_at=LATER, input=INPUTS[job])
        ),
        "update": lambda: c.cancel(f.run(job)),
        "delete": lambda: c.schedules.delete(f.schedule(job)),
        "read": lambda: c.status(f.run(job)),
    }
    if action == "list":
        run_id, schedule_id = f.run(job), f.schedule(job)
        runs_seen = run_id in {r.id for r in c.list(limit=10_000)}
        schedules_seen = schedule_id in {s.id for s in c.schedules.list(limit=10_000)}
        assert runs_seen == schedules_seen
        return runs_seen
    try:
        calls[action]()
    except errors.PermissionDenied:
        return False
    return True


def test_every_cell_of_the_matrix_through_the_python_client(fresh: Cluster) -> None:
    f = Fixtures(fresh)
    checked = 0
    for who in (ADMIN, OPS, READER, NOBODY):
        c = as_(fresh, who)
        for job in INPUTS:
            for action in ACTIONS:
                expected = action in ALLOWED[(who.id, job)]
                got = attempt_with_client(c, f, job, action)
                assert got == expected, f"{who.id} {action} {job}: allowed={got}"
                checked += 1
    assert checked == 4 * 3 * 6
    denials = fresh.client.admin.audit_log(outcome="denied", limit=10_000)
    assert {(e.principal_id, e.action) for e in denials} >= {
        ("ned", "execute"),
        ("rita", "update"),
        ("olga", "read"),
    }


def cli(c: Cluster, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobsys", *args, "--token", token],
        env=c.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


CliCall = Callable[..., "subprocess.CompletedProcess[str]"]
"""Runs one CLI command as a token: ``(token, *args) -> CompletedProcess``."""


def cli_in_process(runner: CliRunner, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The click app run in this process, its result shaped as a finished process's."""
    result = runner.invoke(cli_main, [*args, "--token", token])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def attempt_with_cli(run_cli: CliCall, f: Fixtures, token: str, job: str, action: str) -> bool:
    data = json.dumps(INPUTS[job])
    if action == "list":
        run_id = f.run(job)
        result = run_cli(token, "runs", "list", "--limit", "10000", "--json")
        assert result.returncode == 0, result.stderr
        return run_id in {r["id"] for r in json.loads(result.stdout)}
    argv = {
        "execute": lambda: ["submit", job, "--input", data],
        "create": lambda: [
            "schedules",
            "create",
            job,
            "--every",
            "3600",
            "--start",
            LATER.isoformat(),
            "--input",
            data,
        ],
        "update": lambda: ["runs", "cancel", f.run(job)],
        "delete": lambda: ["schedules", "delete", f.schedule(job)],
        "read": lambda: ["runs", "show", f.run(job), "--json"],
    }[action]()
    result = run_cli(token, *argv)
    assert result.returncode in (0, 3), result.stderr
    if result.returncode == 3:
        assert "permission denied" in result.stderr and len(result.stderr.splitlines()) == 1
    return result.returncode == 0


def test_every_cell_of_the_matrix_through_the_cli(
    fresh: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = Fixtures(fresh)
    tokens = {who.id: f.admin.admin.create_token(who)[1] for who in (ADMIN, OPS, READER, NOBODY)}
    cells = [(who, job, action) for who in tokens for job in INPUTS for action in ACTIONS]
    as_processes = {(READER.id, "tests.ops_only", action) for action in ACTIONS}
    runner = CliRunner(env=fresh.env)
    got: dict[tuple[str, str, str], bool] = {}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = {
            cell: pool.submit(
                attempt_with_cli, functools.partial(cli, fresh), f, tokens[cell[0]], *cell[1:]
            )
            for cell in cells
            if cell in as_processes
        }
        with shared_store(fresh.settings.database_url, monkeypatch) as made:
            for cell in cells:
                if cell not in as_processes:
                    in_process = functools.partial(cli_in_process, runner)
                    got[cell] = attempt_with_cli(in_process, f, tokens[cell[0]], *cell[1:])
                    while made:
                        made.pop().close()
        got.update({cell: future.result() for cell, future in running.items()})
    wrong = [
        (who, job, action, allowed)
        for (who, job, action), allowed in got.items()
        if allowed != (action in ALLOWED[(who, job)])
    ]
    assert wrong == [] and len(cells) == len(got) == 72 and len(running) == 6


def test_another_tenant_sees_nothing_and_gets_not_found(fresh: Cluster) -> None:
    mine = Fixtures(fresh)
    run_id, schedule_id = mine.run("examples.add"), mine.schedule("examples.add")
    other = as_(fresh, Principal(id="bob", roles=("admin",), tenant="t2"))
    assert run_id not in {r.id for r in other.list(limit=10_000)}
    assert schedule_id not in {s.id for s in other.schedules.list(limit=10_000)}
    for call in (other.status, other.cancel, other.retry, other.logs):
        with pytest.raises(errors.RunNotFound):
            call(run_id)
    for action in (other.schedules.get, other.schedules.pause, other.schedules.delete):
        with pytest.raises(errors.ScheduleNotFound):
            action(schedule_id)
    with pytest.raises(errors.ScheduleNotFound):
        other.schedules.trigger(schedule_id)
    assert mine.admin.status(run_id).state is RunState.PENDING  # untouched


def test_a_forged_run_without_execute_never_runs_its_body(fresh: Cluster) -> None:
    """A run written straight into the store for a principal without ``execute``, and a
    message pushed straight into Redis whose arguments claim an admin: the worker reads the
    principal from the run record, denies, and the body never runs."""
    fresh.start_worker("w", concurrency=1)
    run_id = runs.new_run_id()
    spec = fresh.registry.get("tests.ops_only")
    fresh.store.insert(
        [
            {
                "id": run_id,
                "job": spec.name,
                "job_version": spec.version,
                "queue": spec.queue,
                "priority": 5,
                "input": {"seconds": 0},
                "max_attempts": 3,
                "timeout": 10.0,
                "principal": NOBODY.model_dump(mode="json"),
                "principal_id": NOBODY.id,
                "tenant": NOBODY.tenant,
            }
        ]
    )
    fresh.client.app.send_task(
        spec.name,
        kwargs={"run_id": run_id, "dispatch": 1, "principal": ADMIN.model_dump(mode="json")},
        queue=spec.queue,
    )
    record = fresh.wait_all([run_id], timeout=30)[0]
    assert record.state is RunState.FAILED and record.attempts == 1
    assert record.error is not None and record.error["reason"] == "permission"
    assert "'ned' may not execute job 'tests.ops_only'" in record.error["message"]
    assert fresh.executions(run_id) == 0
    allowed = as_(fresh, OPS).submit("tests.ops_only", {"seconds": 0})
    assert fresh.wait_all([allowed], timeout=30)[0].state is RunState.COMPLETED
    assert fresh.executions(allowed) == 1


def test_tokens_are_hashed_revocable_expiring_and_audited(fresh: Cluster) -> None:
    admin = as_(fresh, ADMIN).admin
    record, token = admin.create_token(OPS)
    soon, expiring = admin.create_token(READER, expires_at=dt.datetime.now(dt.UTC))
    with fresh.store.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT * FROM jobsys_tokens").all()
    assert token not in repr(stored) and token.split("_")[-1] not in repr(stored)
    shown = cli(fresh, token, "submit", "tests.ops_only", "--input", '{"seconds": 0}')
    assert shown.returncode == 0, shown.stderr
    assert fresh.store.get(shown.stdout.strip()).principal_id == "olga"
    assert cli(fresh, expiring, "runs", "list").returncode == 3  # expired
    admin.revoke_token(record.id)
    refused = cli(fresh, token, "runs", "list")
    assert refused.returncode == 3 and "unknown, revoked or expired" in refused.stderr
    assert cli(fresh, token + "x", "runs", "list").returncode == 3
    not_admin = cli(fresh, admin.create_token(OPS)[1], "tokens", "create", "--principal", "x")
    assert not_admin.returncode == 3
    actions = [(e.action, e.outcome) for e in admin.audit_log(limit=100)]
    assert ("create token", "allowed") in actions and ("revoke token", "allowed") in actions
    assert ("create token", "denied") in actions
    assert soon.expires_at is not None
