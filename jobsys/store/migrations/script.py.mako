"""${message}

Revision ${up_revision}, after ${down_revision | comma,n}. Once released, this file never changes:
a later change to the schema is a new revision (docs/internals.md, "Migrations"). Its tables
and columns are written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision = "${up_revision}"
down_revision = "${down_revision}"


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}
