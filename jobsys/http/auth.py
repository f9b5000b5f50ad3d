"""Token authentication: ``Authorization: Bearer <token>`` names the principal a request acts
as, and the route gets a ``Client`` acting as that principal (``Service.client``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from jobsys.base import errors
from jobsys.declare import permissions
from jobsys.service.client import Client
from jobsys.service.process import Service

bearer = HTTPBearer(
    auto_error=False,
    description="An API token: `jobsys tokens create --principal ID --roles ...`.",
)


def service(request: Request) -> Service:
    found: Service = request.app.state.service
    return found


def header_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthenticated(
            "the Authorization header must be `Bearer <token>` "
            "(create a token with `jobsys tokens create`)"
        )
    return token.strip()


def _client_for(request: Request, token: str | None) -> Client:
    c = service(request).token_client(token)
    request.state.principal = c.principal
    return c


def current_client(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Client:
    """The client acting as the request's token; ``Unauthenticated`` (401) without one."""
    return _client_for(request, header_token(request))


def stream_client(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    token: Annotated[
        str | None,
        Query(description="The API token, for EventSource (which cannot set headers)."),
    ] = None,
) -> Client:
    """As ``current_client``, also accepting ``?token=`` (browsers' EventSource)."""
    return _client_for(request, header_token(request) or token)


def current_principal(client: Annotated[Client, Depends(current_client)]) -> permissions.Principal:
    return client.principal


ClientDep = Annotated[Client, Depends(current_client)]
StreamClientDep = Annotated[Client, Depends(stream_client)]
