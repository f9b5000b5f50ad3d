"""Schedules and their versions, and each run's fire: the schedule version, fire time and
trigger that made it, and a fire key unique among runs (one run per fire, whatever the number
of beats). Optional run keys get partial indexes (version 4 before Alembic).

Revision 0004, after 0003. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its tables and columns are
written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    # A column the table has already is left alone, as the step of version 4 did.
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobsys_runs")}
    for column in (
        sa.Column("schedule_version", sa.Integer),
        sa.Column("fire_at", TIME),
        sa.Column("trigger", sa.String(16)),
        sa.Column("fire_key", sa.String(128)),
    ):
        if column.name not in have:
            op.add_column("jobsys_runs", column)
    # Partial indexes: a run without the key (most runs) costs no write in them.
    op.execute("DROP INDEX IF EXISTS ix_jobsys_runs_idempotency")
    op.execute(
        "CREATE UNIQUE INDEX ix_jobsys_runs_idempotency ON jobsys_runs (tenant, idempotency_key) "
        "WHERE idempotency_key IS NOT NULL"
    )
    op.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS ix_jobsys_runs_fire_key ON jobsys_runs (fire_key) "
        "WHERE fire_key IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_schedule ON jobsys_runs "
        "(schedule_id, created_at) WHERE schedule_id IS NOT NULL"
    )
    op.create_table(
        "jobsys_schedules",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("job", sa.String(200), nullable=False),
        sa.Column("cadence", JSON, nullable=False),
        sa.Column("input", JSON, nullable=False),
        sa.Column("meta", JSON, nullable=False),
        sa.Column("options", JSON, nullable=False),
        sa.Column("principal", JSON, nullable=False),
        sa.Column("principal_id", sa.String(200), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("nominal_at", TIME),
        sa.Column("next_fire_at", TIME),
        sa.Column("queued_fire_at", TIME),
        sa.Column("last_fire_at", TIME),
        sa.Column("last_run_id", sa.String(32)),
        sa.Column("run_count", sa.Integer, nullable=False),
        sa.Column("result", JSON),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("code_hash", sa.String(64)),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        if_not_exists=True,
    )
    for name, columns in (
        ("ix_jobsys_schedules_due", ["state", "next_fire_at"]),
        ("ix_jobsys_schedules_queued", ["state", "queued_fire_at"]),
        ("ix_jobsys_schedules_tenant", ["tenant", "created_at"]),
    ):
        op.create_index(name, "jobsys_schedules", columns, if_not_exists=True)
    op.create_table(
        "jobsys_schedule_versions",
        sa.Column("schedule_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("changed_at", TIME, nullable=False),
        sa.Column("changed_by", sa.String(200), nullable=False),
        if_not_exists=True,
    )
