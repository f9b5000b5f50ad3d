"""A run's history (README "Run history"): every change of state and every attempt, written by
the database's triggers in the transaction of the change, read through the Python client,
the CLI, the HTTP API's route and the MCP tool alike; who cancelled or retried a run; a
deleted run's events go with it; ``ctx.logs()`` reads back the run's own log lines."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from jobsys.base import errors
from jobsys.service.client import SubmitOptions
from jobsys.store import events, schema
from jobsys.store.runs import RunState, RunStore
from tests import cli_runner
from tests.cluster import Cluster
from tests.integration.test_store import run_row

pytestmark = pytest.mark.integration


def test_a_run_that_fails_twice_then_succeeds_shows_three_attempts_with_both_errors(
    shared: Cluster,
) -> None:
    c = shared.client
    run_id = c.submit("tests.flaky_twice", {"seconds": 0.05})
    record = c.wait(run_id, 60)
    assert record.state is RunState.COMPLETED, record.error
    # The third attempt read back what the two before it logged (ctx.logs()).
    assert record.output == {"earlier": ["attempt 1 begins", "attempt 2 begins"]}

    history = c.events(run_id)
    moves = [(e.from_state, e.to_state, e.attempt) for e in history.events if e.kind == "state"]
    assert history.events[0].kind == "created" and history.events[0].to_state == "pending"
    assert history.events[0].actor == c.principal.id
    assert moves == [
        ("pending", "running", 1),
        ("running", "retrying", 1),
        ("retrying", "running", 2),
        ("running", "retrying", 2),
        ("retrying", "running", 3),
        ("running", "completed", 3),
    ]
    tried = history.attempts
    assert [a.attempt for a in tried] == [1, 2, 3]
    assert [a.outcome for a in tried] == ["retrying", "retrying", "completed"]
    assert tried[0].error is not None and tried[0].error["type"] == "ConnectionError"
    assert "first attempt" in tried[0].error["message"]
    assert tried[1].error is not None and tried[1].error["type"] == "TimeoutError"
    assert tried[2].error is None
    for a in tried:  # timings: each attempt ran the body's 0.05 s, one after another
        assert a.duration is not None and 0.04 <= a.duration < 30, a
        assert a.worker and a.worker.startswith("w1")
    assert tried[0].ended_at <= tried[1].started_at <= tried[2].started_at  # type: ignore[operator]
    assert all(e.at <= dt.datetime.now(dt.UTC) for e in history.events)

    # The same history through the CLI.
    shown = cli_runner.run(shared.env, ["runs", "events", run_id, "--json"])
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data == json.loads(json.dumps(history.to_json()))
    table = cli_runner.run(shared.env, ["runs", "events", run_id])
    assert table.returncode == 0, table.stderr
    assert "running -> retrying" in table.stdout and "ConnectionError" in table.stdout
    assert "attempt 3: completed after" in table.stdout


def test_who_cancelled_and_who_retried_a_run_is_kept(shared: Cluster) -> None:
    c = shared.client
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    run_id = c.submit("tests.effect", {}, SubmitOptions(start_at=later))
    c.cancel(run_id)
    again = c.retry(run_id)
    history = c.events(run_id).events
    kinds = [(e.kind, e.to_state, (e.detail or {}).get("action")) for e in history]
    assert kinds == [
        ("created", "pending", None),
        ("action", None, "cancel_requested"),
        ("state", "cancelled", None),
        ("action", None, "retried"),
    ]
    assert history[1].actor == history[3].actor == c.principal.id
    assert history[3].detail == {"action": "retried", "run_id": again}
    assert history[2].error is not None and history[2].error["reason"] == "cancelled"
    assert c.wait(again, 60).state is RunState.COMPLETED


def test_an_unknown_run_has_no_history_to_show(shared: Cluster) -> None:
    with pytest.raises(errors.RunNotFound):
        shared.client.events("no-such-run")
    shown = cli_runner.run(shared.env, ["runs", "events", "no-such-run"])
    assert shown.returncode != 0 and "no-such-run" in shown.stderr


def test_a_deleted_run_takes_its_events_with_it(store: RunStore) -> None:
    kept, gone = run_row(), run_row()
    assert store.create(kept) is not None and store.create(gone) is not None
    with store.engine.begin() as conn:
        conn.execute(schema.runs.delete().where(schema.runs.c.id == gone["id"]))
    assert [e.kind for e in store.events(kept["id"])] == ["created"]
    assert store.events(gone["id"]) == []
    with store.engine.connect() as conn:
        left = conn.execute(sa.select(schema.run_events.c.run_id).distinct()).scalars()
        assert set(left) == {kept["id"]}
    assert events.attempts(store.events(kept["id"])) == []


def test_an_event_id_is_never_given_twice(store: RunStore) -> None:
    """The newest events deleted with their run, the next event's id is still past every id
    seen before (the webhook notifier's cursor has passed them: a reused id is never
    notified)."""
    first, newest = run_row(), run_row()
    assert store.create(first) is not None and store.create(newest) is not None
    E, R = schema.run_events, schema.runs
    with store.engine.begin() as conn:  # one more event of the newest run: a milestone
        conn.execute(R.update().where(R.c.id == newest["id"]).values(progress={"pct": 50}))
    with store.engine.connect() as conn:
        seen = conn.execute(sa.select(sa.func.max(E.c.id))).scalar_one()
        assert (
            conn.execute(sa.select(E.c.run_id).where(E.c.id == seen)).scalar_one() == (newest["id"])
        )
    with store.engine.begin() as conn:
        conn.execute(R.delete().where(R.c.id == newest["id"]))
    made = run_row()
    assert store.create(made) is not None
    [event] = store.events(made["id"])
    assert event.kind == "created" and event.id > seen
