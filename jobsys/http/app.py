"""``create_app``: the FastAPI application of ``jobsys serve``.

A thin adapter over ``Service`` and ``Client``: every route authenticates its token, gets a
``Client`` acting as that principal and calls it, so the API agrees with the CLI, the MCP
tools and the run records. Extra lifespan contexts (the MCP server's session manager) go in
``app.state.lifespan_contexts``; the MCP endpoint is mounted at ``/mcp`` when the MCP SDK is
installed (``jobsys.mcp.mount``: loaded on its first request), and the dashboard is served at
``/`` when ``static/index.html`` exists.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from jobsys.base import config
from jobsys.http import (
    errors,
    guard,
    metrics,
    overview,
    routes_actors,
    routes_bulk,
    routes_jobs,
    routes_queues,
    routes_retention,
    routes_runs,
    routes_schedules,
    routes_subscriptions,
    routes_system,
    routes_workflows,
    stats,
)
from jobsys.service.process import Service

STATIC = Path(__file__).parent / "static"
THREADS = 100
"""Threads for blocking routes (a waited-for submit holds one for up to 300 s)."""

LifespanContext = Callable[[], contextlib.AbstractAsyncContextManager[Any]]

DESCRIPTION = """Typed background jobs with durable run records.

Authenticate with `Authorization: Bearer <token>` (create one with `jobsys tokens create`).
Every error is `{"error": {"type", "message", "fields"}}`."""


def create_app(
    settings_or_service: config.Settings | Service, metrics_public: bool = False
) -> FastAPI:
    """The API over ``settings_or_service`` (a ``Service`` given is not closed with the app;
    one made from settings is). ``metrics_public``: serve ``/metrics`` without a token."""
    if isinstance(settings_or_service, config.Settings):
        service, owned = Service(settings_or_service), True
    else:
        service, owned = settings_or_service, False

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        try:
            async with contextlib.AsyncExitStack() as stack:
                for make in list(app.state.lifespan_contexts):
                    await stack.enter_async_context(make())
                yield
        finally:
            if owned:
                service.close()

    app = _App(
        title="jobsys",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN: /docs is ours
        redoc_url=None,
    )
    app.state.service = service
    app.state.lifespan_contexts = []
    app.state.metrics_public = metrics_public
    app.state.metrics_registry = metrics.make_registry(service)
    app.state.summaries = stats.TTLCache(service.settings.stats_cache_seconds)
    app.state.scrapes = stats.TTLCache(service.settings.stats_cache_seconds)
    app.state.series = stats.TTLCache(service.settings.stats_cache_seconds)
    samples = app.state.samples = overview.Samples()
    sample = app.state.sample = overview.measure(
        service.store.engine, service.settings, service.registry
    )
    app.state.lifespan_contexts.append(lambda: overview.sampling(samples, sample))
    errors.install(app)
    app.add_middleware(guard.RequestGuard)
    for module in (
        routes_system,
        routes_jobs,
        routes_bulk,  # (before routes_runs: see there)
        routes_actors,
        routes_retention,  # (likewise)
        routes_queues,
        routes_runs,
        routes_schedules,
        routes_subscriptions,
        routes_workflows,
    ):
        app.include_router(module.router)
    _dashboard(app)
    if _installed("mcp"):
        importlib.import_module("jobsys.mcp.mount").mount(app, service)
    return app


class _App(FastAPI):
    def build_middleware_stack(self) -> Any:
        """Security headers outside everything else, so that every answer has them, an
        unexpected error's 500 too (``guard.SecurityHeaders``)."""
        return guard.SecurityHeaders(super().build_middleware_stack())


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its package is missing
        return False


def _dashboard(app: FastAPI) -> None:
    index = STATIC / "index.html"
    if not index.is_file():
        return

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        """The routes of ``/openapi.json``, listed by this origin's own script (Swagger UI
        would load its scripts from a CDN onto the dashboard's origin)."""
        return FileResponse(STATIC / "docs.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jobsys")
    except PackageNotFoundError:
        return "0"
