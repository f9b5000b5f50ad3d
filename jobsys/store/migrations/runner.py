"""Brings a database to a revision, in one transaction that holds the database's migration
lock, so that processes starting together migrate it once:

- a new database is made in one step from the current tables (``schema.create_all``) and
  recorded at ``schema.REVISION``, without Alembic; ``tests/integration/test_migrations.py``
  checks that this schema equals the one the revisions make from the first;
- a database made by a jobsys from before Alembic records its schema version (1 to 12) in
  ``jobsys_schema``; revisions ``0001`` to ``0012`` are those versions, so it is recorded
  (stamped) at the revision of its version, then upgraded;
- any other database is upgraded from the revision it records.

``jobsys_schema`` keeps the number of the revision applied, so that a jobsys from before
Alembic refuses a database newer than it knows instead of running its old steps on it.

The lock: on PostgreSQL an advisory lock for the transaction (the key jobsys used before
Alembic, so old and new processes wait for each other); on SQLite the write lock, taken at
``BEGIN IMMEDIATE`` (DDL is transactional on both).
"""

from __future__ import annotations

import contextlib

import sqlalchemy as sa

from jobsys.base import errors
from jobsys.store import database, schema

POSTGRES_LOCK = 7214001
LEGACY_VERSIONS = 12
"""The schema versions of jobsys before Alembic: version N is revision ``000N``."""


def upgrade(engine: sa.Engine, to: str = "head") -> int:
    """Bring the database to revision ``to``; return the revision it was at, as a number
    (0: a new database). Nothing is changed unless all of it is."""
    with locked(engine) as conn:
        return _upgrade(conn, to)


def locked(engine: sa.Engine) -> contextlib.AbstractContextManager[sa.Connection]:
    """A connection in a transaction that holds the database's migration lock; committed at
    the end of the block, rolled back if it raises."""
    return database.locked(engine, POSTGRES_LOCK)


def _upgrade(conn: sa.Connection, to: str) -> int:
    version = schema.alembic_version
    current = (
        conn.execute(sa.select(version.c.version_num)).scalar() if _has(conn, version) else None
    )
    if current == to or (current == schema.REVISION and to == "head"):
        return int(current)  # another process did it while this one waited for the lock
    legacy = None if current else _legacy_version(conn)
    if not current and not legacy and to in ("head", schema.REVISION):
        schema.create_all(conn)
        conn.execute(version.insert().values(version_num=schema.REVISION))
        _record_legacy(conn, schema.REVISION)
        return 0
    # Imported here for start-up cost: Alembic takes about 0.3 s to import, which a new
    # database (every test's, every first `jobsys up`) does not need.
    from jobsys.store.migrations import steps

    if current and not steps.known(current):
        raise _too_new(f"revision {current}", steps.head())
    if legacy is not None and legacy > LEGACY_VERSIONS:
        raise _too_new(f"version {legacy}", steps.head())
    if legacy:
        steps.stamp(conn, f"{legacy:04d}")
    steps.upgrade(conn, to)
    _record_legacy(conn, conn.execute(sa.select(version.c.version_num)).scalar())
    return int(current or legacy or 0)


def _too_new(at: str, head: str | None) -> errors.SchemaTooNew:
    return errors.SchemaTooNew(
        f"the database is at schema {at}, this jobsys knows up to revision {head}: "
        "upgrade jobsys on this machine"
    )


def _has(conn: sa.Connection, table: sa.Table) -> bool:
    return sa.inspect(conn).has_table(table.name)


def _legacy_version(conn: sa.Connection) -> int | None:
    """The schema version a jobsys from before Alembic recorded; ``None`` if none did."""
    if not _has(conn, schema.schema_version):
        return None
    found = conn.execute(sa.select(schema.schema_version.c.version)).scalar()
    return None if found is None else int(found)


def _record_legacy(conn: sa.Connection, revision: str | None) -> None:
    """Record the revision's number where a jobsys from before Alembic looks for it."""
    number = int(revision or 0)
    table = schema.schema_version
    table.create(conn, checkfirst=True)
    if not conn.execute(table.update().values(version=number)).rowcount:
        conn.execute(table.insert().values(id=1, version=number))
