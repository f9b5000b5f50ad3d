"""The process roles and the local stack: ``jobsys worker``, ``beat``, ``up`` and ``config``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import socket
from typing import Any

import click

from jobsys.base import config, embedded, private, running
from jobsys.cli.base import emit_json, err, fail, handle_errors, main, out

POOLS = ("inline", "prefork", "solo")


@main.command()
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="Worker processes.",
)
@click.option("--hostname", "-n", default=None, help="Node name, e.g. worker1@%h.")
@click.option("--queues", "-Q", default=None, help="Comma-separated queues (default: all).")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option(
    "--pool",
    type=click.Choice(POOLS),
    default="inline",
    show_default=True,
    help="inline: N processes that each consume and execute (fastest); prefork: "
    "Celery's pool; solo: one process (what inline runs N of), which nothing restarts "
    "when a hard time limit ends it.",
)
@handle_errors
def worker(
    concurrency: int, hostname: str | None, queues: str | None, loglevel: str, pool: str
) -> None:
    """Run a worker: processes executing jobs from the broker."""
    if pool == "inline":
        from jobsys.worker import supervisor  # on first use: only the inline pool needs it

        supervisor.exec_supervisor(concurrency, hostname, loglevel, queues)
    from workers.app import app

    argv = [
        "worker",
        f"--loglevel={loglevel}",
        f"--concurrency={1 if pool == 'solo' else concurrency}",
        f"--pool={pool}",
        "--optimization=fair",
        "--without-mingle",
        "--without-gossip",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    if queues:
        argv.append(f"--queues={queues}")
    app.worker_main(argv)


@main.command()
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@handle_errors
def beat(loglevel: str) -> None:
    """Run the beat scheduler process."""
    from beat.main import run
    from workers.app import app, registry, settings

    run(app, settings, registry, loglevel)


@main.command()
@click.option("--workers", "n_workers", type=click.IntRange(1), default=1, show_default=True)
@click.option("--concurrency", "-c", type=click.IntRange(1), default=2, show_default=True)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of the HTTP API, dashboard and MCP endpoint (0: do not serve them) "
    "[default: $JOBSYS_HTTP_PORT, or 8000].",
)
@click.option("--http-host", default="127.0.0.1", show_default=True)
@handle_errors
def up(n_workers: int, concurrency: int, http_port: int | None, http_host: str) -> None:
    """Run everything on this machine: Redis (embedded unless JOBSYS_BROKER_URL is set), the
    workers, beat, and the HTTP API with the dashboard. Ctrl-C stops all of it."""
    from jobsys.ops import stack  # (here, not at the top: `jobsys worker` stays light)

    settings = config.Settings.from_env()
    if http_port is None:
        http_port = settings.http_port
    if running.read_services(settings.home) is not None:
        fail(f"jobsys is already running under {settings.home} (see services.json there)", 1)
    private.tighten_home(settings.home)  # a home an older jobsys made was readable by all
    if http_port and not _port_free(http_host, http_port):
        fail(
            f"port {http_port} on {http_host} is taken: pick another with --http-port or "
            "JOBSYS_HTTP_PORT (0: serve no HTTP API or dashboard)",
            1,
        )
    redis = None
    broker_url = settings.broker_url
    if broker_url is None:
        redis = embedded.RedisServer(settings.home / "redis").start()
        broker_url = redis.url
    env = {  # the children are started with this process's environment, with these pinned
        **os.environ,
        "JOBSYS_HOME": str(settings.home),
        "JOBSYS_BROKER_URL": broker_url,
        "JOBSYS_DATABASE_URL": settings.database_url,
    }
    serve = ["serve", "--host", http_host, "--port", str(http_port)] if http_port else None
    say = functools.partial(err.print, markup=False, highlight=False, soft_wrap=True)
    processes = stack.Stack(settings, env, redis, n_workers, concurrency, serve, say)
    processes.start()

    def record_services() -> None:
        running.write_services(
            settings.home,
            {
                "pid": os.getpid(),
                "broker_url": broker_url,
                "database_url": settings.database_url,
                "children": processes.pids(),
                "redis_pid": processes.redis_pid,
                "http": f"http://{http_host}:{http_port}" if http_port else None,
            },
        )

    record_services()
    processes.on_change = record_services
    _print_up(settings, broker_url, n_workers, concurrency)
    if http_port:
        _print_http(settings, http_host, http_port)
    out.print("Ctrl-C stops everything.")
    try:
        processes.run()
    finally:
        processes.stop()
        (settings.home / running.SERVICES_FILE).unlink(missing_ok=True)
        err.print("jobsys stopped.")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


UP_TOKEN_FILE = "up.token"
"""Under JOBSYS_HOME (mode 0600): the login token ``jobsys up`` printed last, reused while it
is valid for another day, so that restarts do not pile up valid admin tokens."""


def _print_http(settings: config.Settings, host: str, port: int) -> None:
    """The server's address, and a token to log in to the dashboard with (an admin of the
    default tenant, valid for 7 days; revoke it with `jobsys tokens revoke`). The token of
    the previous start is printed again while it has a day left; otherwise it is revoked and
    a new one made."""
    from jobsys.declare import jobs, permissions
    from jobsys.service import client as client_mod

    kept = settings.home / UP_TOKEN_FILE
    previous = kept.read_text(encoding="utf-8").strip() if kept.exists() else None
    c = client_mod.Client(settings, jobs.Registry())
    try:
        record, token = c.admin.kept_token(
            previous, permissions.LOCAL, dt.timedelta(days=7), dt.timedelta(days=1)
        )
    finally:
        c.close()
    if token != previous:
        private.write_file(kept, token + "\n")
    expires = f"{record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else "never"
    out.print(f"  http     http://{host}:{port}/  (dashboard; API under /api/v1, MCP at /mcp)")
    out.print(f"  token    {token}  (admin, expires {expires}; id {record.id}; kept in {kept})")


def _print_up(settings: config.Settings, broker_url: str, n_workers: int, concurrency: int) -> None:
    from jobsys.engine import celery_api  # (Celery loads on first use: see Submitting.app)

    nodes = ", ".join(f"worker{i + 1}" for i in range(n_workers))
    out.print(f"jobsys is up (JOBSYS_HOME={settings.home})")
    out.print(f"  broker   {celery_api.sanitize_url(broker_url)}")
    out.print(f"  records  {celery_api.sanitize_url(settings.database_url)}")
    out.print(
        f"  workers  {n_workers * concurrency} processes running jobs ({nodes}: {concurrency} "
        f"each, --workers / --concurrency), and beat; logs in {settings.home / 'logs'}"
    )
    out.print(f"  jobs     {', '.join(settings.catalog)}")
    out.print('Try: jobsys submit examples.add --input \'{"a": 2, "b": 3}\' --wait')


@main.command("config")
@click.option("--markdown", is_flag=True, help="Print the README's table of the settings.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def config_command(markdown: bool, as_json: bool) -> None:
    """List the settings (JOBSYS_* environment variables): each with its value here, in
    the form of an environment file, and what it means. Secrets show as ***."""
    if markdown:
        click.echo(config.markdown_table(), nl=False)
        return
    settings = config.Settings.from_env()
    if as_json:
        emit_json(
            [
                {
                    "variable": f.metadata["env"],
                    "value": _setting_text(f, getattr(settings, f.name)),
                    "default": config.shown_default(f),
                    "meaning": f.metadata["doc"],
                }
                for f, _ in config.fields()
            ]
        )
        return
    for f, _ in config.fields():
        click.echo(f"# {f.metadata['doc']} (default: {config.shown_default(f)})")
        click.echo(f"{f.metadata['env']}={_setting_text(f, getattr(settings, f.name))}")


def _setting_text(f: dataclasses.Field[Any], value: Any) -> str:
    if value is None:
        return ""
    if not f.repr:  # a secret: the token, the secret key, Flower's passwords
        return "***"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(value)
    if f.name.endswith("_url"):
        from jobsys.engine import celery_api  # (Celery loads on first use: Submitting.app)

        return str(celery_api.sanitize_url(value))
    return str(value)
