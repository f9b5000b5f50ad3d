"""The ``jobsys`` command: a thin layer over ``Client`` and the process roles.

Human tables by default, ``--json`` on every read command. Exit code 0 on success, 1 when a run
failed or a service is unreachable, 2 for bad input or unknown names and ids, 3 when the
principal may not (permission denied, or a token unknown, revoked or expired), each with a
one-line error on stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobsys.base import config, embedded, errors, private, timeparse
from jobsys.declare import definitions, jobs, permissions
from jobsys.engine import celery_api
from jobsys.ops import stack
from jobsys.service import client as client_mod
from jobsys.service import views
from jobsys.store import runs

NOT_A_TERMINAL_WIDTH = 1_000_000
"""Columns of output that is not a terminal (a pipe, a file): enough that tables are never
cut or wrapped to fit a width no one is looking at."""
out = Console(
    highlight=False,
    soft_wrap=True,
    width=None if sys.stdout.isatty() else NOT_A_TERMINAL_WIDTH,
)
err = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])

BAD_INPUT = (
    errors.InvalidInput,
    errors.UnknownJob,
    errors.RunNotFound,
    errors.InvalidTransition,
    errors.JobDeclarationError,
    errors.ScheduleNotFound,
    errors.TokenNotFound,
    errors.InvalidSchedule,
    errors.WorkflowNotFound,
    errors.WorkflowDeclarationError,
)


def fail(message: str, code: int) -> None:
    err.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn jobsys errors into a one-line message and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BAD_INPUT as exc:
            fail(str(exc), 2)
        except (errors.PermissionDenied, errors.Unauthenticated) as exc:
            fail(str(exc), 3)
        except errors.JobsysError as exc:
            fail(str(exc), 1)

    return wrapper  # type: ignore[return-value]


def make_client() -> client_mod.Client:
    """A client acting as the ``--token`` given (or ``JOBSYS_TOKEN``), else the local admin."""
    settings = config.Settings.from_env()
    ctx = click.get_current_context(silent=True)
    token = ctx.meta.get(TOKEN_KEY) if ctx is not None else None
    if token:
        settings = dataclasses.replace(settings, token=token)
    return client_mod.Client.from_settings(settings)


TOKEN_KEY = "jobsys.token"


def _remember_token(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta[TOKEN_KEY] = value


def add_token_option(group: click.Group) -> None:
    """Give every command ``--token`` (acting as that token's principal); called once every
    command is registered (``jobsys/cli/__init__.py``)."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            add_token_option(command)
        elif not any(p.name == "token" for p in command.params):
            command.params.append(
                click.Option(
                    ["--token"],
                    expose_value=False,
                    callback=_remember_token,
                    help="Act as this API token's principal (default: $JOBSYS_TOKEN).",
                )
            )


class Duration(click.ParamType):
    """Seconds, typed as people type them: ``90``, ``30s``, ``5m``, ``1h30m``, ``2d``."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            return timeparse.parse_seconds(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.group()
@click.version_option(package_name="jobsys")
def main() -> None:
    """jobsys: typed, reliable background jobs on Celery + Redis.

    Settings come from JOBSYS_* environment variables: `jobsys config` lists them.
    """
    # Before anything is written: every file under JOBSYS_HOME (and of the processes this one
    # starts) is private to this user.
    private.restrict_umask()


# --- process roles -----------------------------------------------------------------------


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
    settings = config.Settings.from_env()
    if http_port is None:
        http_port = settings.http_port
    if config.read_services(settings.home) is not None:
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
        config.write_services(
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
        (settings.home / config.SERVICES_FILE).unlink(missing_ok=True)
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
        return str(celery_api.sanitize_url(value))
    return str(value)


# --- jobs ----------------------------------------------------------------------------------


@main.group("jobs")
def jobs_group() -> None:
    """Discover the declared jobs."""


@jobs_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--all", "include_hidden", is_flag=True, help="Include hidden jobs.")
@handle_errors
def jobs_list(as_json: bool, include_hidden: bool) -> None:
    """List the jobs."""
    specs = make_client().job_specs(include_hidden)
    if as_json:
        emit_json([views.spec_json(s) for s in specs])
        return
    table = Table("name", "kind", "description", "tags", "queue", "timeout")
    for s in specs:
        table.add_row(
            s.name,
            definitions.kind_of(s),
            s.description.splitlines()[0] if s.description else "",
            ", ".join(s.tags),
            s.queue,
            f"{s.timeout:g} s",
        )
    out.print(table)


@jobs_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_show(name: str, as_json: bool) -> None:
    """Show one job with its input and output schemas."""
    data = views.spec_json(make_client().job_spec(name))
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        text = json.dumps(value, indent=2) if isinstance(value, dict | list) else str(value)
        out.print(f"[bold]{key}[/bold]: {text}")


# --- submit ---------------------------------------------------------------------------------


def parse_input(text: str, option: str = "--input") -> Any:
    """The JSON given to ``option``; exit 2 saying where it stops being JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(
            f"{option} is not valid JSON: {exc.msg[0].lower()}{exc.msg[1:]} at line {exc.lineno}, "
            f"column {exc.colno} of {text[:60]!r}",
            2,
        )
    raise AssertionError("unreachable")


@main.command()
@click.argument("name")
@click.option("--input", "input_text", default="{}", show_default=True, help="Input as JSON.")
@click.option("--wait", is_flag=True, help="Wait for the run, then print its output.")
@click.option(
    "--timeout",
    type=DURATION,
    default=3600.0,
    show_default=True,
    help="How long to wait with --wait: seconds, or 30s, 5m, 1h.",
)
@click.option(
    "--countdown",
    type=DURATION,
    default=None,
    help="Not before this long from now: seconds, or 30s, 5m, 1h.",
)
@click.option("--idempotency-key", default=None)
@click.option("--tag", "tags", multiple=True)
@click.option("--depends-on", "depends_on", multiple=True, help="A run id to wait for (repeat).")
@click.option("--run-anyway", is_flag=True, help="Run even if a run it depends on fails.")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
@handle_errors
def submit(
    name: str,
    input_text: str,
    wait: bool,
    timeout: float,
    countdown: float | None,
    idempotency_key: str | None,
    tags: tuple[str, ...],
    depends_on: tuple[str, ...],
    run_anyway: bool,
    as_json: bool,
) -> None:
    """Submit a run of job NAME; prints the run id (or, with --wait, the output)."""
    c = make_client()
    options = client_mod.SubmitOptions(
        idempotency_key=idempotency_key,
        tags=tags,
        depends_on=depends_on,
        run_anyway=run_anyway,
        countdown=countdown,
    )
    run_id = c.submit(name, parse_input(input_text), options)
    if not wait:
        if as_json:
            emit_json(c.status(run_id).to_json())
        else:
            click.echo(run_id)
        return
    err.print(f"run {run_id}")
    record = _wait_with_progress(c, run_id, timeout)
    if as_json:
        emit_json(record.to_json())
    elif record.state is runs.RunState.COMPLETED:
        click.echo(json.dumps(record.output))
    if record.state is not runs.RunState.COMPLETED:
        raise errors.RunFailed(run_id, record.state.value, record.error)


def _wait_with_progress(c: client_mod.Client, run_id: str, timeout: float) -> runs.RunRecord:
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    notes = _WaitNotes(c)
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("pending", total=100)
        while True:
            record = c.status(run_id)
            pct = (record.progress or {}).get("pct", 0.0)
            note = (record.progress or {}).get("message") or record.state.value
            waiting = notes.reason(record)
            if waiting and waiting != notes.said:  # a line of its own: shown on any stderr
                bar.console.print(
                    f"run {run_id} waits: {waiting}", markup=False, highlight=False, soft_wrap=True
                )
                notes.said = waiting
            if waiting:
                note = f"{record.state.value}: waiting for a worker that runs {record.job}"
            bar.update(task, completed=100 if record.terminal else pct, description=note)
            if record.terminal:
                return record
            if time.monotonic() > deadline:
                raise errors.WaitTimeout(run_id, timeout, waiting)
            with contextlib.suppress(errors.WaitTimeout):
                c.wait(run_id, timeout=0.25, poll=0.25)


class _WaitNotes:
    """Why a run that `submit --wait` follows has not started: what the worker that parked
    its message recorded (``RunRecord.waiting``) or, when no worker took it at all, that no
    live worker announced its job (looked at after 2 s of waiting, then every 5 s)."""

    FIRST_LOOK, LOOK_EVERY = 2.0, 5.0

    def __init__(self, c: client_mod.Client) -> None:
        self.c = c
        self.said: str | None = None
        self._since = time.monotonic()
        self._looked = 0.0
        self._unannounced: str | None = None

    def reason(self, record: runs.RunRecord) -> str | None:
        recorded = client_mod.waiting_message(record)
        if recorded or record.state is not runs.RunState.PENDING:
            return recorded
        now = time.monotonic()
        if now - self._since >= self.FIRST_LOOK and now - self._looked >= self.LOOK_EVERY:
            self._looked = now
            self._unannounced = None
            if self.c.announced(record.job) is False:
                self._unannounced = (
                    f"no live worker runs job {record.job!r}: none announced it (a worker "
                    "runs the jobs of its catalog whose queue it reads; this job's queue is "
                    f"{record.queue!r})"
                )
        return self._unannounced


# --- times typed in options (``--since``, ``--expires``) ----------------------------------


def parse_since(text: str | None) -> dt.datetime | None:
    """``30m``, ``2h``, ``1d`` ago, or an ISO time."""
    return _parse_time(text, -1, "--since")


def parse_since_future(text: str | None) -> dt.datetime | None:
    """``30m``, ``12h``, ``30d`` from now, or an ISO time."""
    return _parse_time(text, 1, "--expires")


def _parse_time(text: str | None, sign: int, option: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        return timeparse.parse_instant(text, sign)
    except ValueError as exc:
        raise errors.InvalidInput(
            option.strip("-"),
            [{"loc": [option], "type": "value_error", "msg": f"{exc}"}],
            "option",
        ) from None
