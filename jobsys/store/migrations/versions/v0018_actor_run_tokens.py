"""Runs done by an outside actor (an agent, a person, a service): the run token handed to the
actor that took a run, one per run (the attempt it holds), kept as the SHA-256 of its secret.

Revision 0018, after 0017. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its tables and columns are
written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0018"
down_revision = "0017"

TIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "jobsys_run_tokens",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("actor", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
