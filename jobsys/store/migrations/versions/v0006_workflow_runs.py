"""Workflow runs, each with the definition it advances by; their steps are runs with a
``workflow_id`` (version 6 before Alembic).

Revision 0006, after 0005. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its tables and columns are
written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobsys_workflow_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("input", JSON, nullable=False),
        sa.Column("output", JSON),
        sa.Column("error", JSON),
        sa.Column("skipped", JSON, nullable=False),
        sa.Column("principal", JSON, nullable=False),
        sa.Column("principal_id", sa.String(200), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("timeout_at", TIME, nullable=False),
        sa.Column("finished_at", TIME),
        if_not_exists=True,
    )
    for name, columns in (
        ("ix_jobsys_workflow_runs_state", ["state", "timeout_at"]),
        ("ix_jobsys_workflow_runs_tenant", ["tenant", "created_at"]),
    ):
        op.create_index(name, "jobsys_workflow_runs", columns, if_not_exists=True)
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_workflow ON jobsys_runs "
        "(workflow_id, created_at) WHERE workflow_id IS NOT NULL"
    )
