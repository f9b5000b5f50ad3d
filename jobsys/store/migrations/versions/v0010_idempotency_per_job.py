"""Idempotency keys are unique per tenant and job (they were per tenant, so the same key given
to two jobs made the second submit answer with the first job's run) (version 10 before
Alembic).

Revision 0010, after 0009. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations").
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_jobsys_runs_idempotency")
    op.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS ix_jobsys_runs_job_idempotency ON jobsys_runs "
        "(tenant, job, idempotency_key) WHERE idempotency_key IS NOT NULL"
    )
