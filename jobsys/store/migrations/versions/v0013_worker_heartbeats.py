"""Each worker process's heartbeat (``presence.py``): its node, pool, queues, catalog and
version, upserted by its own thread, removed when it stops, pruned once long lost
(``jobsys workers list``).

Revision 0013, after 0012. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its tables and columns are
written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobsys_workers",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("pool", sa.String(16), nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("queues", JSON, nullable=False),
        sa.Column("catalog", JSON, nullable=False),
        sa.Column("catalog_hash", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("heartbeat_seconds", sa.Float, nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("last_seen", TIME, nullable=False),
    )
    op.create_index("ix_jobsys_workers_last_seen", "jobsys_workers", ["last_seen"])
