"""Archiving: a run or a schedule a person wants out of the default lists, without deleting
it, carries the time it was archived (``archived_at``); null for every other one, so that a
run that is never archived costs no write for it.

Revision 0019, after 0018. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its tables and columns are
written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"


def upgrade() -> None:
    bind = op.get_bind()
    for table in ("jobsys_runs", "jobsys_schedules"):
        if "archived_at" not in {c["name"] for c in sa.inspect(bind).get_columns(table)}:
            op.add_column(table, sa.Column("archived_at", sa.DateTime(timezone=True)))
