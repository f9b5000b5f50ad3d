"""The history of each run (``events.py``): a table of events, one per change, and the
triggers on ``jobsys_runs`` that write them in the transaction of each change (a run made,
each change of its state) and delete them with their run. Runs made before this revision have
no history before it: their next change is their first event.

Revision 0015, after 0014. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its table, index and triggers are
written out here, never taken from ``schema.py`` or ``events.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0015"
down_revision = "0014"

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_COLUMNS = "run_id, at, kind, from_state, to_state, attempt, worker, actor, error"

SQLITE = (
    "CREATE TRIGGER IF NOT EXISTS jobsys_run_events_created AFTER INSERT ON jobsys_runs "
    f"BEGIN INSERT INTO jobsys_run_events ({_COLUMNS}) VALUES (NEW.id, "
    "(julianday('now') - 2440587.5) * 86400.0, 'created', NULL, NEW.state, NEW.attempts, "
    "NULL, NEW.principal_id, NULL); END",
    "CREATE TRIGGER IF NOT EXISTS jobsys_run_events_state AFTER UPDATE OF state ON jobsys_runs "
    f"WHEN OLD.state IS NOT NEW.state BEGIN INSERT INTO jobsys_run_events ({_COLUMNS}) "
    "VALUES (NEW.id, (julianday('now') - 2440587.5) * 86400.0, 'state', OLD.state, NEW.state, "
    "NEW.attempts, NEW.worker, NULL, CASE WHEN NEW.state IN ('retrying', 'failed', "
    "'cancelled') THEN NEW.error END); END",
    "CREATE TRIGGER IF NOT EXISTS jobsys_run_events_deleted AFTER DELETE ON jobsys_runs "
    "BEGIN DELETE FROM jobsys_run_events WHERE run_id = OLD.id; END",
)

POSTGRESQL = (
    "CREATE OR REPLACE FUNCTION jobsys_run_event() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN "
    "IF TG_OP = 'DELETE' THEN "
    "DELETE FROM jobsys_run_events WHERE run_id = OLD.id; "
    "ELSIF TG_OP = 'INSERT' THEN "
    f"INSERT INTO jobsys_run_events ({_COLUMNS}) VALUES (NEW.id, "
    "extract(epoch FROM clock_timestamp()), 'created', NULL, NEW.state, NEW.attempts, NULL, "
    "NEW.principal_id, NULL); "
    "ELSE "
    f"INSERT INTO jobsys_run_events ({_COLUMNS}) VALUES (NEW.id, "
    "extract(epoch FROM clock_timestamp()), 'state', OLD.state, NEW.state, NEW.attempts, "
    "NEW.worker, NULL, CASE WHEN NEW.state IN ('retrying', 'failed', 'cancelled') "
    "THEN NEW.error END); "
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
)


def upgrade() -> None:
    op.create_table(
        "jobsys_run_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16)),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("actor", sa.String(200)),
        sa.Column("error", JSON),
        sa.Column("detail", JSON),
    )
    op.create_index("ix_jobsys_run_events_run", "jobsys_run_events", ["run_id", "id"])
    dialect = op.get_bind().dialect.name
    for sql in POSTGRESQL if dialect == "postgresql" else SQLITE:
        op.execute(sql)
