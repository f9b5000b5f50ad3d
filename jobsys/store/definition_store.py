"""Runtime definitions in the store: their records, ``DefinitionStore`` (the only writer of
the definitions table), and ``Source``, what a ``Registry`` reads them from. Parsing and
building them is ``jobsys/declare/definitions.py``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from jobsys.base import config, errors, sealing
from jobsys.declare import definitions, http_jobs, jobs, workflows
from jobsys.store import runs, schema

log = logging.getLogger("jobsys.definitions")


@dataclasses.dataclass(frozen=True)
class DefinitionRecord:
    tenant: str
    name: str
    kind: str
    data: dict[str, Any]
    """As registered, secret header values replaced by ``**********``."""
    version: int
    owner: str
    """The principal that registered it first (it, or an admin of the tenant, may change it)."""
    created_by: str
    """The principal that registered this version."""
    created_at: dt.datetime
    updated_at: dt.datetime
    removed_at: dt.datetime | None = None
    sealed: str | None = None
    """The secret header values, sealed (``sealing.Sealer``)."""

    def to_json(self) -> dict[str, Any]:
        """What readers see: never a stored credential."""
        return {
            **http_jobs.masked(self.data),
            "version": self.version,
            "tenant": self.tenant,
            "owner": self.owner,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


class DefinitionStore:
    """The definitions of every tenant; each method names the tenant it acts in."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.table = schema.job_definitions

    def put(
        self,
        tenant: str,
        data: dict[str, Any],
        by: str,
        sealed: str | None = None,
        current: DefinitionRecord | None = None,
    ) -> DefinitionRecord:
        """Add the definition, or replace ``current`` (the row of that name, as read before
        the caller checked who may replace it; removed or not): its version goes up. If the
        row changed since, nothing is written and ``JobDeclarationError`` says so."""
        t, now, name = self.table, runs.utcnow(), data["name"]
        values = {
            "kind": data["kind"],
            "data": data,
            "sealed": sealed,
            "created_by": by,
            "created_at": now,
            "updated_at": now,
            "removed_at": None,
        }
        try:
            with self.engine.begin() as conn:
                if current is None:  # (a row of that name made meanwhile: IntegrityError)
                    conn.execute(
                        t.insert().values(tenant=tenant, name=name, version=1, owner=by, **values)
                    )
                    done = 1
                else:
                    owner = by if current.removed_at is not None else current.owner
                    done = conn.execute(
                        t.update()
                        .where(
                            t.c.tenant == tenant, t.c.name == name, t.c.version == current.version
                        )
                        .values(version=current.version + 1, owner=owner, **values)
                    ).rowcount
        except sa.exc.IntegrityError:  # registered by another request meanwhile
            done = 0
        if done != 1:
            raise errors.JobDeclarationError(
                name,
                "name",
                "was registered or changed by another request meanwhile; read it again "
                "(`jobsys jobs definitions`) and retry",
            )
        return self.get(tenant, name)

    def find(self, tenant: str, name: str) -> DefinitionRecord | None:
        """The row of that name in the tenant, removed (a tombstone) or not."""
        t = self.table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.tenant == tenant, t.c.name == name)).first()
        return None if row is None else _record(row)

    def get(self, tenant: str, name: str) -> DefinitionRecord:
        record = self.find(tenant, name)
        if record is None or record.removed_at is not None:
            raise errors.UnknownJob(name, [])
        return record

    def remove(self, tenant: str, name: str) -> bool:
        t, now = self.table, runs.utcnow()
        with self.engine.begin() as conn:
            done = conn.execute(
                t.update()
                .where(t.c.tenant == tenant, t.c.name == name, t.c.removed_at.is_(None))
                .values(removed_at=now, updated_at=now, version=t.c.version + 1, sealed=None)
            ).rowcount
        return bool(done)

    def all(self, tenant: str | None = None) -> list[DefinitionRecord]:
        """The live definitions of ``tenant`` (``None``: of every tenant, for the registry)."""
        t = self.table
        query = sa.select(t).where(t.c.removed_at.is_(None)).order_by(t.c.tenant, t.c.name)
        if tenant is not None:
            query = query.where(t.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query)]

    def revision(self) -> tuple[int, int]:
        """Changes whenever a definition is added, replaced or removed."""
        t = self.table
        with self.engine.connect() as conn:
            count, total = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(t.c.version), 0))
            ).one()
        return int(count), int(total)


def _record(row: sa.Row[Any]) -> DefinitionRecord:
    return DefinitionRecord(
        tenant=row.tenant,
        name=row.name,
        kind=row.kind,
        data=dict(row.data),
        version=row.version,
        owner=row.owner,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        removed_at=row.removed_at,
        sealed=row.sealed,
    )


def source(settings: config.Settings, engine: sa.Engine) -> Source:
    """The definitions a process with these settings reads (see ``Registry.attach``)."""
    return Source(
        DefinitionStore(engine),
        settings.http_job_hosts,
        sealing.Sealer.for_home(settings.secret_key, settings.home),
    )


@dataclasses.dataclass
class Source:
    """What a ``Registry`` reads runtime definitions from."""

    store: DefinitionStore
    http_hosts: tuple[str, ...] = ()
    sealer: sealing.Sealer | None = None
    """Opens the secret headers of HTTP jobs (when they are called)."""

    def same_store(self, other: jobs.DefinitionSource) -> bool:
        return isinstance(other, Source) and other.store.engine is self.store.engine

    def revision(self) -> tuple[int, int]:
        return self.store.revision()

    def by_tenant(self) -> dict[str, list[DefinitionRecord]]:
        found: dict[str, list[DefinitionRecord]] = {}
        for record in self.store.all():
            found.setdefault(record.tenant, []).append(record)
        return found

    def build_workflow(self, definition: Any, registry: jobs.Registry) -> workflows.Workflow:
        return definitions.build_workflow(definition, registry)

    def build(
        self, records: Sequence[DefinitionRecord], registry: jobs.Registry
    ) -> tuple[dict[str, jobs.JobSpec], list[definitions.WorkflowDefinition]]:
        """The specs of the job definitions of one tenant (``registry`` is that tenant's
        view), and the workflow definitions left to build once those specs are known. A
        definition that no longer builds (its target left the catalog, its host the
        allow-list) is skipped, and logged."""
        specs: dict[str, jobs.JobSpec] = {}
        later: list[definitions.WorkflowDefinition] = []
        for record in records:
            try:
                d = definitions.parse(record.data)
                if isinstance(d, definitions.AliasDefinition):
                    specs[d.name] = definitions.build_alias(d, registry)
                elif isinstance(d, definitions.HttpDefinition):
                    specs[d.name] = http_jobs.build_http(
                        d, self.http_hosts, self._secrets(record.sealed)
                    )
                else:
                    later.append(d)
            except errors.JobsysError as exc:
                log.warning("jobsys: job definition %s skipped: %s", record.name, exc)
        return specs, later

    def _secrets(self, sealed: str | None) -> http_jobs.Secrets:
        sealer = self.sealer
        if not sealed or sealer is None:
            return http_jobs.no_secrets

        def opened() -> dict[str, str]:
            return {str(k): str(v) for k, v in sealer.open(sealed).items()}

        return opened
