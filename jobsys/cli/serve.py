"""``jobsys serve``: the HTTP API (and the dashboard, and MCP over HTTP) on one port."""

from __future__ import annotations

import logging
import re

import click

from jobsys.base import config
from jobsys.cli.base import err, handle_errors, main

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


_TOKEN_IN_QUERY = re.compile(r"(token=)[^&\s]+")


class HideTokens(logging.Filter):
    """The log stream takes its token in the query (EventSource cannot send headers): keep
    it out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


@main.command("serve")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@handle_errors
def serve(host: str, port: int, log_level: str) -> None:
    """Serve the HTTP API (/api/v1, OpenAPI at /docs), the dashboard (/) and MCP (/mcp).

    Every API route needs `Authorization: Bearer <token>` (`jobsys tokens create`). /metrics
    needs an admin token unless JOBSYS_METRICS_PUBLIC=1.
    """
    import uvicorn

    from jobsys.http.app import create_app  # on first use: FastAPI is not light

    settings = config.Settings.from_env()
    app = create_app(settings, metrics_public=settings.metrics_public)
    shown = f"[{host}]" if ":" in host else host
    err.print(f"jobsys API on http://{shown}:{port} (docs at /docs, dashboard at /)")
    logging.getLogger("uvicorn.access").addFilter(HideTokens())
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        server_header=False,
    )
