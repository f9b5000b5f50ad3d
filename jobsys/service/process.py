"""The shared parts of a long-running server process (the HTTP API, MCP over HTTP).

One run store, one celery_api.Celery app and one registry per process; a ``Client`` per caller, made
cheaply for the principal its API token names. Every interface goes through ``Client``, so
the HTTP API, the MCP tools, the dashboard and the CLI agree with each other and with the run
records.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from jobsys.base import config, errors
from jobsys.declare import catalog, jobs, permissions
from jobsys.service import client
from jobsys.service.client import Client
from jobsys.store import stores, tokens

if TYPE_CHECKING:
    from jobsys.engine import celery_api


class Service:
    def __init__(self, settings: config.Settings, registry: jobs.Registry | None = None) -> None:
        self.settings = settings
        self.registry = (
            registry if registry is not None else catalog.load_registry(settings.catalog)
        )
        self.store = stores.Store.open(settings.database_url)
        self.tokens = tokens.TokenStore(self.store.engine)
        self._app: celery_api.Celery | None = None

    @property
    def app(self) -> celery_api.Celery:
        if self._app is None:
            from jobsys.engine import broker  # on first use (``Submitting.app`` says why)

            self._app = broker.make_celery(self.settings, self.registry)
        return self._app

    def authenticate(self, token: str | None) -> permissions.Principal:
        """The principal of an API token; raises ``Unauthenticated`` for none, or one that is
        unknown, revoked or expired."""
        if not token:
            raise errors.Unauthenticated(
                "an API token is required: send `Authorization: Bearer <token>` "
                "(create one with `jobsys tokens create`)"
            )
        return self.tokens.principal(token)

    @functools.lru_cache(maxsize=256)  # noqa: B019 (one Service per process)
    def client(
        self, principal: permissions.Principal, token_id: str | None = None
    ) -> client.Client:
        """A client acting as ``principal``, with the API token ``token_id`` (the one that
        authenticated the request, if any: a run it takes is bound to it), sharing this
        process's store and broker. Never ``close()`` it: the service owns the connections."""
        return client.Client(
            self.settings,
            self.registry,
            principal,
            store=self.store,
            app=self.app,
            token_id=token_id,
        )

    def token_client(self, token: str | None) -> Client:
        """The client of an API token: its principal's, bound to it; ``Unauthenticated``
        for none, or one that is unknown, revoked or expired."""
        principal = self.authenticate(token)
        assert token is not None
        return self.client(principal, tokens.token_id(token))

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
        self.store.close()
