"""Job definitions belong to a tenant and an owner; names are unique per tenant (the key
becomes (tenant, name)), and secret headers are sealed. Definitions made before belong to the
default tenant and to the principal that last registered them (version 9 before Alembic).

The table is rebuilt (SQLite cannot change a primary key), under a new name then renamed.

Revision 0009, after 0008. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its tables and columns are
written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobsys_job_definitions")}
    if "tenant" in have:  # already in shape, as the step of version 9 found it
        return
    op.create_table(
        "jobsys_job_definitions_v9",
        sa.Column("tenant", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("removed_at", TIME),
        sa.Column("sealed", sa.Text),
    )
    op.execute(
        "INSERT INTO jobsys_job_definitions_v9 (tenant, name, kind, data, version, owner, "
        "created_by, created_at, updated_at, removed_at) SELECT 'default', name, kind, data, "
        "version, created_by, created_by, created_at, updated_at, removed_at "
        "FROM jobsys_job_definitions"
    )
    op.execute("DROP TABLE jobsys_job_definitions")
    op.execute("ALTER TABLE jobsys_job_definitions_v9 RENAME TO jobsys_job_definitions")
