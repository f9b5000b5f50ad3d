"""The owners of run states, run rows and run errors (``run_states.py``, ``rows.py``): the
groups agree with the state machine and with the SQL written from them, and every path's
row names only real columns, the same ones for every row of a path."""

from __future__ import annotations

import datetime as dt

import pydantic

from jobsys.declare import jobs, workflows
from jobsys.store import hotsql, rows, run_states, schema
from jobsys.store.run_states import ALLOWED, RunState

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


class In(pydantic.BaseModel):
    n: int = 0


def _spec() -> jobs.JobSpec:
    return jobs.JobSpec("t.job", lambda p: p, In, In, queue="q", priority=3, tags=("b", "a"))


OWNER = {"principal": {"id": "alice", "tenant": "acme"}, "principal_id": "alice"}


def test_the_groups_are_the_state_machine_s() -> None:
    assert {s for s in RunState if not ALLOWED[s]} == run_states.TERMINAL
    assert set(run_states.sources(RunState.RUNNING)) == run_states.WAITING
    cancellable = set(run_states.sources(RunState.CANCELLED)) - {RunState.RUNNING}
    assert cancellable == run_states.CANCEL_AT_ONCE
    not_over = set(RunState) - run_states.TERMINAL - {RunState.BLOCKED}
    assert not_over == run_states.ACTIVE


def test_the_sql_of_a_group_names_its_states_in_order() -> None:
    assert run_states.sql_list(run_states.WAITING) == "('pending', 'retrying')"
    assert run_states.sql_list(run_states.WAITING) == hotsql._WAITING
    assert f"state IN {hotsql._WAITING}" in hotsql._CLAIM
    assert run_states.values(run_states.ACTIVE) == ["pending", "running", "retrying"]


def test_a_submitted_run_s_row() -> None:
    row = rows.new_run(_spec(), {"n": 1}, **OWNER, tenant="acme", now=NOW, tags=("c", "a"), delay=5)
    assert set(row) <= set(schema.runs.c.keys())
    assert row["state"] == "pending" and row["published_at"] == NOW
    assert row["tags"] == ["a", "b", "c"] and row["priority"] == 3
    assert row["next_attempt_at"] == NOW + dt.timedelta(seconds=5)
    assert "workflow_id" not in row and "fire_key" not in row
    blocked = rows.new_run(_spec(), {}, **OWNER, tenant="acme", now=NOW, blocked=True)
    assert blocked["state"] == "blocked" and blocked["published_at"] is None
    assert blocked.keys() == row.keys()


def test_a_delayed_run_s_row_waits_in_the_store_until_it_is_due() -> None:
    due = NOW + dt.timedelta(days=2)
    row = rows.new_run(_spec(), {}, **OWNER, tenant="acme", now=NOW, due=due, held=True)
    assert row["state"] == "pending" and row["published_at"] is None
    assert row["next_attempt_at"] == due and set(row) <= set(schema.runs.c.keys())
    assert row["waiting"]["reason"] == rows.DELAYED == "delayed"
    assert dt.datetime.fromisoformat(row["waiting"]["until"]) == due
    assert row["waiting"]["message"].startswith("delayed until ")
    soon = rows.new_run(_spec(), {}, **OWNER, tenant="acme", now=NOW, due=due)  # published
    assert soon["published_at"] == NOW and "waiting" not in soon
    blocked = rows.new_run(_spec(), {}, **OWNER, tenant="acme", now=NOW, due=due, held=True,
                           blocked=True)  # fmt: skip
    assert blocked["state"] == "blocked" and "waiting" not in blocked  # said when released


def test_a_fire_s_row_and_a_step_s_row() -> None:
    fire = rows.Fire("sch_1", 2, NOW, "scheduled", "sch_1@x")
    fired = rows.new_run(_spec(), {}, **OWNER, tenant="acme", now=NOW, published=False, fire=fire)
    assert set(fired) <= set(schema.runs.c.keys())
    assert fired["published_at"] is None and fired["fire_key"] == "sch_1@x"
    assert fired["schedule_version"] == 2 and "idempotency_key" not in fired
    step = rows.new_run(_spec(), {}, **OWNER, tenant="acme", now=NOW, workflow_id="wf_1")
    assert step["workflow_id"] == "wf_1" and set(step) <= set(schema.runs.c.keys())


def test_a_workflow_run_s_row() -> None:
    wf = workflows.Workflow("w", (workflows.Step("s", "t.job"),), timeout=60)
    row = rows.new_workflow_run(wf, {"name": "w"}, {}, **OWNER, tenant="acme", now=NOW)
    assert set(row) == set(schema.workflow_runs.c.keys()) - {"output", "error", "finished_at"}
    assert row["id"].startswith("wf_") and row["timeout_at"] == NOW + dt.timedelta(seconds=60)
    sealed = rows.new_workflow_run(
        wf, {"name": "w"}, {}, **OWNER, tenant="acme", now=NOW, sealed="x"
    )
    assert sealed["definition"] == {"name": "w", workflows.SEALED_KEY: "x"}


def test_a_run_error() -> None:
    named = rows.run_error("dependency", "DependencyFailed", "run x\x00 did not complete")
    assert named == {
        "type": "DependencyFailed",
        "message": "run x\\x00 did not complete",
        "reason": "dependency",
        "traceback": None,
    }
    try:
        raise ValueError("bad")
    except ValueError as exc:
        raised = rows.run_error("exception", exc, traceback=True)
        plain = rows.run_error("enqueue_error", exc, f"could not publish: {exc}")
    assert raised["type"] == "ValueError" and raised["message"] == "bad"
    assert "Traceback" in raised["traceback"] and "ValueError: bad" in raised["traceback"]
    assert plain["message"] == "could not publish: bad" and plain["traceback"] is None
