"""The SQL schema of the store and its migrations.

Tables are SQLAlchemy Core tables. ``jobsys_schema`` holds the applied version; ``migrate``
applies the missing steps of ``MIGRATIONS`` in order, once, under a lock, when a process opens
the store. A new schema change is a new step appended to ``MIGRATIONS``; steps never change.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from jobsys.base import errors
from jobsys.store import search


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive, in UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the run store; use UTC-aware datetimes")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def sqlite_storable(text: str) -> str | bytes:
    """A JSON document as bound on SQLite. A column declared JSON has numeric affinity there:
    a text that reads as a number is stored as a number, so an integer beyond 64 bits came
    back as a float (``2**63`` as ``9.223372036854776e+18``) and ``1.0`` as ``1``. Such a
    document (a bare number) is bound as a BLOB, which is stored as it is and read back as the
    same JSON; every other document stays text (SQLite's JSON functions read those)."""
    return text.encode() if text[:1] in _NUMBER_START else text


_NUMBER_START = frozenset("-0123456789")


class JSON(sa.types.TypeDecorator[Any]):
    """JSON: JSONB on PostgreSQL (imported only there), SQLite's JSON elsewhere (a bare
    number bound as a BLOB: ``sqlite_storable``)."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())

    def bind_processor(self, dialect: Any) -> Any:
        serialize = super().bind_processor(dialect)
        if dialect.name != "sqlite" or serialize is None:
            return serialize

        def storable(value: Any) -> Any:
            out = serialize(value)
            return sqlite_storable(out) if isinstance(out, str) else out

        return storable


metadata = sa.MetaData()

schema_version = sa.Table(
    "jobsys_schema",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

runs = sa.Table(
    "jobsys_runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("job", sa.String(200), nullable=False),
    sa.Column("job_version", sa.String(40), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("queue", sa.String(200), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("input", JSON, nullable=False),
    sa.Column("output", JSON),
    sa.Column("error", JSON),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("timeout", sa.Float, nullable=False),
    sa.Column("dispatch", sa.Integer, nullable=False, default=1),
    sa.Column("lost", sa.Integer, nullable=False, default=0),
    sa.Column("progress", JSON),
    sa.Column("meta", JSON, nullable=False),
    sa.Column("tags", JSON, nullable=False),
    sa.Column("principal", JSON, nullable=False),
    sa.Column("principal_id", sa.String(200), nullable=False),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("idempotency_key", sa.String(200)),
    sa.Column("parent_id", sa.String(32)),
    sa.Column("schedule_id", sa.String(64)),
    sa.Column("workflow_id", sa.String(64)),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("worker", sa.String(255)),
    sa.Column("worker_pid", sa.Integer),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("published_at", UTCDateTime),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("duration", sa.Float),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("deadline_at", UTCDateTime),
    sa.Column("next_attempt_at", UTCDateTime),
    # Added by version 4 (schedules): which fire of which schedule version made this run.
    sa.Column("schedule_version", sa.Integer),
    sa.Column("fire_at", UTCDateTime),
    sa.Column("trigger", sa.String(16)),
    sa.Column("fire_key", sa.String(128)),
    # Added by version 5: the secret input values, encrypted (sealing.py).
    sa.Column("sealed", sa.Text),
    # Added by version 7: other runs wait for this one (its end releases them).
    sa.Column("has_dependents", sa.Boolean),
    # Added by version 11: why a waiting run waits, when a worker knows (no live worker
    # knows its job: ``parking.py``); cleared when the run is claimed or ends.
    sa.Column("waiting", JSON),
    sa.Index("ix_jobsys_runs_state_job", "state", "job"),
    sa.Index("ix_jobsys_runs_state_created", "state", "created_at"),
    sa.Index("ix_jobsys_runs_job_created", "job", "created_at"),
    sa.Index("ix_jobsys_runs_created", "created_at"),
    sa.Index("ix_jobsys_runs_tenant_created", "tenant", "created_at"),
    sa.Index("ix_jobsys_runs_state_lease", "state", "lease_expires_at"),
    # The partial indexes (idempotency key, fire key, schedule, workflow) are created by the
    # migrations in plain SQL: declared here, their dialect options would load every
    # dialect's package (2.8 MiB for PostgreSQL's) into each process, SQLite or not.
)

schedules = sa.Table(
    "jobsys_schedules",
    metadata,
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
    sa.Column("nominal_at", UTCDateTime),
    sa.Column("next_fire_at", UTCDateTime),
    sa.Column("queued_fire_at", UTCDateTime),
    sa.Column("last_fire_at", UTCDateTime),
    sa.Column("last_run_id", sa.String(32)),
    sa.Column("run_count", sa.Integer, nullable=False),
    sa.Column("result", JSON),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("code_hash", sa.String(64)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("sealed", sa.Text),
    # Added by version 11: what the schedule is for, in words.
    sa.Column("description", sa.Text),
    sa.Index("ix_jobsys_schedules_due", "state", "next_fire_at"),
    sa.Index("ix_jobsys_schedules_queued", "state", "queued_fire_at"),
    sa.Index("ix_jobsys_schedules_tenant", "tenant", "created_at"),
)

schedule_versions = sa.Table(
    "jobsys_schedule_versions",
    metadata,
    sa.Column("schedule_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("definition", JSON, nullable=False),
    sa.Column("changed_at", UTCDateTime, nullable=False),
    sa.Column("changed_by", sa.String(200), nullable=False),
)

tokens = sa.Table(
    "jobsys_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("principal", JSON, nullable=False),
    sa.Column("principal_id", sa.String(200), nullable=False),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
    sa.Column("last_used_at", UTCDateTime),
)

audit = sa.Table(
    "jobsys_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("principal_id", sa.String(200), nullable=False),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(300), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Index("ix_jobsys_audit_tenant_at", "tenant", "at"),
)

workflow_runs = sa.Table(
    "jobsys_workflow_runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workflow", sa.String(200), nullable=False),
    sa.Column("definition", JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("input", JSON, nullable=False),
    sa.Column("output", JSON),
    sa.Column("error", JSON),
    sa.Column("skipped", JSON, nullable=False),
    sa.Column("principal", JSON, nullable=False),
    sa.Column("principal_id", sa.String(200), nullable=False),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("timeout_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Index("ix_jobsys_workflow_runs_state", "state", "timeout_at"),
    sa.Index("ix_jobsys_workflow_runs_tenant", "tenant", "created_at"),
)

run_deps = sa.Table(
    "jobsys_run_deps",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("depends_on", sa.String(32), primary_key=True),
    sa.Index("ix_jobsys_run_deps_depends_on", "depends_on"),
)


def _job_definitions(name: str, meta: sa.MetaData) -> sa.Table:
    return sa.Table(
        name,
        meta,
        # Added by version 9: a definition belongs to a tenant (its name is unique there)
        # and to the principal that first registered it; its secret headers, sealed.
        sa.Column("tenant", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("removed_at", UTCDateTime),
        sa.Column("sealed", sa.Text),
    )


job_definitions = _job_definitions("jobsys_job_definitions", metadata)

run_logs = sa.Table(
    "jobsys_run_logs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Index("ix_jobsys_run_logs_run", "run_id", "id"),
)

# Added by version 13: each worker process's heartbeat (``presence.py``), upserted by its own
# thread every JOBSYS_HEARTBEAT_SECONDS, removed when it stops, pruned once long lost.
workers = sa.Table(
    "jobsys_workers",
    metadata,
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
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Index("ix_jobsys_workers_last_seen", "last_seen"),
)


def _v1(conn: sa.Connection) -> None:
    """Version 1: the runs and run-log tables."""
    for table in (runs, run_logs):
        table.create(conn, checkfirst=True)


def _v2(conn: sa.Connection) -> None:
    """Version 2: list by state, newest first, without a sort."""
    conn.execute(
        sa.text(
            "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_state_created "
            "ON jobsys_runs (state, created_at)"
        )
    )


def _v3(conn: sa.Connection) -> None:
    """Version 3: keyword search over run errors and logs (``search.py``)."""
    search.create(conn)


def _v4(conn: sa.Connection) -> None:
    """Version 4: schedules, their versions, and each run's fire (schedule version, fire
    time, trigger, and a unique fire key: one run per schedule fire, whatever the number of
    beats). A database created at version 1 by a newer jobsys already has the run columns."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("jobsys_runs")}
    for column in ("schedule_version", "fire_at", "trigger", "fire_key"):
        if column not in have:
            kind = runs.c[column].type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE jobsys_runs ADD COLUMN {column} {kind}"))
    # Partial indexes: a run without the key (most runs) costs no write in them.
    conn.execute(sa.text("DROP INDEX IF EXISTS ix_jobsys_runs_idempotency"))
    for sql in (
        "CREATE UNIQUE INDEX ix_jobsys_runs_idempotency ON jobsys_runs (tenant, idempotency_key) "
        "WHERE idempotency_key IS NOT NULL",
        "CREATE UNIQUE INDEX IF NOT EXISTS ix_jobsys_runs_fire_key ON jobsys_runs (fire_key) "
        "WHERE fire_key IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_schedule ON jobsys_runs "
        "(schedule_id, created_at) WHERE schedule_id IS NOT NULL",
    ):
        conn.execute(sa.text(sql))
    for table in (schedules, schedule_versions):
        table.create(conn, checkfirst=True)


def _v5(conn: sa.Connection) -> None:
    """Version 5: API tokens (hashed), the audit log, sealed secrets of runs and schedules."""
    for table in (tokens, audit):
        table.create(conn, checkfirst=True)
    for name in ("jobsys_runs", "jobsys_schedules"):
        if "sealed" not in {c["name"] for c in sa.inspect(conn).get_columns(name)}:
            conn.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN sealed TEXT"))


def _v6(conn: sa.Connection) -> None:
    """Version 6: workflow runs (their steps are runs with a workflow_id)."""
    workflow_runs.create(conn, checkfirst=True)
    conn.execute(
        sa.text(
            "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_workflow ON jobsys_runs "
            "(workflow_id, created_at) WHERE workflow_id IS NOT NULL"
        )
    )


def _v7(conn: sa.Connection) -> None:
    """Version 7: dependencies between single runs."""
    run_deps.create(conn, checkfirst=True)
    if "has_dependents" not in {c["name"] for c in sa.inspect(conn).get_columns("jobsys_runs")}:
        kind = runs.c["has_dependents"].type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE jobsys_runs ADD COLUMN has_dependents {kind}"))


def _v8(conn: sa.Connection) -> None:
    """Version 8: job definitions registered at runtime (aliases, HTTP calls, workflows)."""
    job_definitions.create(conn, checkfirst=True)


def _v9(conn: sa.Connection) -> None:
    """Version 9: job definitions belong to a tenant and an owner; names are unique per
    tenant (the key becomes (tenant, name)), and secret headers are sealed. Definitions made
    before belong to the default tenant and to the principal that last registered them. The
    table is rebuilt (SQLite cannot change a primary key), under a new name then renamed."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("jobsys_job_definitions")}
    if "tenant" in have:  # created at version 8 by this jobsys: already in shape
        return
    new = _job_definitions("jobsys_job_definitions_v9", sa.MetaData())
    new.create(conn)
    conn.execute(
        sa.text(
            "INSERT INTO jobsys_job_definitions_v9 (tenant, name, kind, data, version, owner, "
            "created_by, created_at, updated_at, removed_at) SELECT 'default', name, kind, data, "
            "version, created_by, created_by, created_at, updated_at, removed_at "
            "FROM jobsys_job_definitions"
        )
    )
    conn.execute(sa.text("DROP TABLE jobsys_job_definitions"))
    conn.execute(sa.text("ALTER TABLE jobsys_job_definitions_v9 RENAME TO jobsys_job_definitions"))


def _v10(conn: sa.Connection) -> None:
    """Version 10: idempotency keys are unique per tenant and job (they were per tenant, so
    the same key given to two jobs made the second submit answer with the first job's run)."""
    conn.execute(sa.text("DROP INDEX IF EXISTS ix_jobsys_runs_idempotency"))
    conn.execute(
        sa.text(
            "CREATE UNIQUE INDEX IF NOT EXISTS ix_jobsys_runs_job_idempotency ON jobsys_runs "
            "(tenant, job, idempotency_key) WHERE idempotency_key IS NOT NULL"
        )
    )


def _v11(conn: sa.Connection) -> None:
    """Version 11: schedules carry a description; runs are listed by the run they were made
    from (``runs list --parent``) through an index of their own, as by schedule and workflow.
    A database created at an earlier version by this jobsys already has the column."""
    if "description" not in {c["name"] for c in sa.inspect(conn).get_columns("jobsys_schedules")}:
        conn.execute(sa.text("ALTER TABLE jobsys_schedules ADD COLUMN description TEXT"))
    conn.execute(
        sa.text(
            "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_parent ON jobsys_runs "
            "(parent_id, created_at) WHERE parent_id IS NOT NULL"
        )
    )


def _v12(conn: sa.Connection) -> None:
    """Version 12: a waiting run says why it waits (``waiting``: the message of a job its
    worker does not know is parked until a worker that knows the job takes it)."""
    if "waiting" not in {c["name"] for c in sa.inspect(conn).get_columns("jobsys_runs")}:
        kind = runs.c["waiting"].type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE jobsys_runs ADD COLUMN waiting {kind}"))


def _v13(conn: sa.Connection) -> None:
    """Version 13: worker heartbeats (``jobsys workers list``), a table of their own."""
    workers.create(conn, checkfirst=True)


MIGRATIONS: list[Callable[[sa.Connection], None]] = [
    _v1,
    _v2,
    _v3,
    _v4,
    _v5,
    _v6,
    _v7,
    _v8,
    _v9,
    _v10,
    _v11,
    _v12,
    _v13,
]
"""Step ``i`` brings the schema from version ``i`` to ``i + 1``. Append only."""

LATEST = len(MIGRATIONS)


def migrate(engine: sa.Engine) -> int:
    """Bring the database to ``LATEST``; return the version it was at. Safe to run concurrently."""
    for attempt in range(10):
        try:
            return _migrate_once(engine)
        except sa.exc.OperationalError:
            # Two processes creating the tables at once on SQLite: the loser retries.
            if attempt == 9:
                raise
            time.sleep(0.2 * (attempt + 1))
        except sa.exc.IntegrityError:
            time.sleep(0.1)
    raise AssertionError("unreachable")


def _migrate_once(engine: sa.Engine) -> int:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7214001)"))
        schema_version.create(conn, checkfirst=True)
        current = conn.execute(sa.select(schema_version.c.version)).scalar()
        if current is None:
            conn.execute(schema_version.insert().values(id=1, version=0))
            current = 0
        if current > LATEST:
            raise errors.SchemaTooNew(
                f"the database is at schema version {current}, this jobsys knows {LATEST}: "
                "upgrade jobsys on this machine"
            )
        for step in MIGRATIONS[current:]:
            step(conn)
        if current < LATEST:
            conn.execute(schema_version.update().values(version=LATEST))
        return int(current)
