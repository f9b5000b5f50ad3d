"""Semantic search: the vectors of the texts it ranks (``jobsys_embeddings``) and how far the
workers' indexer got (``jobsys_embed_progress``). Empty until an embedder is set.

Revision 0020, after 0019. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its tables and columns are
written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"


def upgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "jobsys_embeddings" not in tables:
        op.create_table(
            "jobsys_embeddings",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("kind", sa.String(8), nullable=False),
            sa.Column("ref", sa.String(200), nullable=False),
            sa.Column("source", sa.String(64), nullable=False),
            sa.Column("vector", sa.LargeBinary, nullable=False),
            sa.UniqueConstraint("kind", "ref", "source", name="uq_jobsys_embeddings"),
        )
        op.create_index("ix_jobsys_embeddings_kind", "jobsys_embeddings", ["kind", "id"])
    if "jobsys_embed_progress" not in tables:
        op.create_table(
            "jobsys_embed_progress",
            sa.Column("name", sa.String(16), primary_key=True),
            sa.Column("done_to", sa.BigInteger, nullable=False),
            sa.Column("settled_to", sa.BigInteger, nullable=False),
            sa.Column("holder", sa.String(255)),
            sa.Column("until", sa.Float, nullable=False),
        )

