"""``Client.admin``: API tokens, the audit log and the cluster's workers, for principals with
an admin role.

An admin administers its own tenant: it creates, lists and revokes that tenant's tokens and
reads that tenant's audit log; another tenant's token is not found. A token it creates acts in
its tenant, with no admin or superadmin role it does not hold itself
(``Policy.grant_problem``). A superadmin (``JOBSYS_SUPERADMIN_ROLES``) and the local admin
administer every tenant. Every interface (the CLI, and any other) goes through here.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from jobsys.base import errors
from jobsys.declare import permissions
from jobsys.service import cluster_view
from jobsys.store import audit, runs, tokens

if TYPE_CHECKING:
    from jobsys.service.client import Client


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

    @property
    def tenant(self) -> str | None:
        """The tenant this principal administers; ``None``: every tenant (a superadmin)."""
        who = self._client.principal
        return None if self._client.policy.is_superadmin(who) else who.tenant

    def create_token(
        self, principal: permissions.Principal, expires_at: dt.datetime | None = None
    ) -> tuple[tokens.TokenRecord, str]:
        """A token acting as ``principal``; the token string is returned once, never stored.
        Refused (``PermissionDenied``) for another tenant, or a role the admin may not grant."""
        who = self._require_admin("create token", principal.id)
        detail = f"roles={','.join(principal.roles)} tenant={principal.tenant}"
        problem = self._client.policy.grant_problem(who, principal)
        if problem is not None:
            self._client.audit.record(who, "create token", principal.id, "denied", detail)
            target = f"for {principal.id!r} in tenant {principal.tenant!r}"
            raise errors.PermissionDenied(who.id, "create a token", target, problem)
        record, token = self._tokens.create(principal, who.id, expires_at)
        self._client.audit.record(who, "create token", record.id, "allowed", detail)
        return record, token

    def kept_token(
        self,
        previous: str | None,
        principal: permissions.Principal,
        lifetime: dt.timedelta,
        min_left: dt.timedelta,
    ) -> tuple[tokens.TokenRecord, str]:
        """``previous`` (a token string) if it is still valid for ``principal`` for at least
        ``min_left``; otherwise a new token valid for ``lifetime``, with ``previous`` revoked:
        one such token is valid at a time, however often it is asked for."""
        record = self._tokens.valid(previous) if previous else None
        now = runs.utcnow()
        if (
            record is not None
            and previous is not None
            and record.principal == principal.model_dump(mode="json")
            and record.expires_at is not None
            and tokens.aware(record.expires_at) - now >= min_left
        ):
            return record, previous
        if record is not None:
            self.revoke_token(record.id)
        return self.create_token(principal, now + lifetime)

    def list_tokens(self) -> list[tokens.TokenRecord]:
        """The tokens of this admin's tenant (of every tenant for a superadmin)."""
        self._require_admin("list tokens", "*")
        return self._tokens.list(self.tenant)

    def revoke_token(self, token_id: str) -> tokens.TokenRecord:
        """Revoke a token of this admin's tenant; another tenant's is not found."""
        who = self._require_admin("revoke token", token_id)
        record = self._tokens.revoke(token_id, self.tenant)
        self._client.audit.record(who, "revoke token", token_id, "allowed")
        return record

    def audit_log(self, outcome: str | None = None, limit: int = 100) -> list[audit.AuditEntry]:
        """Denials and administrative actions, newest first, of this admin's tenant (of every
        tenant for a superadmin)."""
        self._require_admin("read audit", "*")
        return self._client.audit.list(tenant=self.tenant, outcome=outcome, limit=limit)

    def workers(self) -> dict[str, Any]:
        """The worker processes of the cluster (``cluster_view.workers``): every worker, since
        they serve every tenant, with the ids of the runs they hold of this admin's tenant (of
        every tenant for a superadmin)."""
        self._require_admin("list workers", "*")
        return cluster_view.workers(self._client, self.tenant)
