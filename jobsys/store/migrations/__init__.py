"""Schema migrations: the Alembic revisions of ``versions/``, applied when a process opens the
store (``migrate``, called by ``RunStore.open``).

A process start on an up-to-date database pays one query: the revision Alembic recorded,
compared with ``schema.REVISION``. Only a database that needs work (a new one, an older one,
or one made by a jobsys from before Alembic) goes to ``runner``, and only one with revisions
to run loads Alembic (``steps``). Released
revisions never change; how to add one: docs/internals.md, "Migrations".
"""

from __future__ import annotations

import sqlalchemy as sa

from jobsys.store import schema
from jobsys.store.migrations import runner


def migrate(engine: sa.Engine) -> int:
    """Bring the database to ``schema.REVISION``; return the revision it was at, as a number
    (0: a new database). Safe to run from several processes at once (``runner.upgrade``)."""
    if current_revision(engine) == schema.REVISION:
        return schema.LATEST
    return runner.upgrade(engine)


def current_revision(engine: sa.Engine) -> str | None:
    """The revision Alembic recorded in the database; ``None`` when it recorded none (a new
    database, or one from before Alembic)."""
    try:
        with engine.connect() as conn:
            sql = sa.text(f"SELECT version_num FROM {schema.VERSION_TABLE}")
            found = conn.execute(sql).scalar()
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # no version table
        return None
    return None if found is None else str(found)
