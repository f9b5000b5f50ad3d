"""Delayed runs (a submit's ``countdown`` or ``start_at`` past the delay horizon) wait in the
run store, pending and not yet published, until a worker's reaper publishes them when they
are due: a partial index of those runs by due time, so that finding them costs the same
however many other runs there are, and no write for a run without a start time.

Revision 0014, after 0013. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its indexes are written out
here, never taken from ``schema.py``.
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_due ON jobsys_runs (next_attempt_at) "
        "WHERE state = 'pending' AND published_at IS NULL AND next_attempt_at IS NOT NULL"
    )
