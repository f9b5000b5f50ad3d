"""A run token is bound to the API token that took its run: ``jobsys_run_tokens.token_id``
names it (``NULL``: taken without one, by the local admin, or before this revision), and a run
token stops working once that API token is revoked or expires.

Revision 0023, after 0022. Once released, this file never changes: a later change to the
schema is a new revision (docs/internals.md, "Migrations"). Its columns are written out here,
never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"


def upgrade() -> None:
    op.add_column("jobsys_run_tokens", sa.Column("token_id", sa.String(32)))
