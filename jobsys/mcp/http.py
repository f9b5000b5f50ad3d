"""The MCP tools over streamable HTTP, at ``/mcp`` of the HTTP server (``jobsys serve``,
mounted by ``mount.py``).

Every request must carry ``Authorization: Bearer <token>`` (an API token, ``jobsys tokens
create``); without a valid one the answer is 401 with the HTTP API's error body. The tools of a
request act as its token's principal (``Service.client``), so permissions, tenants and the
audit log apply as they do to the HTTP API. An MCP session is bound to the token that opened it:
another token presenting its session id is answered 404, as if it did not exist.
"""

from __future__ import annotations

import contextvars
import hashlib
from typing import Any

import anyio.to_thread
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from jobsys.base import errors
from jobsys.declare import permissions
from jobsys.mcp import answers, server
from jobsys.service.client import Client
from jobsys.service.process import Service
from jobsys.store import tokens

SCOPE_KEY = "jobsys.principal"
"""Where the authenticated principal is kept in the ASGI scope of a request."""
TOKEN_ID_KEY = "jobsys.token_id"
"""Where the id of the request's API token is kept beside it (a run it takes is bound to it)."""
MAX_BODY_BYTES = 1 << 20

current_principal: contextvars.ContextVar[permissions.Principal | None] = contextvars.ContextVar(
    "jobsys_mcp_principal", default=None
)
"""The principal of the HTTP request being served (a fallback for tool handlers that see no
request)."""
current_token_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jobsys_mcp_token_id", default=None
)
"""The id of that request's API token (the same fallback)."""


def endpoint(service: Service) -> tuple[StreamableHTTPSessionManager, ASGIApp]:
    """The MCP tools as a token-authenticated ASGI app, and the session manager it serves
    through (whose ``run()`` must be running while requests are served: ``mount.py``)."""
    mcp_server = server.build_server(lambda ctx: _client(service, ctx))
    manager = StreamableHTTPSessionManager(
        app=mcp_server, max_request_body_size=MAX_BODY_BYTES, session_idle_timeout=30 * 60
    )
    return manager, Authenticated(manager.handle_request, service)


def _client(service: Service, ctx: server.Context) -> Client:
    principal = token_id = None
    request = ctx.request
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict):
        principal, token_id = scope.get(SCOPE_KEY), scope.get(TOKEN_ID_KEY)
    if principal is None:
        principal, token_id = current_principal.get(), current_token_id.get()
    if not isinstance(principal, permissions.Principal):
        raise errors.Unauthenticated(
            "an API token is required: send `Authorization: Bearer <token>`"
        )
    return service.client(principal, token_id if isinstance(token_id, str) else None)


def bearer_token(scope: Scope) -> str | None:
    """The token of ``Authorization: Bearer <token>``; ``Unauthenticated`` for another
    scheme."""
    for key, value in scope.get("headers", ()):
        if key.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise errors.Unauthenticated(
                    "the Authorization header must be `Bearer <token>` "
                    "(create a token with `jobsys tokens create`)"
                )
            return token.strip()
    return None


class Authenticated:
    """ASGI wrapper: authenticate the request's token, then serve it as its principal."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            token = bearer_token(scope)
            principal = await anyio.to_thread.run_sync(self.service.authenticate, token)
        except errors.Unauthenticated as exc:
            await _error(401, exc)(scope, receive, send)
            return
        except Exception as exc:  # the token store is unreachable
            await _error(503, exc)(scope, receive, send)
            return
        assert token is not None
        token_id = tokens.token_id(token)
        scope = {
            **scope,
            SCOPE_KEY: principal,
            TOKEN_ID_KEY: token_id,
            "user": _user(principal, token),
        }
        reset = current_principal.set(principal)
        reset_id = current_token_id.set(token_id)
        try:
            await self.app(scope, receive, send)
        finally:
            current_token_id.reset(reset_id)
            current_principal.reset(reset)


def _user(principal: permissions.Principal, token: str) -> AuthenticatedUser:
    """The SDK's user for the token: it binds each MCP session to the token that opened it."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    access = AccessToken(
        token=digest,
        client_id=principal.id,
        scopes=list(principal.scopes),
        subject=f"{principal.tenant}/{principal.id}/{digest[:16]}",
    )
    return AuthenticatedUser(access)


def _error(status: int, exc: Exception) -> JSONResponse:
    body: dict[str, Any] = answers.error_body(exc)
    if status == 503:
        body["error"]["type"] = "ServiceUnavailable"
        body["error"]["message"] = (
            "the token store cannot be reached; check JOBSYS_DATABASE_URL and retry"
        )
    headers = {"WWW-Authenticate": 'Bearer realm="jobsys"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)
