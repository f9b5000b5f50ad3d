"""Keyword search over run errors and logs: SQLite FTS5, or a PostgreSQL tsvector with a GIN
index (version 3 before Alembic).

Revision 0003, after 0002. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations").
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "CREATE TABLE IF NOT EXISTS jobsys_search (id BIGSERIAL PRIMARY KEY, "
            "run_id VARCHAR(32) NOT NULL, body TEXT NOT NULL, "
            "tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED)"
        )
        op.execute(
            "CREATE INDEX IF NOT EXISTS ix_jobsys_search_tsv ON jobsys_search USING GIN (tsv)"
        )
        op.execute("CREATE INDEX IF NOT EXISTS ix_jobsys_search_run ON jobsys_search (run_id)")
    else:
        op.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS jobsys_search USING fts5("
            "run_id UNINDEXED, body, tokenize = 'unicode61')"
        )
