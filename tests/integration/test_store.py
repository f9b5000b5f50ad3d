"""The run store on the configured database: guarded transitions, the reaper (R5, done
deterministically with fabricated rows) and the worker pipeline without a broker."""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

import pydantic
import pytest
import sqlalchemy as sa

from jobsys import RetryPolicy, job
from jobsys.base import errors
from jobsys.store import hotsql, migrations, records, runs, schema
from jobsys.store.runs import RunState
from jobsys.worker import context, execute
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def make_run(store: runs.RunStore, **values: Any) -> runs.RunRecord:
    row = {
        "id": runs.new_run_id(),
        "job": "t.job",
        "job_version": "1",
        "queue": "jobs",
        "priority": 5,
        "input": {"x": 1},
        "max_attempts": 3,
        "timeout": 10.0,
        "principal": {"id": "p"},
        "principal_id": "p",
        "tenant": "default",
        **values,
    }
    record = store.create(row, now=NOW)
    assert record is not None
    return record


@pytest.mark.backend_independent
def test_state_machine_allows_only_documented_moves() -> None:
    assert runs.can_move(RunState.PENDING, RunState.RUNNING)
    assert runs.can_move(RunState.RUNNING, RunState.RETRYING)
    assert runs.can_move(RunState.RETRYING, RunState.RUNNING)
    for terminal in runs.TERMINAL:
        assert not any(runs.can_move(terminal, s) for s in RunState)
    assert not runs.can_move(RunState.PENDING, RunState.COMPLETED)
    assert sorted(runs.sources(RunState.RUNNING)) == ["pending", "retrying"]


def test_schema_is_versioned_and_migration_is_idempotent(store: runs.RunStore) -> None:
    assert migrations.migrate(store.engine) == schema.LATEST
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(schema.schema_version.c.version)).scalar() == schema.LATEST
    with store.engine.begin() as conn:  # as a newer jobsys left it
        newer = f"{schema.LATEST + 1:04d}"
        conn.execute(sa.text(f"UPDATE {schema.VERSION_TABLE} SET version_num = '{newer}'"))
    with pytest.raises(errors.SchemaTooNew):
        migrations.migrate(store.engine)


LATER_TABLES = {
    "jobsys_workers",
    "jobsys_run_events",
    "jobsys_pauses",
    "jobsys_run_tokens",
    "jobsys_subscriptions",
    "jobsys_deliveries",
    "jobsys_notify_cursor",
}
"""Tables made by revisions after 0011 that their migrations make again (heartbeats, run
history, pauses, run tokens, webhook subscriptions; 0020's embeddings are made only if
missing)."""


def test_a_store_at_version_11_gets_the_waiting_column(store: runs.RunStore) -> None:
    with store.engine.begin() as conn:  # the tables as version 11 left them
        conn.execute(sa.text("ALTER TABLE jobsys_runs DROP COLUMN waiting"))
        # the tables of the revisions after 0011 (0013 on), whose migrations make them again
        later = set(sa.inspect(conn).get_table_names()) & LATER_TABLES
        for table in sorted(later):
            conn.execute(sa.text(f"DROP TABLE {table}"))
        conn.execute(sa.text(f"UPDATE {schema.VERSION_TABLE} SET version_num = '0011'"))
    assert migrations.migrate(store.engine) == 11
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("jobsys_runs")}
    assert "waiting" in columns
    r = make_run(store)
    assert store.mark_waiting(r.id, 1, {"reason": "no_worker", "message": "m"})
    assert store.get(r.id).waiting == {"reason": "no_worker", "message": "m"}


def test_why_a_run_waits_is_kept_while_it_waits_and_cleared_when_it_starts_or_ends(
    store: runs.RunStore,
) -> None:
    why = {"reason": "no_worker", "message": "no live worker knows job 't.job'"}
    r = make_run(store)
    assert not store.mark_waiting(r.id, 2, why)  # another message's token: not this one's
    assert store.mark_waiting(r.id, 1, why)
    assert store.get(r.id).waiting == why
    assert store.claim(r.id, dispatch=1, lease=5, timeout=10) is not None
    assert store.get(r.id).waiting is None  # the claim (hot path) clears it
    assert not store.mark_waiting(r.id, 1, why)  # a running run waits for nothing
    cancelled = make_run(store)
    assert store.mark_waiting(cancelled.id, None, why)
    assert store.request_cancel(cancelled.id).waiting is None
    failed = make_run(store)
    assert store.mark_waiting(failed.id, None, why)
    assert store.fail(failed.id, None, {"type": "X", "message": "m"})
    assert store.get(failed.id).waiting is None


def test_claim_is_guarded_by_state_and_message_token(store: runs.RunStore) -> None:
    r = make_run(store)
    assert store.claim(r.id, dispatch=2, lease=5, timeout=10) is None  # wrong token
    claim = store.claim(r.id, dispatch=1, lease=5, timeout=10, now=NOW)
    assert claim is not None and claim.attempt == 1
    assert store.claim(r.id, dispatch=1, lease=5, timeout=10) is None  # duplicate message
    assert store.complete(r.id, 1, {"y": 2})
    assert not store.complete(r.id, 1, {"y": 3})  # a late duplicate cannot overwrite
    assert not store.fail(r.id, 1, {"type": "X"})
    record = store.get(r.id)
    assert record.state is RunState.COMPLETED and record.output == {"y": 2}
    assert record.attempts == 1 and record.finished_at is not None


def test_retry_moves_the_token_so_the_old_message_is_stale(store: runs.RunStore) -> None:
    r = make_run(store)
    assert store.claim(r.id, 1, 5, 10)
    token = store.schedule_retry(r.id, 1, {"type": "E"}, delay=1.0)
    assert token == 2
    assert store.get(r.id).state is RunState.RETRYING
    assert store.claim(r.id, 1, 5, 10) is None
    claim = store.claim(r.id, 2, 5, 10)
    assert claim is not None and claim.attempt == 2


def test_reaper_rescues_and_fails_by_lease_and_attempts(store: runs.RunStore) -> None:
    """R5 (Oban's lifeline test): rows with heartbeats now-3 s, now-7 s and now-8 s, lease 5 s."""
    rows = []
    for age, max_attempts in ((3, 3), (7, 3), (8, 1)):
        r = make_run(store, max_attempts=max_attempts, timeout=60.0)
        started = NOW - dt.timedelta(seconds=age)
        assert store.claim(r.id, 1, lease=5, timeout=60, now=started)
        rows.append(r.id)
    fresh, rescued, exhausted = rows
    result = store.reap(NOW, max_deliveries=3, hard_grace=1)
    assert [r.id for r in result.requeued] == [rescued]
    assert result.failed == [exhausted]
    assert store.get(fresh).state is RunState.RUNNING
    again = store.get(rescued)
    assert again.state is RunState.PENDING and again.dispatch == 2 and again.lost == 1
    failed = store.get(exhausted)
    assert failed.state is RunState.FAILED and failed.error["reason"] == "worker_lost"  # type: ignore[index]
    assert not store.complete(rescued, 1, {"late": True})  # the old attempt is rejected
    assert store.claim(rescued, 2, 5, 60) is not None


def test_reaper_fails_runs_past_their_deadline_as_timeouts(store: runs.RunStore) -> None:
    r = make_run(store, timeout=2.0)
    assert store.claim(r.id, 1, lease=5, timeout=2, now=NOW - dt.timedelta(seconds=10))
    result = store.reap(NOW, max_deliveries=3, hard_grace=1)
    assert result.failed == [r.id]
    assert store.get(r.id).error["reason"] == "timeout"  # type: ignore[index]


def test_reaper_looking_late_calls_a_run_lost_before_its_deadline_lost_not_timed_out(
    store: runs.RunStore,
) -> None:
    """A worker killed 35 s into a 60 s run, reaped 70 s in: the run is retried, not failed
    as a timeout; one still renewing its lease at the deadline did time out."""
    lost, overran = make_run(store, timeout=60.0), make_run(store, timeout=60.0)
    start = NOW - dt.timedelta(seconds=70)
    for r in (lost, overran):
        assert store.claim(r.id, 1, lease=30, timeout=60, now=start)
    store.heartbeat([(lost.id, 1)], lease=30, now=start + dt.timedelta(seconds=30))
    store.heartbeat([(overran.id, 1)], lease=30, now=start + dt.timedelta(seconds=60))
    result = store.reap(
        start + dt.timedelta(seconds=100), max_deliveries=3, hard_grace=1, lease=30, heartbeat=10
    )
    assert [r.id for r in result.requeued] == [lost.id]
    assert result.failed == [overran.id]
    assert store.get(lost.id).state is RunState.PENDING
    assert store.get(overran.id).error["reason"] == "timeout"  # type: ignore[index]


def test_cancel_waiting_run_at_once_and_flag_a_running_one(store: runs.RunStore) -> None:
    waiting, running = make_run(store), make_run(store)
    assert store.request_cancel(waiting.id).state is RunState.CANCELLED
    assert store.claim(waiting.id, 1, 5, 10) is None
    assert store.claim(running.id, 1, 5, 10)
    record = store.request_cancel(running.id)
    assert record.state is RunState.RUNNING and record.cancel_requested
    assert store.heartbeat([(running.id, 1)], lease=5) == {running.id}
    with pytest.raises(errors.InvalidTransition):
        store.request_cancel(waiting.id)
    with pytest.raises(errors.RunNotFound):
        store.request_cancel("nope")


def test_idempotency_key_is_unique_per_tenant(store: runs.RunStore) -> None:
    make_run(store, idempotency_key="k1")
    assert store.create({**run_row(), "idempotency_key": "k1"}) is None
    assert store.create({**run_row(), "idempotency_key": "k1", "tenant": "other"}) is not None


def run_row() -> dict[str, Any]:
    """A new run row with every column a run must have (tests of the store)."""
    return {
        "id": runs.new_run_id(),
        "job": "t.job",
        "job_version": "1",
        "queue": "jobs",
        "priority": 5,
        "input": {},
        "max_attempts": 3,
        "timeout": 10.0,
        "principal": {"id": "p"},
        "principal_id": "p",
        "tenant": "default",
    }


# --- execute.run without a broker -----------------------------------------------------------


class In(pydantic.BaseModel):
    x: int


class Out(pydantic.BaseModel):
    y: int


@job("t.job", retry=RetryPolicy(max_attempts=2, initial_backoff=0.5, jitter=0))
def t_job(data: In, ctx: context.JobContext) -> Out:
    ctx.log(f"x={data.x}")
    if data.x < 0:
        raise ValueError("negative")
    if data.x == 99:
        return {"y": "nope"}  # type: ignore[return-value]
    return Out(y=data.x * 2)


def _deliver(
    store: runs.RunStore, x: int, dispatch: int = 1, run_id: str | None = None
) -> tuple[str, execute.Outcome]:
    # As a client submits it: the run carries its job's limits.
    run_id = run_id or make_run(store, input={"x": x}, max_attempts=2, timeout=60.0).id
    tracker = context.Tracker(store, lease=5, heartbeat=1, cancel_grace=1)
    delivery = execute.Delivery(run_id, dispatch)
    try:
        return run_id, execute.run(delivery, t_job, store, tracker, execute.Limits(lease=5))
    finally:
        tracker.stop()


def test_execute_records_success_and_logs(store: runs.RunStore) -> None:
    run_id, outcome = _deliver(store, 21)
    assert outcome.kind is execute.Kind.COMPLETED and outcome.output == {"y": 42}
    assert store.get(run_id).output == {"y": 42}
    assert [line.message for line in store.logs(run_id)] == ["x=21"]
    _, duplicate = _deliver(store, 21, run_id=run_id)
    assert duplicate.kind is execute.Kind.STALE


def test_execute_retries_then_fails_when_attempts_run_out(store: runs.RunStore) -> None:
    run_id, first = _deliver(store, -1)
    assert first.kind is execute.Kind.RETRY and first.delay == 0.5 and first.dispatch == 2
    _, second = _deliver(store, -1, dispatch=2, run_id=run_id)
    assert second.kind is execute.Kind.FAILED
    record = store.get(run_id)
    assert record.state is RunState.FAILED and record.attempts == 2
    assert record.error["type"] == "ValueError" and "negative" in record.error["traceback"]  # type: ignore[index]


def test_execute_invalid_output_fails_without_retry(store: runs.RunStore) -> None:
    run_id, outcome = _deliver(store, 99)
    assert outcome.kind is execute.Kind.FAILED
    assert store.get(run_id).error["reason"] == "output_validation"  # type: ignore[index]


def test_tracker_renews_leases_while_the_body_runs(store: runs.RunStore) -> None:
    r = make_run(store)
    claim = store.claim(r.id, 1, lease=1, timeout=10)
    assert claim is not None
    tracker = context.Tracker(store, lease=1, heartbeat=0.2, cancel_grace=1, tick=0.05)
    ctx = context.JobContext(r.id, "t.job", 1, pydantic_principal(), {})
    first = store.get(r.id).lease_expires_at
    with tracker.holding(ctx):
        ctx.progress(50, message="half")

        def renewed() -> runs.RunRecord | NotYet:
            record = store.get(r.id)
            expires = record.lease_expires_at
            if expires and first and expires > first and record.progress:
                return record
            return NotYet(f"lease until {expires} (first {first}), progress {record.progress}")

        record = eventually(renewed, 10, 0.05, what="the lease renewed and the progress written")
    assert record.lease_expires_at is not None and first is not None
    assert record.lease_expires_at > first
    assert record.progress is not None and record.progress["pct"] == 50
    tracker.stop()
    assert tracker._thread is not None and not tracker._thread.is_alive()


def pydantic_principal() -> Any:
    from jobsys.declare.permissions import Principal

    return Principal(id="p")


@pytest.mark.backend_independent
def test_hot_path_claims_from_the_states_the_machine_allows() -> None:
    waiting = ", ".join(f"'{s}'" for s in runs.sources(RunState.RUNNING))
    assert f"({waiting})" == hotsql._WAITING


def test_hot_path_writes_read_back_like_the_rest_of_the_store(store: runs.RunStore) -> None:
    """claim and complete bypass SQLAlchemy's types: times, JSON and duration must read back
    exactly as SQLAlchemy's own writes do."""
    r = make_run(store, meta={"k": [1, "two"]})
    claim = store.claim(r.id, dispatch=1, lease=5, timeout=10, now=NOW)
    assert claim == runs.Claim(
        r.id,
        1,
        {"k": [1, "two"]},
        input={"x": 1},
        principal={"id": "p"},
        timeout=10.0,
        max_attempts=3,
    )
    running = store.get(r.id)
    assert running.started_at == NOW
    assert running.lease_expires_at == NOW + dt.timedelta(seconds=5)
    assert running.deadline_at == NOW + dt.timedelta(seconds=10)
    assert running.worker == store.worker_name
    assert store.complete(r.id, 1, {"out": "ü", "n": None})
    done = store.get(r.id)
    assert done.output == {"out": "ü", "n": None}
    assert done.finished_at is not None and done.finished_at > NOW
    assert done.duration == pytest.approx((done.finished_at - NOW).total_seconds(), abs=1e-3)
    # Runs the hot path wrote sort and filter with the ones SQLAlchemy wrote.
    listed = store.select(runs.RunFilter(state=RunState.COMPLETED))
    assert [x.id for x in listed] == [r.id]


def test_a_record_read_on_the_hot_path_equals_sqlalchemys(store: runs.RunStore) -> None:
    """``get`` reads on the driver: every column must come back as SQLAlchemy reads it."""
    r = make_run(
        store,
        input={"nested": {"list": [1, 2.5, None, "ü"], "flag": True}, "big": 2**63},
        meta={"retry": {"base": 1.0}},
        tags=["a", "b"],
        has_dependents=True,
    )
    store.claim(r.id, dispatch=1, lease=5, timeout=10, now=NOW)
    store.write_progress(r.id, {"pct": 40.0, "message": "almost"})
    store.request_cancel(r.id)
    store.fail(r.id, 1, {"type": "Boom", "message": "bad", "details": [1, {"k": None}]})
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(schema.runs).where(schema.runs.c.id == r.id)).one()
    through_sqlalchemy = records.record(row)
    hot = store.get(r.id)
    assert hot == through_sqlalchemy
    assert hot.cancel_requested is True and hot.has_dependents is True
    assert hot.started_at == NOW and hot.finished_at is not None
    assert hot.finished_at.tzinfo is dt.UTC and hot.input["big"] == 2**63
    assert store.get(r.id, "default") == through_sqlalchemy
    with pytest.raises(errors.RunNotFound):
        store.get(r.id, "another-tenant")
    with pytest.raises(errors.RunNotFound):
        store.get("no-such-run")


@pytest.mark.skipif(
    not os.environ.get("JOBSYS_TEST_DATABASE_URL"),
    reason="needs PostgreSQL (JOBSYS_TEST_DATABASE_URL): a SQLite file has no server that "
    "could drop the connection; .ci/run runs it against PostgreSQL",
)
def test_hot_path_replaces_a_connection_the_server_dropped(store: runs.RunStore) -> None:
    assert store.engine.dialect.name == "postgresql"
    first, second = make_run(store), make_run(store)
    assert store.claim(first.id, dispatch=1, lease=5, timeout=10) is not None
    with store.engine.begin() as conn:  # what a server restart does to the connection
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert store.claim(second.id, dispatch=1, lease=5, timeout=10) is not None
    assert store.complete(second.id, 1, None)
    assert store.get(second.id).state is RunState.COMPLETED


def test_keyword_search_finds_runs_by_error_and_logs(store: runs.RunStore) -> None:
    failed, logged, quiet = make_run(store), make_run(store), make_run(store)
    store.claim(failed.id, dispatch=1, lease=5, timeout=10)
    store.fail(failed.id, 1, {"type": "Fatal", "message": "Upstream API refused the token"})
    store.claim(logged.id, dispatch=1, lease=5, timeout=10)
    store.write_logs(
        [
            {"run_id": logged.id, "attempt": 1, "at": NOW, "message": "fetched 12 invoices"},
            {"run_id": logged.id, "attempt": 1, "at": NOW, "message": "sent to ACME Corp"},
        ]
    )
    store.complete(logged.id, 1, None)

    def found(text: str, jobs: tuple[str, ...] = ()) -> set[str]:
        return {r.id for r in store.select(runs.RunFilter(text=text, text_jobs=jobs))}

    assert found("refused token") == {failed.id}  # all keywords, any order, any case
    assert found("UPSTREAM") == {failed.id}
    assert found("fatal") == {failed.id}  # the error type too
    assert found("acme invoices") == {logged.id}  # words from two log lines of one batch
    assert found("refused acme") == set()  # every keyword must match one entry
    assert found("refuse") == set()  # whole words
    assert found("!!!") == set()  # no keyword: nothing, not everything
    assert found('" OR * NEAR(') == set()  # user text is never FTS syntax
    assert found("nothing here", jobs=("t.job",)) == {failed.id, logged.id, quiet.id}
    other = make_run(store, job="t.other", tenant="b")
    assert found("nothing", jobs=("t.other",)) == {other.id}
    in_b = store.select(runs.RunFilter(text="refused", tenant="b"))
    assert in_b == []  # combined with the tenant filter in the same query
    store.request_cancel(quiet.id)
    assert found("cancelled before") == {quiet.id}


@job("t.forever", retry=RetryPolicy(max_attempts=2, initial_backoff=0.5, jitter=0))
def t_forever(data: In, ctx: context.JobContext) -> Out:
    ctx.log("started")
    try:
        while True:
            time.sleep(0.02)
    except Exception:  # a body that swallows its errors does not swallow a hand-back
        return Out(y=-1)


def test_a_stopping_worker_hands_back_a_run_past_the_grace(store: runs.RunStore) -> None:
    """The worker is stopping (``stop_within``): a body still running at the end of the grace
    gets ``HandBack``; the run is pending again with a new token, the attempt given back, and
    the old attempt can no longer end it."""
    import signal

    r = make_run(store, job="t.forever", input={"x": 1}, max_attempts=2, timeout=60.0)
    tracker = context.Tracker(store, lease=5, heartbeat=1, cancel_grace=1, tick=0.05)
    previous = signal.getsignal(context.CANCEL_SIGNAL)
    tracker.install_cancel_handler()
    tracker.stop_within(0.3)
    started = time.monotonic()
    try:
        delivery = execute.Delivery(r.id, 1)
        outcome = execute.run(delivery, t_forever, store, tracker, execute.Limits(lease=5))
    finally:
        tracker.stop()
        signal.signal(context.CANCEL_SIGNAL, previous)
    assert 0.3 <= time.monotonic() - started < 5
    assert outcome.kind is execute.Kind.HANDED_BACK and outcome.dispatch == 2
    record = store.get(r.id)
    assert record.state is RunState.PENDING and record.lease_expires_at is None
    assert (record.dispatch, record.attempts, record.max_attempts) == (2, 1, 3)
    messages = [line.message for line in store.logs(r.id)]
    assert messages[0] == "started" and messages[-1].startswith("handed back")
    assert not store.complete(r.id, 1, {"y": 1})  # the old attempt is stale
    assert store.hand_back(r.id, 1, "again") is None
    claim = store.claim(r.id, 2, lease=5, timeout=60)  # the next worker's delivery
    assert claim is not None and claim.attempt == 2 and claim.max_attempts == 3
    assert store.complete(r.id, 2, {"y": 2})


def test_a_run_asked_to_cancel_is_not_handed_back_but_cancelled(store: runs.RunStore) -> None:
    """Pending with its cancel asked, no worker would ever claim it: it ends cancelled."""
    r = make_run(store)
    assert store.claim(r.id, 1, lease=5, timeout=10) is not None
    store.request_cancel(r.id)
    record = store.hand_back(r.id, 1, "handed back")
    assert record is not None and record.state is RunState.CANCELLED
    assert record.error is not None and record.error["reason"] == "cancelled"


class LostAnswer(Exception):
    """A connection dropped after the server took the statement, before its answer came."""


class AnswerLostOnce:
    """A hot-path connection whose next statement takes effect (and is committed), then
    raises ``LostAnswer`` as if the connection had dropped before the answer arrived."""

    def __init__(self, conn: Any, armed: list[bool]) -> None:
        self.conn, self.armed = conn, armed

    def cursor(self) -> Any:
        cursor, armed, conn = self.conn.cursor(), self.armed, self.conn

        class Cursor:
            def execute(self, sql: str, params: Any) -> None:
                cursor.execute(sql, params)
                if armed[0]:
                    armed[0] = False
                    if cursor.description:  # (SQLite commits once RETURNING rows are read)
                        cursor.fetchall()
                    conn.commit()
                    raise LostAnswer()

            def __getattr__(self, name: str) -> Any:
                return getattr(cursor, name)

        return Cursor()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_a_claim_or_completion_whose_answer_was_lost_is_still_ours(
    store: runs.RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after the claim (or the completion) took effect: the hot path
    runs it again on a new connection, which changes nothing, and reads back that the row is
    this claim's (or completion's), instead of taking its own work for a stale message."""
    hot = store._hot
    armed = [False]
    acquire = hot._acquire
    monkeypatch.setattr(hot, "_disconnects", (LostAnswer,))
    monkeypatch.setattr(hot, "_acquire", lambda: AnswerLostOnce(acquire(), armed))
    monkeypatch.setattr(hot, "_discard", lambda conn: hot._release(conn.conn))
    r = make_run(store)
    armed[0] = True
    claim = store.claim(r.id, dispatch=1, lease=5, timeout=10)
    assert not armed[0], "the answer was not lost: nothing tested"
    assert claim is not None and claim.attempt == 1 and claim.input == {"x": 1}
    assert store.claim(r.id, dispatch=1, lease=5, timeout=10) is None  # a true duplicate
    armed[0] = True
    assert store.complete(r.id, 1, {"y": 2})
    assert not armed[0]
    record = store.get(r.id)
    assert record.state is RunState.COMPLETED and record.attempts == 1
    assert record.output == {"y": 2}
    assert not store.complete(r.id, 1, {"y": 3})  # a late duplicate still changes nothing
