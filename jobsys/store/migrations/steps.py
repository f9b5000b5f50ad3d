"""Alembic, for the work only it does: recording a database at a revision (stamping) and
running the revisions of ``versions/`` on it, on the connection and in the transaction that
``runner`` holds (``env.py``). Loaded only when a database has revisions to run: Alembic and
what it imports (Mako, every dialect's DDL) take about 0.3 s to import."""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from jobsys.store import schema

HERE = Path(__file__).resolve().parent


def config(conn: sa.Connection | None = None) -> Config:
    """Alembic's configuration for the revisions of ``versions/``; with ``conn``, commands
    run on that connection, in its transaction (``env.py``)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = conn
    return cfg


@functools.cache
def scripts() -> ScriptDirectory:
    """The revisions, read once per process."""
    return ScriptDirectory.from_config(config())


def head() -> str | None:
    return scripts().get_current_head()


def known(revision: str) -> bool:
    return revision in {s.revision for s in scripts().walk_revisions()}


def stamp(conn: sa.Connection, revision: str) -> None:
    """Record the database at ``revision`` without running anything."""
    context = MigrationContext.configure(conn, opts={"version_table": schema.VERSION_TABLE})
    context.stamp(scripts(), revision)


def upgrade(conn: sa.Connection, to: str) -> None:
    """Run the revisions from the one recorded (none: the first) to ``to``."""
    command.upgrade(config(conn), to)
