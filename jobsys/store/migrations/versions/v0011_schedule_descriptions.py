"""Schedules carry a description; runs are listed by the run they were made from (``runs list
--parent``) through an index of their own, as by schedule and workflow (version 11 before
Alembic).

Revision 0011, after 0010. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    # A column the table has already is left alone, as the step of version 11 did.
    if "description" not in {
        c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobsys_schedules")
    }:
        op.add_column("jobsys_schedules", sa.Column("description", sa.Text))
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_parent ON jobsys_runs "
        "(parent_id, created_at) WHERE parent_id IS NOT NULL"
    )
