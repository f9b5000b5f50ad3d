"""``Client.admin``: API tokens and the audit log, for principals with an admin role."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from jobsys import audit, errors, permissions, tokens

if TYPE_CHECKING:
    from jobsys.client import Client


class AdminClient:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._tokens = tokens.TokenStore(client.store.engine)

    def _require_admin(self, action: str, target: str) -> permissions.Principal:
        who = self._client.principal
        if not self._client.policy.is_admin(who):
            self._client.audit.record(who, action, target, "denied", "needs an admin role")
            raise errors.PermissionDenied(who.id, action, "(administration)")
        return who

    def create_token(
        self, principal: permissions.Principal, expires_at: dt.datetime | None = None
    ) -> tuple[tokens.TokenRecord, str]:
        """A token acting as ``principal``; the token string is returned once, never stored."""
        who = self._require_admin("create token", principal.id)
        record, token = self._tokens.create(principal, who.id, expires_at)
        detail = f"roles={','.join(principal.roles)} tenant={principal.tenant}"
        self._client.audit.record(who, "create token", record.id, "allowed", detail)
        return record, token

    def list_tokens(self) -> list[tokens.TokenRecord]:
        self._require_admin("list tokens", "*")
        return self._tokens.list()

    def revoke_token(self, token_id: str) -> tokens.TokenRecord:
        who = self._require_admin("revoke token", token_id)
        record = self._tokens.revoke(token_id)
        self._client.audit.record(who, "revoke token", token_id, "allowed")
        return record

    def audit_log(self, outcome: str | None = None, limit: int = 100) -> list[audit.AuditEntry]:
        """Denials and administrative actions, newest first, of every tenant."""
        self._require_admin("read audit", "*")
        return self._client.audit.list(outcome=outcome, limit=limit)
