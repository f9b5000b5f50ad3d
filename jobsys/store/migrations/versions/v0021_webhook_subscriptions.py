"""Notifications: webhook subscriptions, the outbox of their deliveries (one per subscription
and run event, whose id is the delivery id), the notifier's cursor over the run events, and
the trigger that writes a run's progress milestones (each quarter crossed) as events.

Revision 0021, after 0020. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its tables, indexes and triggers
are written out here, never taken from ``schema.py`` or ``event_triggers.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0021"
down_revision = "0020"

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

SQLITE = (
    "CREATE TRIGGER IF NOT EXISTS jobsys_run_events_progress AFTER UPDATE OF progress ON "
    "jobsys_runs WHEN CAST(COALESCE(json_extract(NEW.progress, '$.pct'), 0) / 25 AS INTEGER) > "
    "CAST(COALESCE(json_extract(OLD.progress, '$.pct'), 0) / 25 AS INTEGER) "
    "BEGIN INSERT INTO jobsys_run_events (run_id, at, kind, attempt, worker, detail) VALUES "
    "(NEW.id, (julianday('now') - 2440587.5) * 86400.0, 'progress', NEW.attempts, NEW.worker, "
    "json_object('milestone', 25 * CAST(json_extract(NEW.progress, '$.pct') / 25 AS INTEGER)"
    ")); END",
)
POSTGRESQL = (
    "CREATE OR REPLACE FUNCTION jobsys_run_progress_event() RETURNS trigger LANGUAGE plpgsql "
    "AS $$ BEGIN "
    "INSERT INTO jobsys_run_events (run_id, at, kind, attempt, worker, detail) VALUES (NEW.id, "
    "extract(epoch FROM clock_timestamp()), 'progress', NEW.attempts, NEW.worker, "
    "jsonb_build_object('milestone', 25 * floor((NEW.progress->>'pct')::float / 25)::int)); "
    "RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS jobsys_run_events_progress ON jobsys_runs",
    "CREATE TRIGGER jobsys_run_events_progress AFTER UPDATE OF progress ON jobsys_runs "
    "FOR EACH ROW WHEN (floor(COALESCE((NEW.progress->>'pct')::float, 0) / 25) > "
    "floor(COALESCE((OLD.progress->>'pct')::float, 0) / 25)) "
    "EXECUTE FUNCTION jobsys_run_progress_event()",
)


def upgrade() -> None:
    op.create_table(
        "jobsys_subscriptions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("target", sa.String(200)),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("after_event", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_jobsys_subscriptions_tenant", "jobsys_subscriptions", ["tenant", "created_at"]
    )
    op.create_table(
        "jobsys_deliveries",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("subscription_id", sa.String(32), nullable=False),
        sa.Column("event_id", sa.BigInteger),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(32)),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.Float),
        sa.Column("event_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float),
        sa.Column("ended_at", sa.Float),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("log", JSON, nullable=False),
    )
    op.create_index("ix_jobsys_deliveries_due", "jobsys_deliveries", ["state", "next_at"])
    op.create_index(
        "ix_jobsys_deliveries_subscription",
        "jobsys_deliveries",
        ["subscription_id", "created_at"],
    )
    op.create_table(
        "jobsys_notify_cursor",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("event_id", sa.BigInteger, nullable=False),
    )
    bind = op.get_bind()
    for sql in POSTGRESQL if bind.dialect.name == "postgresql" else SQLITE:
        bind.exec_driver_sql(sql)
