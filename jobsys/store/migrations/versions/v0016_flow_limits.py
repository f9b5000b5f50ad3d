"""Concurrency limits: each run of a job with a concurrency key records its key
(``limit_key``, computed at submit), and a run that waits for a free slot says so (``gate``),
so that the end of a run finds the next one waiting for its slot through a partial index of
those runs only (a run that waits for no slot costs no write in it).

Revision 0016, after 0015. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its tables, columns and indexes
are written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobsys_runs")}
    if "limit_key" not in have:
        op.add_column("jobsys_runs", sa.Column("limit_key", sa.String(200)))
    if "gate" not in have:
        op.add_column("jobsys_runs", sa.Column("gate", sa.String(16)))
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_gated ON jobsys_runs "
        "(job, limit_key, priority, created_at) WHERE gate IS NOT NULL"
    )
