"""Paused queues, jobs and everything (``jobsys queues pause``, ``jobsys jobs pause``): one row
per pause, of one tenant or of every tenant (``*``), read by the claim of every run.

Revision 0017, after 0016. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its tables and columns are
written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobsys_pauses",
        sa.Column("scope", sa.String(8), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("tenant", sa.String(200), primary_key=True),
        sa.Column("paused_by", sa.String(200), nullable=False),
        sa.Column("paused_at", TIME, nullable=False),
    )
