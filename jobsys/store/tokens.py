"""API tokens: a principal to act as, given to a script, a service or an agent.

A token is ``jst_<id>_<secret>``; the store keeps its id and the SHA-256 of its secret, so the
token itself is shown once, when it is created, and cannot be read back. The CLI takes one with
``--token`` (or ``JOBSYS_TOKEN``); the HTTP and MCP interfaces will take the same tokens.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

import sqlalchemy as sa

from jobsys.base import errors
from jobsys.declare import permissions
from jobsys.store import runs, schema

T = schema.tokens
PREFIX = "jst_"


@dataclasses.dataclass(frozen=True)
class TokenRecord:
    id: str
    principal: dict[str, Any]
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    def to_json(self) -> dict[str, Any]:
        return runs.as_json(self)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_id(token: str) -> str | None:
    """The id of an API token (``jst_<id>_<secret>``); ``None`` if it is not one."""
    found, _, secret = token.removeprefix(PREFIX).partition("_")
    return found if token.startswith(PREFIX) and found and secret else None


class TokenStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(
        self,
        principal: permissions.Principal,
        created_by: str,
        expires_at: dt.datetime | None = None,
    ) -> tuple[TokenRecord, str]:
        """A new token for ``principal``; returns its record and the token (shown once)."""
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = runs.utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                T.insert().values(
                    id=token_id,
                    secret_hash=_digest(secret),
                    principal=principal.model_dump(mode="json"),
                    principal_id=principal.id,
                    tenant=principal.tenant,
                    created_by=created_by,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return self.get(token_id), f"{PREFIX}{token_id}_{secret}"

    def get(self, token_id: str, tenant: str | None = None) -> TokenRecord:
        """The token's record; one of another tenant than ``tenant`` (if given) is not found."""
        query = sa.select(T).where(T.c.id == token_id)
        if tenant is not None:
            query = query.where(T.c.tenant == tenant)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise errors.TokenNotFound(token_id)
        return _record(row)

    def list(self, tenant: str | None = None) -> list[TokenRecord]:
        """The tokens of ``tenant`` (every tenant's for ``None``), oldest first."""
        query = sa.select(T).order_by(T.c.created_at)
        if tenant is not None:
            query = query.where(T.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query)]

    def revoke(self, token_id: str, tenant: str | None = None) -> TokenRecord:
        self.get(token_id, tenant)
        with self.engine.begin() as conn:
            conn.execute(
                T.update()
                .where(T.c.id == token_id, T.c.revoked_at.is_(None))
                .values(revoked_at=runs.utcnow())
            )
        return self.get(token_id)

    def valid(self, token: str) -> TokenRecord | None:
        """The record of ``token`` if it is known, not revoked and not expired."""
        try:
            self.principal(token)
        except errors.Unauthenticated:
            return None
        return self.get(token.removeprefix(PREFIX).partition("_")[0])

    def principal(self, token: str) -> permissions.Principal:
        """The principal a token acts as; ``Unauthenticated`` if it is unknown, revoked or
        expired (one message for all three: a caller learns nothing by guessing)."""
        refused = errors.Unauthenticated(
            "the token is unknown, revoked or expired; ask an admin for a new one "
            "(`jobsys tokens create`)"
        )
        token_id, _, secret = token.removeprefix(PREFIX).partition("_")
        if not token.startswith(PREFIX) or not token_id or not secret:
            raise refused
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(T).where(T.c.id == token_id)).first()
        now = runs.utcnow()
        if (
            row is None
            or not hmac.compare_digest(row.secret_hash, _digest(secret))
            or row.revoked_at is not None
            or (row.expires_at is not None and aware(row.expires_at) <= now)
        ):
            raise refused
        with self.engine.begin() as conn:
            conn.execute(T.update().where(T.c.id == token_id).values(last_used_at=now))
        return permissions.Principal.model_validate(row.principal)


def aware(value: dt.datetime) -> dt.datetime:
    """``value`` with its time zone (a database may return UTC times without one)."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _record(row: sa.Row[Any]) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        principal=row.principal,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )
