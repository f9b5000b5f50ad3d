"""The SQL schema of the store, as of the newest migration (``REVISION``).

Tables are SQLAlchemy Core tables, used by every query and by ``create_all``, which makes a
new database in one step. A database made earlier is brought here by the migrations in
``jobsys/store/migrations`` (Alembic revisions, which never change once released): any change
here comes with a new revision that makes the same change, and ``REVISION`` names it
(docs/internals.md, "Migrations"; tests/integration/test_migrations.py compares the two).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from jobsys.store import event_triggers, search

REVISION = "0023"
"""The migration whose schema the tables below describe: the head of
``jobsys/store/migrations/versions``. Revision ids are numbers, one more each time."""

LATEST = int(REVISION)
"""``REVISION`` as a number: what ``jobsys_schema`` records for a jobsys from before Alembic
(``migrations.runner``)."""

VERSION_TABLE = "jobsys_alembic_version"
"""Alembic's record of the database's revision."""


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

alembic_version = sa.Table(
    VERSION_TABLE,
    metadata,
    # As Alembic makes it (a new database is made without Alembic, in ``create_all``).
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
)

schema_version = sa.Table(  # legacy: the schema version a jobsys from before Alembic reads
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
    # Added by revision 0004 (schedules): which fire of which schedule version made this run.
    sa.Column("schedule_version", sa.Integer),
    sa.Column("fire_at", UTCDateTime),
    sa.Column("trigger", sa.String(16)),
    sa.Column("fire_key", sa.String(128)),
    # Added by revision 0005: the secret input values, encrypted (sealing.py).
    sa.Column("sealed", sa.Text),
    # Added by revision 0007: other runs wait for this one (its end releases them).
    sa.Column("has_dependents", sa.Boolean),
    # Added by revision 0012: why a waiting run waits, when a worker knows (no live worker
    # knows its job: ``parking.py``); cleared when the run is claimed or ends.
    sa.Column("waiting", JSON),
    # Added by revision 0016 (flow limits): the run's concurrency key (``flow.key_of``, set at
    # submit for a job with a ``concurrency_key``), and ``concurrency`` while the run waits
    # for a free slot of its job or key (``limits.py``), else null.
    sa.Column("limit_key", sa.String(200)),
    sa.Column("gate", sa.String(16)),
    # Added by revision 0019: when a person archived the run (out of default lists, kept).
    sa.Column("archived_at", UTCDateTime),
    sa.Index("ix_jobsys_runs_state_job", "state", "job"),
    sa.Index("ix_jobsys_runs_state_created", "state", "created_at"),
    sa.Index("ix_jobsys_runs_job_created", "job", "created_at"),
    sa.Index("ix_jobsys_runs_created", "created_at"),
    sa.Index("ix_jobsys_runs_tenant_created", "tenant", "created_at"),
    sa.Index("ix_jobsys_runs_state_lease", "state", "lease_expires_at"),
    # The partial indexes (PARTIAL_INDEXES) are created in plain SQL: declared here, their
    # dialect options would load every dialect's package (2.8 MiB for PostgreSQL's) into each
    # process, SQLite or not.
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
    # Added by revision 0011: what the schedule is for, in words.
    sa.Column("description", sa.Text),
    # Added by revision 0019: when a person archived the schedule (paused, out of lists).
    sa.Column("archived_at", UTCDateTime),
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


job_definitions = sa.Table(
    "jobsys_job_definitions",
    metadata,
    # Keyed by tenant since revision 0009: a definition belongs to a tenant (its name is
    # unique there) and to the principal that first registered it; its secret headers, sealed.
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

# Added by revision 0013: each worker process's heartbeat (``presence.py``), upserted by its own
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

# Added by revision 0017: paused work (``pauses.py``): a queue, a job or everything, of one
# tenant or of every tenant ("*"). The claim of a run reads it (``pauses.NOT_PAUSED``).
pauses = sa.Table(
    "jobsys_pauses",
    metadata,
    sa.Column("scope", sa.String(8), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("tenant", sa.String(200), primary_key=True),
    sa.Column("paused_by", sa.String(200), nullable=False),
    sa.Column("paused_at", UTCDateTime, nullable=False),
)

# Added by revision 0018: the run token of the outside actor that took a run (``actors.py``),
# one per run, for the attempt it holds; only the SHA-256 of its secret is kept.
run_tokens = sa.Table(
    "jobsys_run_tokens",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("actor", JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # Added by revision 0023: the API token that took the run (``NULL``: none, the local
    # admin); the run token stops working once that one is revoked or expires.
    sa.Column("token_id", sa.String(32)),
)

# Added by revision 0015: the history of each run (``events.py``), written by triggers on
# ``jobsys_runs`` (``events.create_triggers``) in the transaction of each change. Revision 0022:
# AUTOINCREMENT on SQLite, so an id is never given twice (the newest events deleted with their
# run, the next would take an id the webhook notifier's cursor has passed); PostgreSQL's
# SERIAL never reuses one.
run_events = sa.Table(
    "jobsys_run_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("from_state", sa.String(16)),
    sa.Column("to_state", sa.String(16)),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("worker", sa.String(255)),
    sa.Column("actor", sa.String(200)),
    sa.Column("error", JSON),
    sa.Column("detail", JSON),
    sa.Index("ix_jobsys_run_events_run", "run_id", "id"),
    sqlite_autoincrement=True,
)

# Added by revision 0020: the vectors semantic search ranks (``semantic.py``), one per indexed
# text: each entry of the keyword index (a run's error, a batch of its log lines; ``source``
# is the entry's id) and each job's name, description and tags (``source``: a digest of that
# text, so that a changed description is embedded again). ``vector``: float32, unit length.
embeddings = sa.Table(
    "jobsys_embeddings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("ref", sa.String(200), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("vector", sa.LargeBinary, nullable=False),
    sa.UniqueConstraint("kind", "ref", "source", name="uq_jobsys_embeddings"),
    # (the newest vectors of a kind first: what a search reads)
    sa.Index("ix_jobsys_embeddings_kind", "kind", "id"),
)

# Added by revision 0020: how far the indexer got through the keyword index (``done_to``), the
# newest entry it may take next pass (``settled_to``), and which worker holds the work
# (``holder``, until ``until``, seconds since the epoch).
embed_progress = sa.Table(
    "jobsys_embed_progress",
    metadata,
    sa.Column("name", sa.String(16), primary_key=True),
    sa.Column("done_to", sa.BigInteger, nullable=False),
    sa.Column("settled_to", sa.BigInteger, nullable=False),
    sa.Column("holder", sa.String(255)),
    sa.Column("until", sa.Float, nullable=False),
)


# Added by revision 0021: webhook subscriptions (``subscriptions.py``), the outbox of their
# deliveries (one per subscription and run event: the delivery id), and the notifier's cursor
# over ``jobsys_run_events``.
subscriptions = sa.Table(
    "jobsys_subscriptions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("target", sa.String(200)),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("events", JSON, nullable=False),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("after_event", sa.BigInteger, nullable=False),
    sa.Index("ix_jobsys_subscriptions_tenant", "tenant", "created_at"),
)

deliveries = sa.Table(
    "jobsys_deliveries",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("subscription_id", sa.String(32), nullable=False),
    sa.Column("event_id", sa.BigInteger),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(32)),
    sa.Column("payload", JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_at", sa.Float),
    sa.Column("event_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Column("last_status", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("log", JSON, nullable=False),
    sa.Index("ix_jobsys_deliveries_due", "state", "next_at"),
    sa.Index("ix_jobsys_deliveries_subscription", "subscription_id", "created_at"),
)

notify_cursor = sa.Table(
    "jobsys_notify_cursor",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("event_id", sa.BigInteger, nullable=False),
)

PARTIAL_INDEXES = (
    # A run without the key (most runs) costs no write in these.
    "CREATE UNIQUE INDEX IF NOT EXISTS ix_jobsys_runs_job_idempotency ON jobsys_runs "
    "(tenant, job, idempotency_key) WHERE idempotency_key IS NOT NULL",
    "CREATE UNIQUE INDEX IF NOT EXISTS ix_jobsys_runs_fire_key ON jobsys_runs (fire_key) "
    "WHERE fire_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_schedule ON jobsys_runs "
    "(schedule_id, created_at) WHERE schedule_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_workflow ON jobsys_runs "
    "(workflow_id, created_at) WHERE workflow_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_parent ON jobsys_runs "
    "(parent_id, created_at) WHERE parent_id IS NOT NULL",
    # Added by revision 0014: delayed runs not yet published, by due time (``claim_due``). A
    # run without a start time, or once published, costs no write in it.
    "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_due ON jobsys_runs (next_attempt_at) "
    "WHERE state = 'pending' AND published_at IS NULL AND next_attempt_at IS NOT NULL",
    # Added by revision 0016: runs waiting for a free slot of their job or key, in the order
    # they take one (``limits.py``). A run that waits for no slot costs no write in it.
    "CREATE INDEX IF NOT EXISTS ix_jobsys_runs_gated ON jobsys_runs "
    "(job, limit_key, priority, created_at) WHERE gate IS NOT NULL",
)


def create_all(conn: sa.Connection) -> None:
    """Make a new database's tables as of ``REVISION``, in the caller's transaction (the
    caller records ``REVISION`` in ``alembic_version``)."""
    metadata.create_all(conn)
    for sql in PARTIAL_INDEXES:
        conn.execute(sa.text(sql))
    search.create(conn)
    event_triggers.create_triggers(conn)
