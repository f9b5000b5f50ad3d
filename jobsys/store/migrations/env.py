"""Alembic's environment: runs the revisions on the connection ``steps`` passes, in its
transaction. jobsys migrates its database itself when a process opens the store
(``migrations.migrate``); Alembic's own command line is for writing revisions
(``alembic revision``, ``alembic history``; docs/internals.md, "Migrations")."""

from __future__ import annotations

from alembic import context

from jobsys.store import schema

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit(
        "jobsys migrates its database when a process opens it (for example `jobsys runs "
        "list`); Alembic's command line here writes and lists revisions only"
    )
context.configure(connection=connection, version_table=schema.VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
