"""Run event ids are never reused on SQLite: ``jobsys_run_events`` is rebuilt with
``AUTOINCREMENT``. Without it SQLite gives a new row the largest id + 1, so deleting the newest
events (their run deleted) let the next event take an id the webhook notifier's cursor had
already passed, and that event was never notified. The rows keep their ids; the table's
sequence starts past every id the notifier may have seen (the cursor, the subscriptions'
starting points, the deliveries). The triggers that write the events are dropped while the
table is rebuilt and made again as they were. PostgreSQL's ``SERIAL`` never reuses an id:
nothing changes there.

Revision 0022, after 0021. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its table, index and triggers are
written out here, never taken from ``schema.py`` or ``event_triggers.py``.
"""

from __future__ import annotations

from alembic import op

revision = "0022"
down_revision = "0021"

_COLUMNS = "run_id, at, kind, from_state, to_state, attempt, worker, actor, error"
_ALL = f"id, {_COLUMNS}, detail"

TRIGGERS = (
    "jobsys_run_events_created",
    "jobsys_run_events_state",
    "jobsys_run_events_deleted",
    "jobsys_run_events_progress",
)

REBUILD = (
    "CREATE TABLE jobsys_run_events_v22 ("
    "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "
    "run_id VARCHAR(32) NOT NULL, "
    "at FLOAT NOT NULL, "
    "kind VARCHAR(16) NOT NULL, "
    "from_state VARCHAR(16), "
    "to_state VARCHAR(16), "
    "attempt INTEGER NOT NULL, "
    "worker VARCHAR(255), "
    "actor VARCHAR(200), "
    "error JSON, "
    "detail JSON)",
    f"INSERT INTO jobsys_run_events_v22 ({_ALL}) SELECT {_ALL} FROM jobsys_run_events",
    "DROP TABLE jobsys_run_events",
    "ALTER TABLE jobsys_run_events_v22 RENAME TO jobsys_run_events",
    "CREATE INDEX ix_jobsys_run_events_run ON jobsys_run_events (run_id, id)",
    # Past every id already given out that the notifier may have seen, deleted or not.
    "DELETE FROM sqlite_sequence WHERE name = 'jobsys_run_events'",
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'jobsys_run_events', max("
    "(SELECT coalesce(max(id), 0) FROM jobsys_run_events), "
    "(SELECT coalesce(max(event_id), 0) FROM jobsys_notify_cursor), "
    "(SELECT coalesce(max(after_event), 0) FROM jobsys_subscriptions), "
    "(SELECT coalesce(max(event_id), 0) FROM jobsys_deliveries))",
)

SQLITE_TRIGGERS = (
    "CREATE TRIGGER jobsys_run_events_created AFTER INSERT ON jobsys_runs "
    f"BEGIN INSERT INTO jobsys_run_events ({_COLUMNS}) VALUES (NEW.id, "
    "(julianday('now') - 2440587.5) * 86400.0, 'created', NULL, NEW.state, NEW.attempts, "
    "NULL, NEW.principal_id, NULL); END",
    "CREATE TRIGGER jobsys_run_events_state AFTER UPDATE OF state ON jobsys_runs "
    f"WHEN OLD.state IS NOT NEW.state BEGIN INSERT INTO jobsys_run_events ({_COLUMNS}) "
    "VALUES (NEW.id, (julianday('now') - 2440587.5) * 86400.0, 'state', OLD.state, NEW.state, "
    "NEW.attempts, NEW.worker, NULL, CASE WHEN NEW.state IN ('retrying', 'failed', "
    "'cancelled') THEN NEW.error END); END",
    "CREATE TRIGGER jobsys_run_events_deleted AFTER DELETE ON jobsys_runs "
    "BEGIN DELETE FROM jobsys_run_events WHERE run_id = OLD.id; END",
    "CREATE TRIGGER jobsys_run_events_progress AFTER UPDATE OF progress ON jobsys_runs "
    "WHEN CAST(COALESCE(json_extract(NEW.progress, '$.pct'), 0) / 25 AS INTEGER) > "
    "CAST(COALESCE(json_extract(OLD.progress, '$.pct'), 0) / 25 AS INTEGER) "
    "BEGIN INSERT INTO jobsys_run_events (run_id, at, kind, attempt, worker, detail) VALUES "
    "(NEW.id, (julianday('now') - 2440587.5) * 86400.0, 'progress', NEW.attempts, NEW.worker, "
    "json_object('milestone', 25 * CAST(json_extract(NEW.progress, '$.pct') / 25 AS INTEGER)"
    ")); END",
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for name in TRIGGERS:
        bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
    for sql in (*REBUILD, *SQLITE_TRIGGERS):
        bind.exec_driver_sql(sql)
