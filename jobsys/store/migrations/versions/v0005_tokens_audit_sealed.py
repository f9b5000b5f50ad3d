"""API tokens (hashed), the audit log, and the sealed secrets of runs and schedules (version 5
before Alembic).

Revision 0005, after 0004. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its tables and columns are
written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobsys_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("principal", JSON, nullable=False),
        sa.Column("principal_id", sa.String(200), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME),
        sa.Column("revoked_at", TIME),
        sa.Column("last_used_at", TIME),
        if_not_exists=True,
    )
    op.create_table(
        "jobsys_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", TIME, nullable=False),
        sa.Column("principal_id", sa.String(200), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        if_not_exists=True,
    )
    op.create_index(
        "ix_jobsys_audit_tenant_at", "jobsys_audit", ["tenant", "at"], if_not_exists=True
    )
    for table in ("jobsys_runs", "jobsys_schedules"):
        # A column the table has already is left alone, as the step of version 5 did.
        if "sealed" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}:
            op.add_column(table, sa.Column("sealed", sa.Text))
