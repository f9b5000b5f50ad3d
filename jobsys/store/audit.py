"""The audit log: who did what, when, and how it ended, for denials and administrative
actions (tokens created and revoked, schedules deleted, runs cancelled)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa

from jobsys.declare import permissions
from jobsys.store import runs, schema

A = schema.audit


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    id: int
    at: dt.datetime
    principal_id: str
    tenant: str
    action: str
    target: str
    outcome: str
    """``allowed`` or ``denied``."""
    detail: str

    def to_json(self) -> dict[str, Any]:
        return runs.as_json(self)


class AuditLog:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def record(
        self,
        who: permissions.Principal,
        action: str,
        target: str,
        outcome: str,
        detail: str = "",
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                A.insert().values(
                    at=runs.utcnow(),
                    principal_id=who.id,
                    tenant=who.tenant,
                    action=action,
                    target=target[:300],
                    outcome=outcome,
                    detail=detail[:2000],
                )
            )

    def list(
        self, tenant: str | None = None, outcome: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        query = sa.select(A).order_by(A.c.id.desc()).limit(limit)
        if tenant is not None:
            query = query.where(A.c.tenant == tenant)
        if outcome is not None:
            query = query.where(A.c.outcome == outcome)
        with self.engine.connect() as conn:
            return [AuditEntry(**r._asdict()) for r in conn.execute(query)]
