"""Health, readiness, the caller's principal, statistics, the workers and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from jobsys.http import metrics, overview, stats
from jobsys.http.auth import ClientDep, bearer, header_token, service
from jobsys.http.errors import ApiError
from jobsys.http.errors import body as error_body
from jobsys.service.process import Service
from jobsys.store import runs

router = APIRouter(tags=["system"])


@router.get("/api/v1/health", summary="The server answers (no token needed)")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/api/v1/ready", summary="The database and the broker answer (no token needed)")
def ready(svc: Annotated[Service, Depends(service)]) -> JSONResponse:
    database = stats.database_ok(svc.store.engine)
    broker = stats.broker_ok(svc.settings)
    if database == "ok" and broker == "ok":
        return JSONResponse({"status": "ready", "database": "ok", "broker": "ok"})
    down = [f"{part} {state}" for part, state in (("database", database), ("broker", broker))]
    message = "not ready: " + ", ".join(d for d in down if not d.endswith(" ok"))
    return JSONResponse(
        {
            "status": "unavailable",
            "database": database,
            "broker": broker,
            **error_body(
                "ServiceUnavailable",
                message + " (check JOBSYS_DATABASE_URL, JOBSYS_BROKER_URL, or start `jobsys up`)",
            ),
        },
        status_code=503,
    )


@router.get("/api/v1/me", summary="The principal the token acts as")
def me(c: ClientDep) -> dict[str, Any]:
    p = c.principal
    return {
        "id": p.id,
        "roles": list(p.roles),
        "scopes": list(p.scopes),
        "tenant": p.tenant,
        "admin": c.policy.is_admin(p),
    }


@router.get("/api/v1/stats", summary="Counts by state and job, throughput, queues, workers")
def get_stats(
    request: Request, c: ClientDep, svc: Annotated[Service, Depends(service)]
) -> dict[str, Any]:
    scope = stats.Scope(tenant=c.principal.tenant, jobs=c.visible_jobs())
    # Per scope (tenant and visible jobs): dashboards polling stats cost one computation.
    summaries: stats.TTLCache = request.app.state.summaries
    return summaries.get(
        scope, lambda: stats.summary(svc.store.engine, svc.settings, c.registry, scope)
    )


@router.get(
    "/api/v1/stats/series",
    summary="Runs per bucket by state, failure rate, p50/p95 duration per job, queue depth "
    "and live workers over the last hour or day",
)
def get_series(
    request: Request,
    c: ClientDep,
    svc: Annotated[Service, Depends(service)],
    window: Annotated[
        Literal["1h", "1d"],
        Query(description="1h: by the minute; 1d: by the quarter hour"),
    ] = "1h",
) -> dict[str, Any]:
    """The dashboard's overview (``http/overview.py``): the run figures count the caller's
    tenant and the jobs it may list; queue depth, sampled by this server, the caller's tenant's
    queues (the catalog's and its runtime jobs', as ``GET /api/v1/stats`` lists them), never
    another tenant's. Live workers are the cluster's, shared by every tenant: every caller sees
    their count (it says whether anything serves its queues, names no other tenant's work,
    and ``GET /api/v1/stats`` lists the workers seen too)."""
    scope = stats.Scope(tenant=c.principal.tenant, jobs=c.visible_jobs())
    queues = tuple(stats.queue_names(c.registry, scope.tenant))
    samples: overview.Samples = request.app.state.samples
    samples.take(runs.utcnow(), request.app.state.sample)
    cache: stats.TTLCache = request.app.state.series
    return cache.get(
        (scope, queues, window),
        lambda: overview.series(svc.store.engine, samples, window, scope, queues, runs.utcnow()),
    )


@router.get(
    "/api/v1/workers",
    summary="The worker processes of the cluster: queues, runs held, heartbeat, version, "
    "catalog (admin token)",
)
def list_workers(c: ClientDep) -> dict[str, Any]:
    """Like metrics, the workers serve every tenant: an admin role is needed (403 otherwise);
    the ids of the runs they hold are the caller's tenant's (every tenant's for a superadmin)."""
    return c.admin.workers()


def _metrics_caller(request: Request) -> None:
    """Metrics count every tenant: an admin token is needed, unless they are public."""
    if request.app.state.metrics_public:
        return
    svc = service(request)
    principal = svc.authenticate(header_token(request))
    c = svc.client(principal)
    if not c.policy.is_admin(principal):
        raise ApiError(
            403,
            "PermissionDenied",
            f"permission denied: {principal.id!r} may not read metrics, which count every "
            "tenant (use a token with an admin role, or run the server with "
            "JOBSYS_METRICS_PUBLIC=1)",
        )


@router.get(
    "/metrics",
    summary="Prometheus metrics (admin token, or JOBSYS_METRICS_PUBLIC=1)",
    response_class=Response,
    dependencies=[Depends(bearer), Depends(_metrics_caller)],
)
def get_metrics(request: Request) -> Response:
    registry = request.app.state.metrics_registry
    scrapes: stats.TTLCache = request.app.state.scrapes
    body = scrapes.get("metrics", lambda: metrics.render(registry))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
