"""The MCP endpoint at ``/mcp`` of ``jobsys serve``, loaded on its first request.

The MCP SDK costs a server about half a second of CPU and 20 MiB to import; a server no agent
talks to never pays it. ``mount`` puts a small endpoint at ``/mcp`` and a task group in the
app's lifespan (``app.state.lifespan_contexts``). The first request imports ``http.py`` in a
thread (the event loop keeps serving), starts the session manager's ``run()`` in that task
group, and from then on every request goes straight to the authenticated endpoint. When the
server stops, the task group is cancelled and the session manager closes its sessions.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from jobsys.service.process import Service

PATH = "/mcp"


def mount(app: FastAPI, service: Service) -> None:
    """Serve the MCP tools at ``/mcp`` of ``app`` (token-authenticated, ``http.py``)."""
    endpoint = OnFirstUse(service)
    for path in (PATH + "/", PATH):  # first, ahead of any catch-all route
        app.router.routes.insert(0, Route(path, endpoint=endpoint, include_in_schema=False))
    contexts = getattr(app.state, "lifespan_contexts", None)
    if contexts is None:
        contexts = app.state.lifespan_contexts = []
    contexts.append(endpoint.lifespan)


class OnFirstUse:
    """ASGI app: loads the MCP endpoint on the first request, then hands every request to it."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._app: ASGIApp | None = None
        self._lock = anyio.Lock()
        self._tasks: anyio.abc.TaskGroup | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            try:
                yield
            finally:
                self._tasks = None
                tasks.cancel_scope.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app or await self._load()
        await app(scope, receive, send)

    async def _load(self) -> ASGIApp:
        async with self._lock:
            if self._app is None:
                if self._tasks is None:
                    raise RuntimeError("the MCP endpoint serves only while the app's lifespan runs")
                http = await anyio.to_thread.run_sync(importlib.import_module, "jobsys.mcp.http")
                manager, app = http.endpoint(self.service)
                await self._tasks.start(_run, manager)
                self._app = app
            return self._app


async def _run(manager: Any, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    async with manager.run():
        task_status.started()
        await anyio.sleep_forever()
