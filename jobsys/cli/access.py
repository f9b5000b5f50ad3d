"""``jobsys tokens`` (create, list, revoke) and ``jobsys audit list``: admin roles only, each
within its own tenant (a superadmin and the local admin: every tenant)."""

from __future__ import annotations

import click
from rich.table import Table

from jobsys.cli.base import emit_json, handle_errors, main, make_client, out, parse_since_future
from jobsys.declare import permissions


@main.group("tokens")
def tokens_group() -> None:
    """API tokens: act as a principal from scripts, services and agents (--token)."""


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in (text or "").split(",") if x.strip())


@tokens_group.command("create")
@click.option("--principal", "principal_id", required=True, help="The principal's id.")
@click.option("--roles", default="", help="Comma-separated roles.")
@click.option("--scopes", default="", help="Comma-separated scopes.")
@click.option(
    "--tenant",
    default=None,
    help="The token's tenant (default: yours; the local admin's is 'default').",
)
@click.option("--expires", default=None, help="A duration (30d, 12h) or an ISO time.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def tokens_create(
    principal_id: str,
    roles: str,
    scopes: str,
    tenant: str | None,
    expires: str | None,
    as_json: bool,
) -> None:
    """Create a token; it is printed once and cannot be shown again. An admin creates tokens
    of its own tenant, with no admin role it does not hold."""
    c = make_client()
    who = permissions.Principal(
        id=principal_id,
        roles=_names(roles),
        scopes=_names(scopes),
        tenant=tenant or c.principal.tenant,
    )
    record, token = c.admin.create_token(who, parse_since_future(expires))
    if as_json:
        emit_json({**record.to_json(), "token": token})
    else:
        click.echo(token)


@tokens_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def tokens_list(as_json: bool) -> None:
    """Tokens of your tenant (never their secrets): principal, expiry, revocation, last use."""
    found = make_client().admin.list_tokens()
    if as_json:
        emit_json([t.to_json() for t in found])
        return
    table = Table("id", "principal", "roles", "tenant", "expires", "revoked", "last used")
    for t in found:
        p = t.principal
        table.add_row(
            t.id,
            p["id"],
            ",".join(p.get("roles", [])),
            p.get("tenant", ""),
            f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never",
            f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "",
            f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "",
        )
    out.print(table)


@tokens_group.command("revoke")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def tokens_revoke(token_id: str, as_json: bool) -> None:
    """Revoke a token at once."""
    record = make_client().admin.revoke_token(token_id)
    if as_json:
        emit_json(record.to_json())
        return
    click.echo(f"revoked {record.id}")


@main.group("audit")
def audit_group() -> None:
    """The audit log: denials and administrative actions."""


@audit_group.command("list")
@click.option("--outcome", type=click.Choice(["allowed", "denied"]), default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def audit_list(outcome: str | None, limit: int, as_json: bool) -> None:
    """Newest first: who, what, when, outcome (your tenant's; a superadmin's: every one)."""
    entries = make_client().admin.audit_log(outcome=outcome, limit=limit)
    if as_json:
        emit_json([e.to_json() for e in entries])
        return
    table = Table("at (UTC)", "principal", "tenant", "action", "target", "outcome")
    for e in entries:
        table.add_row(
            f"{e.at:%Y-%m-%d %H:%M:%S}", e.principal_id, e.tenant, e.action, e.target, e.outcome
        )
    out.print(table)


@main.command("secret-key")
@click.option("--json", "as_json", is_flag=True)
def secret_key(as_json: bool) -> None:
    """Print a new key for JOBSYS_SECRET_KEY (the same on every machine of a cluster)."""
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    if as_json:
        emit_json({"secret_key": key})
        return
    click.echo(key)
