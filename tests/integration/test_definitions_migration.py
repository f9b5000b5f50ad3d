"""Schema version 9 (revision 0009): definitions stored before tenants and owners existed
belong to the default tenant and to the principal that registered them, and keep working;
afterwards a name is unique per tenant, not across tenants."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobsys.base import errors
from jobsys.store import database, definition_store, schema, stores
from jobsys.store.migrations import runner
from tests.cluster import Database

pytestmark = pytest.mark.integration


def _version_8(url: str) -> None:
    """A store as jobsys made it at schema version 8, before Alembic (``jobsys_schema`` says
    8, Alembic's table is absent), with one definition."""
    engine = database.make_engine(url)
    old = sa.MetaData()
    table = sa.Table(
        "jobsys_job_definitions",
        old,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", schema.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", schema.UTCDateTime, nullable=False),
        sa.Column("updated_at", schema.UTCDateTime, nullable=False),
        sa.Column("removed_at", schema.UTCDateTime),
    )
    now = dt.datetime.now(dt.UTC)
    runner.upgrade(engine, to="0008")
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {schema.VERSION_TABLE}"))
        conn.execute(
            table.insert().values(
                name="legacy.add",
                kind="alias",
                data={"name": "legacy.add", "kind": "alias", "target": "examples.add"},
                version=3,
                created_by="carol",
                created_at=now,
                updated_at=now,
            )
        )
    engine.dispose()


@pytest.fixture
def url(tmp_path: Path, database_url: str | None) -> Iterator[str]:
    db = Database(tmp_path, database_url)
    _version_8(db.url)
    yield db.url
    db.drop()


def test_old_definitions_belong_to_the_default_tenant_and_their_author(url: str) -> None:
    store = stores.Store.open(url)  # migrates to the latest version
    try:
        with store.engine.connect() as conn:
            version = conn.execute(sa.select(schema.schema_version.c.version)).scalar()
        assert version == schema.LATEST
        defs = definition_store.DefinitionStore(store.engine)
        (record,) = defs.all()
        assert (record.tenant, record.name, record.owner, record.version) == (
            "default",
            "legacy.add",
            "carol",
            3,
        )
        with pytest.raises(errors.UnknownJob):  # not another tenant's
            defs.get("acme", "legacy.add")
        # The same name in another tenant is another definition.
        data = {"name": "legacy.add", "kind": "alias", "target": "examples.add"}
        other = defs.put("acme", data, "alice")
        assert (other.tenant, other.owner, other.version) == ("acme", "alice", 1)
        assert defs.get("default", "legacy.add").version == 3
        assert {r.tenant for r in defs.all()} == {"default", "acme"}
        assert len(defs.all("acme")) == 1
    finally:
        store.close()
