"""Runs listed by state, newest first, without a sort (version 2 before Alembic).

Revision 0002, after 0001. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations").
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_state_created ON jobsys_runs (state, created_at)"
    )
