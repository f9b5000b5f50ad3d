"""A waiting run says why it waits (``waiting``: the message of a job its worker does not know
is parked until a worker that knows the job takes it) (version 12 before Alembic).

Revision 0012, after 0011. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its tables and columns are
written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # A column the table has already is left alone, as the step of version 12 did.
    if "waiting" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobsys_runs")}:
        op.add_column("jobsys_runs", sa.Column("waiting", JSON))
