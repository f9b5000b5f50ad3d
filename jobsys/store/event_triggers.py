"""The triggers that write a run's history (``events.py``): their SQL per dialect, installed in a
new database by ``schema.create_all`` (revision 0015 installs them in others). Kept apart from
``events.py``, which reads the history through ``schema``'s tables, so that ``schema`` can
install them without importing its own reader."""

from __future__ import annotations

import sqlalchemy as sa

TABLE = "jobsys_run_events"
ERROR_STATES = ("retrying", "failed", "cancelled")
"""A run that went to one of these states has an error: its event keeps it."""

_ERROR_STATES_SQL = ", ".join(f"'{s}'" for s in ERROR_STATES)
_COLUMNS = "run_id, at, kind, from_state, to_state, attempt, worker, actor, error"

SQLITE_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS jobsys_run_events_created AFTER INSERT ON jobsys_runs "
    f"BEGIN INSERT INTO {TABLE} ({_COLUMNS}) VALUES (NEW.id, "
    "(julianday('now') - 2440587.5) * 86400.0, 'created', NULL, NEW.state, NEW.attempts, "
    "NULL, NEW.principal_id, NULL); END",
    "CREATE TRIGGER IF NOT EXISTS jobsys_run_events_state AFTER UPDATE OF state ON jobsys_runs "
    f"WHEN OLD.state IS NOT NEW.state BEGIN INSERT INTO {TABLE} ({_COLUMNS}) VALUES (NEW.id, "
    "(julianday('now') - 2440587.5) * 86400.0, 'state', OLD.state, NEW.state, NEW.attempts, "
    f"NEW.worker, NULL, CASE WHEN NEW.state IN ({_ERROR_STATES_SQL}) THEN NEW.error END); END",
    "CREATE TRIGGER IF NOT EXISTS jobsys_run_events_deleted AFTER DELETE ON jobsys_runs "
    f"BEGIN DELETE FROM {TABLE} WHERE run_id = OLD.id; END",
    # Added by revision 0021: a run's progress crossing a quarter (25, 50, 75, 100 %).
    "CREATE TRIGGER IF NOT EXISTS jobsys_run_events_progress AFTER UPDATE OF progress ON "
    "jobsys_runs WHEN CAST(COALESCE(json_extract(NEW.progress, '$.pct'), 0) / 25 AS INTEGER) > "
    "CAST(COALESCE(json_extract(OLD.progress, '$.pct'), 0) / 25 AS INTEGER) "
    f"BEGIN INSERT INTO {TABLE} (run_id, at, kind, attempt, worker, detail) VALUES (NEW.id, "
    "(julianday('now') - 2440587.5) * 86400.0, 'progress', NEW.attempts, NEW.worker, "
    "json_object('milestone', 25 * CAST(json_extract(NEW.progress, '$.pct') / 25 AS INTEGER)"
    ")); END",
)

MILESTONE = 25
"""Progress events are written when a run's progress crosses a multiple of this (percent)."""

PROGRESS_POSTGRESQL = (
    # Added by revision 0021: a run's progress crossing a quarter (25, 50, 75, 100 %). Only
    # an update of ``progress`` runs it: a run that reports none costs nothing.
    "CREATE OR REPLACE FUNCTION jobsys_run_progress_event() RETURNS trigger LANGUAGE plpgsql "
    "AS $$ BEGIN "
    f"INSERT INTO {TABLE} (run_id, at, kind, attempt, worker, detail) VALUES (NEW.id, "
    "extract(epoch FROM clock_timestamp()), 'progress', NEW.attempts, NEW.worker, "
    "jsonb_build_object('milestone', 25 * floor((NEW.progress->>'pct')::float / 25)::int)); "
    "RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS jobsys_run_events_progress ON jobsys_runs",
    "CREATE TRIGGER jobsys_run_events_progress AFTER UPDATE OF progress ON jobsys_runs "
    "FOR EACH ROW WHEN (floor(COALESCE((NEW.progress->>'pct')::float, 0) / 25) > "
    "floor(COALESCE((OLD.progress->>'pct')::float, 0) / 25)) "
    "EXECUTE FUNCTION jobsys_run_progress_event()",
)

POSTGRESQL_TRIGGERS = (
    "CREATE OR REPLACE FUNCTION jobsys_run_event() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN "
    "IF TG_OP = 'DELETE' THEN "
    f"DELETE FROM {TABLE} WHERE run_id = OLD.id; "
    "ELSIF TG_OP = 'INSERT' THEN "
    f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES (NEW.id, extract(epoch FROM clock_timestamp()), "
    "'created', NULL, NEW.state, NEW.attempts, NULL, NEW.principal_id, NULL); "
    "ELSE "
    f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES (NEW.id, extract(epoch FROM clock_timestamp()), "
    "'state', OLD.state, NEW.state, NEW.attempts, NEW.worker, NULL, "
    f"CASE WHEN NEW.state IN ({_ERROR_STATES_SQL}) THEN NEW.error END); "
    "END IF; "
    "RETURN NULL; "
    "END $$",
    "DROP TRIGGER IF EXISTS jobsys_run_events_created ON jobsys_runs",
    "CREATE TRIGGER jobsys_run_events_created AFTER INSERT ON jobsys_runs "
    "FOR EACH ROW EXECUTE FUNCTION jobsys_run_event()",
    "DROP TRIGGER IF EXISTS jobsys_run_events_state ON jobsys_runs",
    "CREATE TRIGGER jobsys_run_events_state AFTER UPDATE OF state ON jobsys_runs "
    "FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) "
    "EXECUTE FUNCTION jobsys_run_event()",
    "DROP TRIGGER IF EXISTS jobsys_run_events_deleted ON jobsys_runs",
    "CREATE TRIGGER jobsys_run_events_deleted AFTER DELETE ON jobsys_runs "
    "FOR EACH ROW EXECUTE FUNCTION jobsys_run_event()",
    *PROGRESS_POSTGRESQL,
)


def create_triggers(conn: sa.Connection) -> None:
    """Install the triggers that write the events (a new database; revision 0015 for others)."""
    ddl = POSTGRESQL_TRIGGERS if conn.dialect.name == "postgresql" else SQLITE_TRIGGERS
    for sql in ddl:
        conn.exec_driver_sql(sql)
