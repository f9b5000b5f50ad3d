"""The first released schema (version 1 before Alembic): the runs and their log lines.

Revision 0001. Once released, this file never changes: a later change to the schema is a new
revision (docs/internals.md, "Migrations"). Its tables and columns are written out here,
never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobsys_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("job", sa.String(200), nullable=False),
        sa.Column("job_version", sa.String(40), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("input", JSON, nullable=False),
        sa.Column("output", JSON),
        sa.Column("error", JSON),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("timeout", sa.Float, nullable=False),
        sa.Column("dispatch", sa.Integer, nullable=False),
        sa.Column("lost", sa.Integer, nullable=False),
        sa.Column("progress", JSON),
        sa.Column("meta", JSON, nullable=False),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("principal", JSON, nullable=False),
        sa.Column("principal_id", sa.String(200), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("parent_id", sa.String(32)),
        sa.Column("schedule_id", sa.String(64)),
        sa.Column("workflow_id", sa.String(64)),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("worker_pid", sa.Integer),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("published_at", TIME),
        sa.Column("started_at", TIME),
        sa.Column("finished_at", TIME),
        sa.Column("duration", sa.Float),
        sa.Column("lease_expires_at", TIME),
        sa.Column("deadline_at", TIME),
        sa.Column("next_attempt_at", TIME),
    )
    for name, columns in (
        ("ix_jobsys_runs_state_job", ["state", "job"]),
        ("ix_jobsys_runs_job_created", ["job", "created_at"]),
        ("ix_jobsys_runs_created", ["created_at"]),
        ("ix_jobsys_runs_tenant_created", ["tenant", "created_at"]),
        ("ix_jobsys_runs_state_lease", ["state", "lease_expires_at"]),
    ):
        op.create_index(name, "jobsys_runs", columns)
    op.create_index(
        "ix_jobsys_runs_idempotency", "jobsys_runs", ["tenant", "idempotency_key"], unique=True
    )
    op.create_table(
        "jobsys_run_logs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_jobsys_run_logs_run", "jobsys_run_logs", ["run_id", "id"])
