"""Dependencies between single runs, and the mark of a run that others wait for (version 7
before Alembic).

Revision 0007, after 0006. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its tables and columns are
written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "jobsys_run_deps",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("depends_on", sa.String(32), primary_key=True),
        if_not_exists=True,
    )
    op.create_index(
        "ix_jobsys_run_deps_depends_on", "jobsys_run_deps", ["depends_on"], if_not_exists=True
    )
    # A column the table has already is left alone, as the step of version 7 did.
    if "has_dependents" not in {
        c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobsys_runs")
    }:
        op.add_column("jobsys_runs", sa.Column("has_dependents", sa.Boolean))
